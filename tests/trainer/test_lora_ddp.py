"""use_peft under `accelerate launch` with 2 CPU processes (gloo): the same LoRA StepGRPO update as
1 process with the same global batch, the reference from the adapter-disabled model (beta > 0)."""

import json
import subprocess

import pytest
import yaml
from safetensors.torch import load_file
from subprocess_env import ROOT, subprocess_env, train_commands

pytest.importorskip("peft")


@pytest.mark.slow
def test_lora_two_processes_match_one_process(tmp_path, tiny_ckpt, synthetic_data):
    config = tmp_path / "rl.yaml"
    config.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_ckpt), "train_data": str(synthetic_data["rl"]),
        "num_generations": 2, "max_new_tokens": 16, "max_steps": 2, "learning_rate": 1e-2,
        "beta": 0.04, "save_steps": 0, "sample_log_steps": 0, "progress_bar": False, "seed": 1,
        "use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
        "extra_reward_funcs": ["test_stepgrpo:digit_share"], "extra_reward_weights": [1.0],
    }))
    one, two = tmp_path / "one", tmp_path / "two"
    single_cmd, double_cmd = train_commands(config, one, two)
    single = subprocess.Popen(
        single_cmd,
        env=subprocess_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    double = subprocess.run(
        double_cmd,
        env=subprocess_env(), cwd=ROOT, capture_output=True, text=True, timeout=400,
    )
    _, single_err = single.communicate(timeout=400)
    assert single.returncode == 0, single_err[-3000:]
    assert double.returncode == 0, double.stderr[-3000:]

    a = load_file(one / "final_model" / "adapter_model.safetensors")
    b = load_file(two / "final_model" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    update = max(a[k].abs().max().item() for k in a if ".lora_B." in k)  # B starts at 0
    mismatch = max((a[k] - b[k]).abs().max().item() for k in a)
    assert update > 1e-3
    assert mismatch < 5e-5, f"1 vs 2 processes differ by {mismatch:.2e} (update {update:.2e})"
    m1, m2 = ([json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
              for d in (one, two))
    for r1, r2 in zip(m1, m2, strict=True):
        assert r1["reward"] == pytest.approx(r2["reward"], abs=1e-6)
        assert r1["kl"] == pytest.approx(r2["kl"], abs=1e-5)
    assert m2[1]["kl"] > 0
