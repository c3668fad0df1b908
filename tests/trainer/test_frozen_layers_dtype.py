"""Mixed precision holds frozen linear layers in the compute dtype (policy.frozen_linears_to)
where that is exact (a bf16 checkpoint in fp32 masters): the same bits under autocast, half their
memory, no per-token re-cast, and the fp32 checkpoints keep every frozen value."""
import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from subprocess_env import untimed
from torch import nn

from stepgrpo_fast.trainer.model import policy_loading as run_model
from stepgrpo_fast.trainer.loop import run_stepgrpo
from stepgrpo_fast.trainer.model.loading import load_model_and_processor
from stepgrpo_fast.trainer.model.objective import frozen_linears_to, lm_head, train_only

LAST_LAYER = r"language_model\.layers\.1\."
DIGIT_REWARD = "test_stepgrpo:digit_share"


@pytest.fixture(scope="module")
def bf16_ckpt(tiny_ckpt, tmp_path_factory):
    """The tiny checkpoint with every weight rounded to bf16 (kept as fp32 on disk): like a real
    bf16 release loaded into fp32 masters."""
    out = tmp_path_factory.mktemp("tiny_bf16_exact") / "ckpt"
    shutil.copytree(tiny_ckpt, out)
    weights = load_file(out / "model.safetensors")
    save_file({k: v.to(torch.bfloat16).float() if v.is_floating_point() else v
               for k, v in weights.items()}, out / "model.safetensors", metadata={"format": "pt"})
    return out


def _loaded(ckpt):
    model, _ = load_model_and_processor(str(ckpt), torch_dtype=torch.float32)
    train_only(model, [LAST_LAYER])
    return model


def test_frozen_linears_change_dtype_and_nothing_else(bf16_ckpt):
    model = _loaded(bf16_ckpt)
    frozen_bytes = sum(p.numel() * 4 for m in model.modules() if isinstance(m, nn.Linear)
                       and m is not lm_head(model)
                       for p in m.parameters(recurse=False) if not p.requires_grad)
    saved = frozen_linears_to(model, torch.bfloat16)
    assert saved == frozen_bytes // 2 > 0
    head = lm_head(model)
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            frozen_linear = isinstance(module, nn.Linear) and module is not head and not p.requires_grad
            want = torch.bfloat16 if frozen_linear else torch.float32
            assert p.dtype == want, (name, p.dtype)
    assert any(p.requires_grad for p in model.parameters())


def test_inexact_shared_and_trained_weights_stay(tiny_ckpt):
    model = _loaded(tiny_ckpt)  # random fp32 weights: bf16 would round them
    assert frozen_linears_to(model, torch.bfloat16) == 0
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    a, b, c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
    for p in (*a.parameters(), *b.parameters(), *c.parameters()):
        p.data = p.data.to(torch.bfloat16).float()
    b.weight = a.weight  # tied: another module uses this parameter
    stack = nn.Sequential(a, b, c)
    stack.get_output_embeddings = lambda: nn.Linear(4, 4)  # the head lookup needs one
    stack.requires_grad_(False)
    c.bias.requires_grad_(True)  # c trains its bias
    frozen_linears_to(stack, torch.bfloat16)
    assert {p.dtype for p in stack.parameters()} == {torch.float32}


def test_forward_and_gradients_are_bit_identical_under_autocast(bf16_ckpt):
    plain, held = _loaded(bf16_ckpt), _loaded(bf16_ckpt)
    assert frozen_linears_to(held, torch.bfloat16) > 0
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    out = {}
    for name, model in (("plain", plain), ("held", held)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=ids).logits
        logits.float().square().mean().backward()
        out[name] = (logits, {n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert torch.equal(out["plain"][0], out["held"][0])
    assert out["plain"][1].keys() == out["held"][1].keys()
    assert all(torch.equal(out["plain"][1][k], out["held"][1][k]) for k in out["plain"][1])


def test_a_bf16_run_is_unchanged_and_checkpoints_hold_fp32(tiny_rl_config, bf16_ckpt, tmp_path,
                                                           monkeypatch):
    def config(out):
        return tiny_rl_config(out, model_name_or_path=str(bf16_ckpt), dtype="bfloat16",
                              lr_scheduler_type="constant", warmup_ratio=0.0, train_only=[LAST_LAYER], max_steps=2,
                              save_steps=1, sample_log_steps=1, extra_reward_funcs=[DIGIT_REWARD],
                              extra_reward_weights=[1.0])

    calls = []
    real = run_model.frozen_linears_to
    monkeypatch.setattr(run_model, "frozen_linears_to",
                        lambda model, d: calls.append(real(model, d)) or calls[-1])
    held = run_stepgrpo(config(tmp_path / "held"))
    assert len(calls) == 1 and calls[0] > 0
    monkeypatch.setattr(run_model, "frozen_linears_to", lambda model, dtype: 0)
    plain = run_stepgrpo(config(tmp_path / "plain"))
    assert untimed(held["metrics"]) == untimed(plain["metrics"])
    samples = [(tmp_path / d / "samples.jsonl").read_text() for d in ("held", "plain")]
    assert samples[0] == samples[1]
    a = load_file(f"{held['last_checkpoint']}/model.safetensors")
    b = load_file(f"{plain['last_checkpoint']}/model.safetensors")
    assert {v.dtype for v in a.values()} == {torch.float32}
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved = json.loads(open(f"{held['last_checkpoint']}/config.json").read())
    assert saved["dtype"] == "float32"
    # stop after step 1 and resume (with the conversion): the same step-2 weights
    monkeypatch.setattr(run_model, "frozen_linears_to", real)
    run_stepgrpo(dataclasses.replace(config(tmp_path / "split"), max_steps=1))
    resumed = run_stepgrpo(config(tmp_path / "split"), resume=True)
    assert resumed["start_step"] == 1
    c = load_file(f"{resumed['last_checkpoint']}/model.safetensors")
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_fp32_runs_convert_nothing(tiny_rl_config, bf16_ckpt, tmp_path, monkeypatch):
    calls = []
    real = run_model.frozen_linears_to
    monkeypatch.setattr(run_model, "frozen_linears_to",
                        lambda model, d: calls.append(d) or real(model, d))
    run_stepgrpo(tiny_rl_config(tmp_path, model_name_or_path=str(bf16_ckpt), dtype="float32",
                                train_only=[LAST_LAYER]))
    assert calls == []
