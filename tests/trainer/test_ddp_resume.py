"""DDP, 2 processes (accelerate launch, gloo): every process's tree SIGKILLed after checkpoint-2
and resumed with --resume ends bit-identical to an uninterrupted 2-process run; the checkpoint
holds each rank's own RNG state and a resume gives each rank its own back."""

import json
import subprocess

import torch
from safetensors.torch import load_file

from subprocess_env import ROOT, free_port, kill_at_checkpoint, run_metrics, subprocess_env, train_commands
from test_data_order import ORDER_LOG, RECORD_ORDER, assert_epochs_cover_records, read_order

TOTAL_STEPS = 4  # 8 records / (2 processes x 2 prompts): 2 steps per epoch, the resume starts epoch 2
KILL_AFTER = 2



def test_two_process_kill_then_resume_is_bit_identical(tmp_path, tiny_ckpt, tiny_rl_config,
                                                       synthetic_data, monkeypatch):
    from stepgrpo_fast.data.records import load_records

    config = tmp_path / "rl.yaml"
    tiny_rl_config(  # output_dir and per_device_batch_size: set on the command line
        tmp_path, max_steps=TOTAL_STEPS, max_new_tokens=8, learning_rate=1e-3, beta=0.04,
        save_steps=1, save_total_limit=0, sample_log_steps=1, seed=5,
        extra_reward_funcs=["test_stepgrpo:digit_share", RECORD_ORDER],
        extra_reward_weights=[1.0, 1.0],
    ).to_yaml(config)
    logs = {name: tmp_path / f"order_{name}" for name in ("straight", "killed", "resumed")}
    for log in logs.values():
        log.mkdir()
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _, straight_cmd = train_commands(config, tmp_path / "unused", straight)
    _, killed_cmd = train_commands(config, tmp_path / "unused", killed)

    monkeypatch.setenv(ORDER_LOG, str(logs["straight"]))
    reference = subprocess.Popen(straight_cmd, env=subprocess_env(), cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    monkeypatch.setenv(ORDER_LOG, str(logs["killed"]))
    kill_at_checkpoint(killed_cmd, killed, KILL_AFTER)
    assert not (killed / f"checkpoint-{TOTAL_STEPS}").exists()
    ckpt = killed / f"checkpoint-{KILL_AFTER}"
    manifest = json.loads((ckpt / "manifest.json").read_text())["files"]
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(manifest)  # one per rank

    _, resume_cmd = train_commands(config, tmp_path / "unused", killed)
    resume_cmd[resume_cmd.index("--main_process_port") + 1] = str(free_port())
    monkeypatch.setenv(ORDER_LOG, str(logs["resumed"]))
    resumed = subprocess.run([*resume_cmd, "--resume"], env=subprocess_env(), cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout[resumed.stdout.index("{"):])
    assert KILL_AFTER <= summary["start_step"] < TOTAL_STEPS

    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]
    a = load_file(straight / "final_model" / "model.safetensors")
    b = load_file(killed / "final_model" / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst == 0.0, f"resumed 2-process run differs from the uninterrupted one by {worst}"
    start = load_file(tiny_ckpt / "model.safetensors")
    assert max((a[k] - start[k]).abs().max().item() for k in a) > 1e-4  # it did train
    opt_a = torch.load(straight / f"checkpoint-{TOTAL_STEPS}" / "optimizer.pt", weights_only=True)
    opt_b = torch.load(killed / f"checkpoint-{TOTAL_STEPS}" / "optimizer.pt", weights_only=True)
    for i, state in opt_a["state"].items():
        assert all(torch.equal(state[k], opt_b["state"][i][k]) for k in state)
    for got, want in zip(run_metrics(killed), run_metrics(straight), strict=True):
        diff = {k: (got.get(k), want.get(k)) for k in got.keys() | want.keys()
                if got.get(k) != want.get(k)}
        assert not diff, f"step {want['step']}: resumed vs uninterrupted {diff}"
    assert [r["step"] for r in run_metrics(killed)] == list(range(1, TOTAL_STEPS + 1))
    assert (killed / "samples.jsonl").read_text() == (straight / "samples.jsonl").read_text()

    # the data order: the two ranks split each step, every epoch covers the 8 records once,
    # and the resumed run saw exactly what the uninterrupted one saw from its start step on
    records = load_records(synthetic_data["rl"], require_response=False)
    ranks = [read_order(logs["straight"], 2, records, rank) for rank in (0, 1)]
    assert [len(r) for r in ranks] == [TOTAL_STEPS, TOTAL_STEPS]
    assert_epochs_cover_records([a + b for a, b in zip(*ranks)], steps_per_epoch=2, n=8)
    for rank in (0, 1):
        after = read_order(logs["resumed"], 2, records, rank)
        assert after == ranks[rank][summary["start_step"]:]


def _save_and_restore_rng(rank, world, port, root):
    """One gloo process: seed this rank's RNGs apart, checkpoint, scramble, resume; write what
    it drew after the checkpoint and after the resume."""
    import random

    import numpy as np
    import torch.distributed as dist

    from stepgrpo_fast.trainer.checkpoint import load_checkpoint_state, save_checkpoint

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        torch.manual_seed(100 + rank), random.seed(100 + rank), np.random.seed(100 + rank)
        save_checkpoint(root, 1, save_model=lambda d: (d / "weights.txt").write_text("w"),
                        optimizer=None, scheduler=None, trainer_state={}, config_yaml="",
                        rank=rank, is_main=rank == 0, barrier=dist.barrier)

        def draw():
            return [*torch.rand(3).tolist(), random.random(), float(np.random.rand())]

        expected = draw()
        torch.manual_seed(7), random.seed(7), np.random.seed(7)  # the fresh process's state
        state = load_checkpoint_state(f"{root}/checkpoint-1", optimizer=None, scheduler=None,
                                      rank=rank)
        (root / f"draws_{rank}.json").write_text(
            json.dumps({"expected": expected, "got": draw(), "restored": state["restored_rng"]}))
    finally:
        dist.destroy_process_group()


def test_checkpoint_holds_and_restores_every_ranks_rng(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_save_and_restore_rng, args=(2, free_port(), tmp_path), nprocs=2, join=True)
    draws = [json.loads((tmp_path / f"draws_{r}.json").read_text()) for r in (0, 1)]
    manifest = json.loads((tmp_path / "checkpoint-1" / "manifest.json").read_text())["files"]
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(manifest)
    assert draws[0]["expected"] != draws[1]["expected"]  # the ranks' streams differ
    for d in draws:
        assert d["restored"] and d["got"] == d["expected"]  # each rank got its own back
