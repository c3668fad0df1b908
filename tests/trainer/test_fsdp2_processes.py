"""FSDP2 (fsdp: full_shard) across 2 CPU processes (gloo).

Fast (one torchrun launch, fsdp2_worker.py): the SFT and GRPO gradients of a sharded objective,
the fused LM head's included, equal DDP's; the head read outside a forward through
lm_head.gathered_head gets the mean gradient; a DCP save writes one shard file per rank and
reads back exactly, also into ONE process (a 2-process checkpoint resumed on 1).

Slow (the issue's "done when", 7 launches): SFT 4 steps then StepGRPO 3 steps under fsdp give
the same update as DDP; kill -9 at checkpoint-2 + --resume ends bit-identical to the
uninterrupted FSDP2 run; the 2-process checkpoint resumes on 1 process; final_model loads with
from_pretrained.
"""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from subprocess_env import ACCELERATE_CONFIG, ROOT, free_port, kill_at_checkpoint, subprocess_env

CLI = ["-m", "stepgrpo_fast.trainer.cli"]


def test_two_process_gradients_and_shards_match_ddp(tmp_path, tiny_ckpt, synthetic_data):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(free_port()), str(ROOT / "tests/trainer/fsdp2_worker.py"),
               str(tiny_ckpt), str(synthetic_data["sft"]), str(synthetic_data["rl"]), str(tmp_path)]
    done = subprocess.run(command, env=subprocess_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    for kind in ("sft", "grpo"):
        r = result[kind]
        assert r["params"] > 10 and r["scale"] > 1e-3  # real gradients, trained layers and head
        assert r["max_diff"] <= 1e-6 * r["scale"], (kind, r)
        assert r["head_diff"] <= 1e-6 * r["head_scale"], (kind, r)
    assert result["gathered_head_diff"] <= 1e-6 * result["gathered_head_scale"], result
    assert result["shard_files"] == ["__0_0.distcp", "__1_0.distcp"]
    assert result["roundtrip_diff"] == 0.0
    assert result["exp_avg_steps"] == result["sft"]["params"]  # AdamW state came back too

    # the 2-process shards into one process (DCP reshards): the same trained parameters
    from stepgrpo_fast.trainer.model import fsdp, sharded_checkpoint
    from stepgrpo_fast.trainer.model.loading import load_model_and_processor, resolve_precision
    from stepgrpo_fast.trainer.model.objective import PolicyObjective

    model, _ = load_model_and_processor(str(tiny_ckpt), torch_dtype=torch.float32,
                                        device=torch.device("cpu"), attn_implementation="sdpa")
    model.model.visual.requires_grad_(False)
    objective = PolicyObjective(model, precision=resolve_precision("float32", "cpu"))
    try:
        fsdp.shard(objective, model, device=torch.device("cpu"))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
        sharded_checkpoint.read_shards(tmp_path / "ckpt", objective, optimizer)
        trained = torch.load(tmp_path / "trained.pt", weights_only=True)
        reloaded = sharded_checkpoint.gathered_state(objective, trained_only=True)
        assert reloaded.keys() == trained.keys()
        assert all(torch.equal(reloaded[k], trained[k]) for k in trained)
        assert len(optimizer.state) == len(trained)
    finally:
        torch.distributed.destroy_process_group()


def _update_cosine(start, a, b) -> float:
    """Cosine between the updates (a - start) and (b - start) over the 2-D weights."""
    keys = [k for k in start if start[k].dim() == 2]
    da = torch.cat([(a[k].float() - start[k].float()).flatten() for k in keys])
    db = torch.cat([(b[k].float() - start[k].float()).flatten() for k in keys])
    assert da.norm() > 1e-3  # a real update
    return torch.nn.functional.cosine_similarity(da, db, dim=0).item()


def _launch(*args, processes=2):
    if processes == 1:
        return [sys.executable, *CLI, *args]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(ACCELERATE_CONFIG), "--main_process_port", str(free_port()), *CLI, *args]


def _run(command):
    done = subprocess.run(command, env=subprocess_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.mark.slow
def test_sft_then_stepgrpo_fsdp_matches_ddp_and_resumes(tmp_path, tiny_ckpt, synthetic_data,
                                                        tiny_rl_config):
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    sft = ["sft", "--model_name_or_path", str(tiny_ckpt), "--train_data",
           str(synthetic_data["sft"]), "--dtype", "float32", "--attn_implementation", "sdpa",
           "--max_pixels", "12544", "--learning_rate", "1e-3", "--per_device_batch_size", "1",
           "--max_steps", "4", "--save_steps", "0", "--progress_bar", "false"]
    rl_yaml = tmp_path / "rl.yaml"
    tiny_rl_config(tmp_path, max_steps=3, save_steps=1, save_total_limit=0, learning_rate=1e-3,
                   per_device_batch_size=1, beta=0.04, seed=1,
                   extra_reward_funcs=["test_stepgrpo:digit_share"],
                   extra_reward_weights=[1.0]).to_yaml(rl_yaml)
    finals = {}
    for kind, extra in (("ddp", []), ("fsdp", ["--fsdp", "full_shard"])):
        _run(_launch(*sft, "--output_dir", str(tmp_path / kind / "sft"), *extra))
        start = tmp_path / kind / "sft" / "final_model"
        _run(_launch("train", "--config", str(rl_yaml), "--model_name_or_path", str(start),
                     "--output_dir", str(tmp_path / kind / "rl"), *extra))
        finals[kind] = load_file(tmp_path / kind / "rl" / "final_model" / "model.safetensors")
    start = load_file(tiny_ckpt / "model.safetensors")
    assert _update_cosine(start, finals["ddp"], finals["fsdp"]) >= 0.999

    fsdp_rl = tmp_path / "fsdp" / "rl"
    shards = sorted(p.name for p in (fsdp_rl / "checkpoint-2" / "fsdp_shards").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert not (fsdp_rl / "checkpoint-2" / "optimizer.pt").exists()
    final = AutoModelForImageTextToText.from_pretrained(fsdp_rl / "final_model")
    assert final.dtype == torch.float32

    # kill -9 right after checkpoint-2, --resume: bit-identical to the uninterrupted run
    rl = ["train", "--config", str(rl_yaml), "--model_name_or_path",
          str(tmp_path / "fsdp" / "sft" / "final_model"), "--fsdp", "full_shard"]
    killed = tmp_path / "killed"
    kill_at_checkpoint(_launch(*rl, "--output_dir", str(killed)), killed, 2, timeout_s=400)
    _run(_launch(*rl, "--output_dir", str(killed), "--resume"))
    resumed = load_file(killed / "final_model" / "model.safetensors")
    assert all(torch.equal(resumed[k], finals["fsdp"][k]) for k in finals["fsdp"])

    # the 2-process checkpoint-2 on ONE process (2 prompts per process -> 2 on one: same global batch)
    one = tmp_path / "one"
    one.mkdir()
    shutil.copytree(fsdp_rl / "checkpoint-2", one / "checkpoint-2")
    _run(_launch(*rl, "--output_dir", str(one), "--per_device_batch_size", "2", "--resume",
                 processes=1))
    single = load_file(one / "final_model" / "model.safetensors")
    assert max((single[k] - finals["fsdp"][k]).abs().max().item() for k in single) < 1e-5
