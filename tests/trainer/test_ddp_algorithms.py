"""dapo's num_items_in_batch and normalize_then_sum across processes: 2 CPU processes (gloo,
2 prompts each) give the update of 1 process with the same 4 prompts.

The token count is gathered over processes and so is the GDPO batch normalisation; the logged
pre-clip gradient norm is sensitive to every normaliser. (Dynamic sampling filters per process,
so its kept groups depend on the number of processes: it is not part of this comparison.)"""

import json
import subprocess

import pytest
from safetensors.torch import load_file
from subprocess_env import ROOT, subprocess_env, train_commands


@pytest.mark.slow
def test_two_processes_match_one_for_dapo_and_normalize_then_sum(
    tmp_path, tiny_ckpt, tiny_rl_config
):
    config = tmp_path / "rl.yaml"
    tiny_rl_config(
        tmp_path,
        max_steps=1,
        learning_rate=1e-3,
        beta=0.04,
        seed=0,
        loss_type="dapo",
        multi_objective_aggregation="normalize_then_sum",
        extra_reward_funcs=["test_stepgrpo:digit_share"],
        extra_reward_weights=[1.0],
    ).to_yaml(config)
    one, two = tmp_path / "one", tmp_path / "two"
    single_cmd, double_cmd = train_commands(config, one, two)
    run = dict(env=subprocess_env(), cwd=ROOT, capture_output=True, text=True, timeout=400)
    single = subprocess.run(single_cmd, **run)
    assert single.returncode == 0, single.stderr[-3000:]
    double = subprocess.run(double_cmd, **run)
    assert double.returncode == 0, double.stderr[-3000:]

    r1, r2 = (json.loads((d / "metrics.jsonl").read_text().splitlines()[0]) for d in (one, two))
    for key in ("reward", "flat_group_fraction"):
        assert r1[key] == pytest.approx(r2[key], abs=1e-6), key
    assert r1["loss"] == pytest.approx(r2["loss"], abs=1e-5)
    assert r1["grad_norm"] == pytest.approx(r2["grad_norm"], rel=1e-4)
    a = load_file(one / "final_model" / "model.safetensors")
    b = load_file(two / "final_model" / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 5e-5
