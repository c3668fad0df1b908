"""Steps walk through the data: different steps see different records, an epoch visits every
record exactly once (across micro-batches and processes), and a resumed run continues the same
order. The records a step sees are observed from outside the loop: an extra reward function
(``record_order``) logs the (question, solution) pairs it receives, one line per call (unique
in the synthetic RL data); SFT through the batches handed to ``encode_sft``.

test_ddp_resume.py checks the same with 2 processes (``record_order`` in its runs)."""

import json
import os
from collections import Counter
from pathlib import Path

import pytest

ORDER_LOG = "STEPGRPO_TEST_ORDER_LOG"  # a directory: one rank<r>.jsonl per process
RECORD_ORDER = f"{__name__}:record_order"


def record_order(completions, question, solution, **kwargs):
    """Extra reward 0 for every completion; logs which record each completion answers."""
    log = Path(os.environ[ORDER_LOG]) / f"rank{os.environ.get('RANK', '0')}.jsonl"
    with open(log, "a") as f:
        f.write(json.dumps(list(zip(question, solution))) + "\n")
    return [0.0] * len(completions)


def read_order(log_dir, num_generations, records, rank=0) -> list[list[int]]:
    """The prompts' positions in ``records`` for every reward call of ``rank``, in call order."""
    where = {(r.question, r.solution): i for i, r in enumerate(records)}
    assert len(where) == len(records), "the records must differ in (question, solution)"
    lines = (Path(log_dir) / f"rank{rank}.jsonl").read_text().splitlines()
    return [[where[tuple(pair)] for pair in json.loads(line)[::num_generations]] for line in lines]


def assert_epochs_cover_records(steps: list[list[int]], steps_per_epoch: int, n: int) -> None:
    """Each epoch's steps hold every one of the n records exactly once."""
    assert len(steps) % steps_per_epoch == 0
    for e in range(0, len(steps), steps_per_epoch):
        seen = Counter(i for step in steps[e : e + steps_per_epoch] for i in step)
        assert seen == Counter(range(n)), f"epoch {e // steps_per_epoch}: {dict(seen)}"


def _rl(tiny_rl_config, out, **overrides):
    # 8 records, 2 prompts x 2 micro-batches per step: 2 steps per epoch, 4 steps = 2 epochs
    values = dict(max_steps=4, max_new_tokens=4, beta=0.0, gradient_accumulation_steps=2,
                  extra_reward_funcs=[RECORD_ORDER], extra_reward_weights=[1.0])
    return tiny_rl_config(out, **{**values, **overrides})


def test_stepgrpo_steps_walk_through_the_data_and_resume_continues(
    tmp_path, tiny_rl_config, synthetic_data, monkeypatch
):
    from stepgrpo_fast.data.records import load_records
    from stepgrpo_fast.trainer.loop import run_stepgrpo

    records = load_records(synthetic_data["rl"], require_response=False)
    n = len(records)
    assert n == 8
    straight_log, split_log = tmp_path / "log_straight", tmp_path / "log_split"
    straight_log.mkdir(), split_log.mkdir()

    monkeypatch.setenv(ORDER_LOG, str(straight_log))
    run_stepgrpo(_rl(tiny_rl_config, tmp_path / "straight"))
    calls = read_order(straight_log, 2, records)  # 4 steps x 2 micro-batches of 2 prompts
    assert len(calls) == 8 and all(len(c) == 2 for c in calls)
    steps = [calls[s] + calls[s + 1] for s in range(0, 8, 2)]
    assert len({tuple(sorted(s)) for s in steps}) == 4  # every step sees other records
    assert_epochs_cover_records(steps, steps_per_epoch=2, n=n)
    assert steps[:2] != steps[2:]  # a new order each epoch

    # stop after step 1 (mid-epoch), resume: the remaining steps see what the straight run saw
    monkeypatch.setenv(ORDER_LOG, str(split_log))
    run_stepgrpo(_rl(tiny_rl_config, tmp_path / "split", max_steps=1, save_steps=1))
    assert read_order(split_log, 2, records) == calls[:2]
    summary = run_stepgrpo(_rl(tiny_rl_config, tmp_path / "split", save_steps=1), resume=True)
    assert summary["start_step"] == 1
    assert read_order(split_log, 2, records) == calls


def test_sft_steps_walk_through_the_data(tmp_path, tiny_ckpt, synthetic_data, monkeypatch):
    from stepgrpo_fast.trainer import sft_loop
    from stepgrpo_fast.trainer.config import SFTConfig

    seen: list[list[int]] = []
    encode = sft_loop.encode_sft

    def recording(processor, records, **kw):
        seen.append([r.index for r in records])
        return encode(processor, records, **kw)

    monkeypatch.setattr(sft_loop, "encode_sft", recording)
    sft_loop.run_sft(SFTConfig(
        model_name_or_path=str(tiny_ckpt), train_data=str(synthetic_data["sft"]),
        output_dir=str(tmp_path), per_device_batch_size=4, max_steps=8, save_steps=0,
        progress_bar=False, seed=0,
    ))
    # 16 records, 4 per step: 4 steps per epoch, 2 epochs
    assert len(seen) == 8 and len({tuple(sorted(s)) for s in seen}) == 8
    assert_epochs_cover_records(seen, steps_per_epoch=4, n=16)
    assert seen[:4] != seen[4:]


@pytest.mark.parametrize("world", [2, 4])
def test_processes_split_each_step_without_overlap(world):
    """Run.slice on every (rank, micro-batch) of a step: the pieces are disjoint, their union
    is the step's global batch, and the epoch's steps cover the records exactly once."""
    from types import SimpleNamespace

    from stepgrpo_fast.trainer.run import Run

    n, per_process, accumulation = 24, 3, 2
    global_batch = per_process * world * accumulation
    steps_per_epoch = n // global_batch
    steps = []
    for step in range(2 * steps_per_epoch):
        pieces = []
        for rank in range(world):
            fake = SimpleNamespace(
                config=SimpleNamespace(seed=4), records=list(range(n)),
                accelerator=SimpleNamespace(process_index=rank, num_processes=world),
                per_process_batch=per_process, global_batch=global_batch,
                steps_per_epoch=steps_per_epoch,
            )
            for micro in range(accumulation):
                records, positions = Run.slice(fake, step, micro)
                assert len(records) == per_process and len(positions) == per_process
                pieces.append(records)
        flat = [i for piece in pieces for i in piece]
        assert len(set(flat)) == global_batch
        steps.append(flat)
    assert_epochs_cover_records(steps, steps_per_epoch, n)
