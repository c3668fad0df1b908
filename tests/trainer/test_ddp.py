"""`accelerate launch` with 2 CPU processes (gloo) gives the same StepGRPO update as 1 process
with the same global batch (4 prompts x 2 samples per step; 2 per process under DDP)."""

import json
import subprocess

import pytest
from safetensors.torch import load_file
from subprocess_env import ROOT, subprocess_env, train_commands


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path, tiny_ckpt, tiny_rl_config):
    config = tmp_path / "rl.yaml"
    tiny_rl_config(  # output_dir and per_device_batch_size: set on each command line
        tmp_path,
        max_steps=2,
        learning_rate=1e-3,
        beta=0.04,
        seed=1,
        extra_reward_funcs=["test_stepgrpo:digit_share"],
        extra_reward_weights=[1.0],
    ).to_yaml(config)
    one, two = tmp_path / "one", tmp_path / "two"
    single_cmd, double_cmd = train_commands(config, one, two)
    single = subprocess.Popen(
        single_cmd,
        env=subprocess_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    double = subprocess.run(
        double_cmd,
        env=subprocess_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    single_out, single_err = single.communicate(timeout=400)
    assert single.returncode == 0, single_err[-3000:]
    assert double.returncode == 0, double.stderr[-3000:]
    summary = json.loads(
        double.stdout[double.stdout.index("{") :]
    )  # printed once, by the main process
    assert summary["steps"] == 2

    start = load_file(tiny_ckpt / "model.safetensors")
    a = load_file(one / "final_model" / "model.safetensors")
    b = load_file(two / "final_model" / "model.safetensors")
    update = max((a[k] - start[k]).abs().max().item() for k in a)
    mismatch = max((a[k] - b[k]).abs().max().item() for k in a)
    assert update > 5e-4  # the update is real...
    assert mismatch < 5e-5, f"1 vs 2 processes differ by {mismatch:.2e} (update size {update:.2e})"

    m1, m2 = _metrics(one), _metrics(two)
    assert [r["step"] for r in m1] == [r["step"] for r in m2] == [1, 2]
    for r1, r2 in zip(m1, m2):
        for key in (
            "reward",
            "reward_digit_share",
            "reward_accuracy",
            "completion_length",
            "accuracy",
        ):
            assert r1[key] == pytest.approx(r2[key], abs=1e-6), key  # same rollouts, same rewards
        for key in ("loss", "kl"):
            assert r1[key] == pytest.approx(r2[key], abs=1e-5), key
        assert r1["grad_norm"] == pytest.approx(r2["grad_norm"], rel=1e-4)
    assert m2[1]["kl"] > 0
