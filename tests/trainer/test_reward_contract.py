"""Extra reward functions on TRL's contract (rl/episodes.call_reward): prompts, completions,
completion_ids, every record field and trainer_state as keywords; None -> NaN, left out of the
reward sum, the advantages' group statistics and the logged mean (TRL 1.16); a reward that
raises names itself and the records, on every rank of a 2-process run, which ends at once."""

import math
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from episode_samples import GOOD, WRONG, record
from subprocess_env import ACCELERATE_CONFIG, ROOT, free_port, subprocess_env

SEEN = {}


def trl_reward(prompts, completions, completion_ids, trainer_state, solution, **kwargs):
    """TRL's signature: scores only even rows (None for the rest)."""
    SEEN.update(prompts=prompts, completion_ids=completion_ids, step=trainer_state.global_step,
                solution=solution, keys=sorted(kwargs))
    return [None if i % 2 else float(len(ids) % 5) for i, ids in enumerate(completion_ids)]


def exploding_reward(completions, **kwargs):
    """Raises on rank 0 from step 2 on (the other rank scores normally)."""
    if kwargs["trainer_state"].global_step >= 1 and os.environ.get("RANK", "0") == "0":
        raise ZeroDivisionError("boom")
    return [0.0 for _ in completions]


def test_trl_contract_arguments_and_none_values():
    from stepgrpo_fast.trainer.rl.episodes import RewardTrainerState, build_episodes

    texts = [GOOD, WRONG, WRONG, GOOD]
    records = [record("5", [["2 + 3 = 5"]]), record("5", [["2 + 3 = 5"]])]
    plain = build_episodes(texts, records, num_generations=2)
    got = build_episodes(
        texts, records, num_generations=2, extra_rewards=[("trl", trl_reward, 2.0)],
        prompts=["p0", "p1"], completion_ids=[[1, 2], [3], [4, 5, 6], [7]],
        trainer_state=RewardTrainerState(3, 10, 0.5),
    )
    assert SEEN["prompts"] == ["p0", "p0", "p1", "p1"] and SEEN["step"] == 3
    assert SEEN["completion_ids"][2] == [4, 5, 6] and len(SEEN["solution"]) == 4
    assert {"question", "key_steps"} <= set(SEEN["keys"])
    extra = got.extra["trl"]
    assert torch.isnan(extra[1]) and torch.isnan(extra[3]) and extra[2].item() == 3.0
    # None rows: the built-in rewards only (nansum); scored rows: plus 2 x the extra reward
    assert torch.equal(got.reward[1::2], plain.reward[1::2])
    assert torch.equal(got.reward[0::2], plain.reward[0::2] + 2.0 * extra[0::2])
    assert not torch.isnan(got.advantages).any()
    assert got.metrics()["reward_trl"] == pytest.approx((extra[0] + extra[2]).item() / 2)
    # normalize_then_sum: a None is left out of its group's statistics (advantage part 0)
    gdpo = build_episodes(texts, records, num_generations=2, extra_rewards=[("trl", trl_reward, 1.0)],
                          completion_ids=[[1, 2], [3], [4, 5, 6], [7]],
                          trainer_state=RewardTrainerState(3, 10, 0.5),
                          aggregation="normalize_then_sum")
    assert not torch.isnan(gdpo.advantages).any()


def test_a_reward_without_kwargs_gets_only_what_it_names():
    from stepgrpo_fast.trainer.rl.episodes import build_episodes

    def old_style(completions, solution):
        return [1.0] * len(completions)

    got = build_episodes([GOOD, WRONG], [record("5", [])], num_generations=2,
                         extra_rewards=[("old", old_style, 1.0)])
    assert got.extra["old"].tolist() == [1.0, 1.0]


def test_a_raising_reward_names_itself_and_the_records():
    from stepgrpo_fast.trainer.rl.episodes import RewardFunctionError, build_episodes

    def broken(completions, **kwargs):
        raise KeyError("answer")

    with pytest.raises(RewardFunctionError, match=r"'broken' \(.*test_reward_contract:.*broken\) "
                       r"raised on the records data.jsonl:1: KeyError") as err:
        source = SimpleNamespace(solution="5", key_steps=[], question="q", source="data.jsonl:1")
        build_episodes([GOOD, WRONG], [source], num_generations=2,
                       extra_rewards=[("broken", broken, 1.0)])
    assert isinstance(err.value.__cause__, KeyError)


def test_a_trl_reward_returning_some_none_trains(tmp_path, tiny_rl_config):
    from stepgrpo_fast.trainer.loop import run_stepgrpo
    from stepgrpo_fast.trainer.logging import read_metrics

    summary = run_stepgrpo(tiny_rl_config(
        tmp_path, max_steps=2, extra_reward_funcs=["test_reward_contract:trl_reward"],
        extra_reward_weights=[1.0]))
    assert (tmp_path / "final_model").is_dir() and summary["steps"] == 2
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["reward_trl_reward"]) and math.isfinite(r["loss"]) for r in rows)


def test_a_raising_reward_ends_a_two_process_run_on_every_rank(tmp_path, tiny_rl_config):
    from stepgrpo_fast.trainer.checkpoint import verify_checkpoint

    config = tmp_path / "rl.yaml"
    tiny_rl_config(tmp_path / "out", max_steps=4, save_steps=1, max_new_tokens=8,
                   extra_reward_funcs=["test_reward_contract:exploding_reward"],
                   extra_reward_weights=[1.0]).to_yaml(config)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ACCELERATE_CONFIG), "--main_process_port", str(free_port()), "-m",
               "stepgrpo_fast.trainer.cli", "train", "--config", str(config), "--set",
               "per_device_batch_size=1"]
    proc = subprocess.Popen(command, env=subprocess_env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out_dir = tmp_path / "out"
    deadline = time.time() + 240
    while not (out_dir / "checkpoint-1").is_dir():  # the step before the reward raises
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline
        time.sleep(0.01)
    started = time.time()
    _, err = proc.communicate(timeout=120)
    assert time.time() - started < 60, "the run did not end within 60 s of the failure"
    assert proc.returncode != 0
    named = "extra reward 'exploding_reward' (test_reward_contract:exploding_reward) raised"
    assert err.count("RankFailed: a rank failed, every rank stops") >= 2, err[-4000:]
    assert err.count(f"rank 0: RewardFunctionError: {named}") >= 2, err[-4000:]
    verify_checkpoint(out_dir / "checkpoint-1")
    assert not (out_dir / "final_model").exists()
