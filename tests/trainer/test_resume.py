"""Kill / resume: a run SIGKILLed after step k and resumed with --resume ends with the same
weights and metrics as an uninterrupted run with the same seed (both in fresh processes)."""

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from subprocess_env import ROOT, kill_at_checkpoint, run_metrics, subprocess_env
TOTAL_STEPS = 4
KILL_AFTER = 2


def _write_config(path, tiny_rl_config):
    tiny_rl_config(  # output_dir: set on each command line
        path.parent,
        max_steps=TOTAL_STEPS,
        learning_rate=1e-3,
        beta=0.04,
        save_steps=1,
        save_total_limit=2,
        sample_log_steps=1,
        seed=3,
        extra_reward_funcs=["test_stepgrpo:digit_share"],
        extra_reward_weights=[1.0],
    ).to_yaml(path)


def _command(config, out, *extra):
    return [
        sys.executable,
        "-m",
        "stepgrpo_fast.trainer.cli",
        "train",
        "--config",
        str(config),
        "--set",
        f"output_dir={out}",
        *extra,
    ]


def _run(cmd):
    proc = subprocess.run(cmd, env=subprocess_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{") :])



def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, tiny_rl_config):
    config = tmp_path / "rl.yaml"
    _write_config(config, tiny_rl_config)
    straight, killed = tmp_path / "straight", tmp_path / "killed"

    # the uninterrupted reference runs alongside (one thread each, same numerics)
    reference_proc = subprocess.Popen(
        _command(config, straight),
        env=subprocess_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # the interrupted run: SIGKILL as soon as checkpoint-KILL_AFTER is in place
    kill_at_checkpoint(_command(config, killed), killed, KILL_AFTER)
    assert not (killed / f"checkpoint-{TOTAL_STEPS}").exists()

    resumed = _run(_command(config, killed, "--resume"))
    assert KILL_AFTER <= resumed["start_step"] < TOTAL_STEPS

    out, err = reference_proc.communicate(timeout=300)
    assert reference_proc.returncode == 0, err[-3000:]
    assert json.loads(out[out.index("{") :])["start_step"] == 0

    a = load_file(straight / "final_model" / "model.safetensors")
    b = load_file(killed / "final_model" / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst == 0.0, f"weights differ by up to {worst}"
    assert run_metrics(killed) == run_metrics(straight)
    assert [r["step"] for r in run_metrics(killed)] == list(range(1, TOTAL_STEPS + 1))
    samples_a = (straight / "samples.jsonl").read_text()
    samples_b = (killed / "samples.jsonl").read_text()
    assert samples_a == samples_b
    assert not list(killed.glob(".tmp-checkpoint-*"))


def test_resume_with_a_different_global_batch_is_refused(tmp_path, tiny_rl_config):
    from stepgrpo_fast.trainer.loop import run_stepgrpo

    base = dict(max_new_tokens=8, save_steps=1, beta=0.0)
    run_stepgrpo(tiny_rl_config(tmp_path, **base))
    with pytest.raises(ValueError, match="global batch of 2, this run has 4"):
        run_stepgrpo(
            tiny_rl_config(tmp_path, **{**base, "per_device_batch_size": 4, "max_steps": 2}),
            resume=True,
        )
