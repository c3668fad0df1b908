"""Preemption (trainer/preemption.py): a signal in any phase leaves a verified checkpoint of the
last completed step, exits with 128 + signum and one log line, and --resume ends bit-identical
to an uninterrupted run. The signals are real (os.kill), sent from outside (the CLI run) or
from a hook at the phase under test (in-process runs)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from subprocess_env import ROOT, run_metrics, subprocess_env

STEPS = 4

def slow_reward(completions, **kwargs):
    """A TRL-contract reward that takes a moment, so a run's steps are long enough to signal."""
    time.sleep(0.15)
    return [float(len(text) % 3) for text in completions]


def _weights(out):
    return load_file(out / "final_model" / "model.safetensors")


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst == 0.0, f"weights differ by up to {worst}"


def assert_stopped_with_one_checkpoint(stopped, err, first, total) -> int:
    """A CLI run into ``stopped`` ended on a SIGTERM: the main process printed one line naming
    --resume, one checkpoint of a step in [first, total) holds that step, no final model.
    -> the checkpoint's step."""
    lines = [line for line in err.splitlines() if line.startswith("[stepgrpo] SIGTERM")]
    assert len(lines) == 1 and "--resume" in lines[0], err[-3000:]
    checkpoints = sorted(p.name for p in stopped.glob("checkpoint-*"))
    assert len(checkpoints) == 1, checkpoints
    done = int(checkpoints[0].split("-")[1])
    assert first <= done < total and f"checkpoint-{done} holds step {done}" in lines[0]
    assert not (stopped / "final_model").exists()
    return done


def assert_resume_matches(resume_cmd, done, reference, straight, stopped):
    """``resume_cmd`` (already with --resume) starts at step ``done`` and ends with the weights
    and the metrics of the uninterrupted ``reference`` run (a Popen writing into ``straight``)."""
    resumed = subprocess.run(resume_cmd, check=False, env=subprocess_env(), cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout[resumed.stdout.index("{"):])["start_step"] == done
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]
    _assert_same_weights(_weights(straight), _weights(stopped))
    assert run_metrics(stopped) == run_metrics(straight)



# ---------------------------------------------------------------------------------- CLI run
def test_sigterm_at_step_3_checkpoints_within_60s_and_resumes_bit_identical(
    tmp_path, tiny_rl_config
):
    config = tmp_path / "rl.yaml"
    tiny_rl_config(tmp_path, max_steps=10, save_steps=0, learning_rate=1e-3, beta=0.0, seed=5,
                   max_new_tokens=8, extra_reward_funcs=["test_preemption:slow_reward"],
                   extra_reward_weights=[1.0]).to_yaml(config)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"

    def command(out, *extra):
        return [sys.executable, "-m", "stepgrpo_fast.trainer.cli", "train", "--config",
                str(config), "--set", f"output_dir={out}", *extra]

    def popen(cmd):
        return subprocess.Popen(cmd, env=subprocess_env(), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    reference = popen(command(straight))
    run = popen(command(stopped))
    metrics = stopped / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        assert run.poll() is None, run.communicate()[1][-3000:]
        assert time.time() < deadline, "the run never reached step 3"
        time.sleep(0.005)
    sent = time.time()
    os.kill(run.pid, signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    took = time.time() - sent
    assert run.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert took < 60
    assert "Traceback" not in err
    done = assert_stopped_with_one_checkpoint(stopped, err, 3, 10)
    assert_resume_matches(command(stopped, "--resume"), done, reference, straight, stopped)


# ------------------------------------------------------------------------ in-process runs
@pytest.fixture(scope="module")
def rl_config(tiny_rl_config):
    def make(out, **overrides):
        values = dict(max_steps=STEPS, learning_rate=1e-3, beta=0.04, seed=7, max_new_tokens=12,
                      save_total_limit=0, extra_reward_funcs=["test_stepgrpo:digit_share"],
                      extra_reward_weights=[1.0])
        return tiny_rl_config(out, **{**values, **overrides})

    return make


@pytest.fixture(scope="module")
def straight(rl_config, tmp_path_factory):
    from stepgrpo_fast.trainer.loop import run_stepgrpo

    out = tmp_path_factory.mktemp("straight")
    run_stepgrpo(rl_config(out))
    return out


def _preempted_then_resumed(config, straight, expected_checkpoint, unhook):
    """Run ``config`` (a hook sends the signal), expect Preempted at ``expected_checkpoint``,
    ``unhook()``, resume, and compare with the uninterrupted run."""
    from stepgrpo_fast.trainer.checkpoint import list_checkpoints, verify_checkpoint
    from stepgrpo_fast.trainer.loop import run_stepgrpo
    from stepgrpo_fast.trainer.preemption import Preempted

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted) as stopped:
        run_stepgrpo(config)
    assert signal.getsignal(signal.SIGTERM) == previous  # handlers put back
    assert stopped.value.code == 128 + signal.SIGTERM
    assert stopped.value.step == expected_checkpoint
    out = stopped.value.checkpoint.parent
    assert list_checkpoints(out)[-1].name == f"checkpoint-{expected_checkpoint}"
    verify_checkpoint(list_checkpoints(out)[-1])
    assert not (out / "final_model").exists()
    assert not list(out.glob(".tmp-checkpoint-*"))
    unhook()
    summary = run_stepgrpo(config, resume=True)
    assert summary["start_step"] == expected_checkpoint
    _assert_same_weights(_weights(straight), _weights(out))
    assert run_metrics(out) == run_metrics(straight)


def _signalling_save(checkpoint, send):
    """checkpoint.save_checkpoint whose model writing calls ``send()`` first (mid-save: the
    temporary directory exists, the manifest does not)."""
    save = checkpoint.save_checkpoint

    def save_checkpoint(*args, save_model, **kwargs):
        def writing(directory):
            send()
            save_model(directory)

        return save(*args, save_model=writing, **kwargs)

    return save_checkpoint


def test_signal_during_a_rollout_cuts_it_short_and_abandons_the_step(
    tmp_path, rl_config, straight, monkeypatch
):
    from stepgrpo_fast.trainer.rl import grpo_loop

    original, calls, after_signal = grpo_loop.generate_rollouts, [], []

    def generate_rollouts(model, *args, **kwargs):
        calls.append(1)
        if len(calls) != 3:  # step 3's rollout (steps 1 and 2 are done)
            return original(model, *args, **kwargs)
        forwards = []

        def hook(module, inputs, output):
            forwards.append(1)
            if len(forwards) == 3:
                os.kill(os.getpid(), signal.SIGTERM)

        handle = model.register_forward_hook(hook)
        try:
            return original(model, *args, **kwargs)
        finally:
            handle.remove()
            after_signal.append(len(forwards) - 3)

    monkeypatch.setattr(grpo_loop, "generate_rollouts", generate_rollouts)
    _preempted_then_resumed(rl_config(tmp_path), straight, 2, monkeypatch.undo)
    assert after_signal[0] <= 1  # generate stopped at the next token, not max_new_tokens (12)


def test_signal_during_an_optimizer_step_finishes_it_then_a_second_signal_during_the_save(
    tmp_path, rl_config, straight, monkeypatch
):
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from stepgrpo_fast.trainer import checkpoint

    steps, saves = [], []

    def during_step(optimizer, args, kwargs):
        steps.append(1)
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    def second_signal():
        saves.append(1)
        os.kill(os.getpid(), signal.SIGTERM)  # a second one, and an impatient Ctrl-C
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(checkpoint, "save_checkpoint", _signalling_save(checkpoint, second_signal))
    handle = register_optimizer_step_pre_hook(during_step)

    def unhook():
        handle.remove()
        monkeypatch.undo()

    try:
        _preempted_then_resumed(rl_config(tmp_path), straight, 2, unhook)
    finally:
        handle.remove()
    assert len(steps) == 2 and len(saves) == 1  # the preemption save of step 2 and nothing after it


def test_signal_during_a_save_steps_save_exits_on_that_checkpoint(
    tmp_path, rl_config, straight, monkeypatch
):
    from stepgrpo_fast.trainer import checkpoint

    saves = []

    def signal_at_checkpoint_2():
        saves.append(1)
        if len(saves) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(checkpoint, "save_checkpoint",
                        _signalling_save(checkpoint, signal_at_checkpoint_2))
    _preempted_then_resumed(rl_config(tmp_path, save_steps=1), straight, 2, monkeypatch.undo)
    assert len(saves) == 2  # no second write of checkpoint-2


def test_save_minutes_checkpoints_on_wall_time(tmp_path, rl_config, monkeypatch):
    from stepgrpo_fast.trainer import preemption
    from stepgrpo_fast.trainer import run as run_module
    from stepgrpo_fast.trainer.checkpoint import list_checkpoints
    from stepgrpo_fast.trainer.loop import run_stepgrpo

    now = [0.0]
    monkeypatch.setattr(preemption, "wall_clock", lambda: now[0])

    after_step = run_module.Run.after_step

    def ticking(self, step, metrics):  # steps 1 and 3 take 2 "minutes", the others 10 s
        now[0] += 120.0 if step in (1, 3) else 10.0
        return after_step(self, step, metrics)

    monkeypatch.setattr(run_module.Run, "after_step", ticking)
    run_stepgrpo(rl_config(tmp_path, max_steps=5, save_steps=0, save_minutes=1.5, beta=0.0))
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "checkpoint-1", "checkpoint-3", "checkpoint-5"]


def test_stop_control_agreement_and_handlers():
    from stepgrpo_fast.trainer.preemption import StopControl

    now = [100.0]
    control = StopControl(["SIGUSR1"], save_minutes=1.0, clock=lambda: now[0])
    previous = signal.getsignal(signal.SIGUSR1)
    control.install()
    try:
        assert control.agree().signum == 0 and not control.agree().save_due
        now[0] += 61
        assert control.agree().save_due
        control.saved()
        assert not control.agree().save_due
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert control.agree().signum == signal.SIGUSR1 and control.received == 2
        assert control.agree(failed=True).failed
    finally:
        control.restore()
    assert signal.getsignal(signal.SIGUSR1) == previous
    with pytest.raises(ValueError, match="save_on_signals: unknown signal 'SIGFOO'"):
        StopControl(["SIGFOO"])


def test_preemption_options_are_checked(tiny_rl_config, tmp_path):
    with pytest.raises(ValueError, match="save_on_signals: unknown signal 'TERM'"):
        tiny_rl_config(tmp_path, save_on_signals=["TERM"])
    with pytest.raises(ValueError, match="save_minutes must be >= 0"):
        tiny_rl_config(tmp_path, save_minutes=-1.0)
    with pytest.raises(ValueError, match="ddp_timeout must be > 0"):
        tiny_rl_config(tmp_path, ddp_timeout=0)
    assert tiny_rl_config(tmp_path).ddp_timeout == 1800
