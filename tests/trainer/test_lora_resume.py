"""use_peft kill -9 / resume: a LoRA StepGRPO run SIGKILLed after step 2 and resumed ends with the
same adapter and metrics as an uninterrupted run (LoRA dropout on, so the RNG state matters)."""

import hashlib
import json
import subprocess
import sys

import pytest
import yaml
from safetensors.torch import load_file
from subprocess_env import ROOT, kill_at_checkpoint, run_metrics, subprocess_env

pytest.importorskip("peft")

TOTAL_STEPS, KILL_AFTER = 4, 2


def _command(config, out, *extra):
    return [sys.executable, "-m", "stepgrpo_fast.trainer.cli", "train", "--config", str(config),
            "--set", f"output_dir={out}", *extra]



@pytest.mark.slow
def test_lora_sigkill_then_resume_matches_uninterrupted_run(tmp_path, tiny_ckpt, synthetic_data):
    config = tmp_path / "rl.yaml"
    config.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_ckpt), "train_data": str(synthetic_data["rl"]),
        "num_generations": 2, "max_new_tokens": 16, "per_device_batch_size": 2,
        "max_steps": TOTAL_STEPS, "learning_rate": 1e-2, "beta": 0.04, "save_steps": 1,
        "save_total_limit": 2, "sample_log_steps": 1, "progress_bar": False, "seed": 3,
        "use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.1,
        "extra_reward_funcs": ["test_stepgrpo:digit_share"], "extra_reward_weights": [1.0],
    }))
    base_hash = hashlib.sha256((tiny_ckpt / "model.safetensors").read_bytes()).hexdigest()
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = subprocess.Popen(_command(config, straight), env=subprocess_env(), cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kill_at_checkpoint(_command(config, killed), killed, KILL_AFTER)

    done = subprocess.run(_command(config, killed, "--resume"), env=subprocess_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert KILL_AFTER <= summary["start_step"] < TOTAL_STEPS
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]

    a = load_file(straight / "final_model" / "adapter_model.safetensors")
    b = load_file(killed / "final_model" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and any(".lora_B." in k for k in a)
    assert all((a[k] == b[k]).all() for k in a), "the resumed adapter differs"
    assert any(a[k].abs().max() > 0 for k in a if ".lora_B." in k)  # it did train
    assert run_metrics(killed) == run_metrics(straight)
    assert (straight / "samples.jsonl").read_text() == (killed / "samples.jsonl").read_text()
    assert hashlib.sha256((tiny_ckpt / "model.safetensors").read_bytes()).hexdigest() == base_hash
