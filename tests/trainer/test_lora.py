"""LoRA (use_peft): target resolution, the fused head through PEFT wrappers, the adapter-disabled
reference, SFT and StepGRPO runs that leave the base checkpoint untouched, and export --merge."""

import hashlib
import json

import pytest
import torch

peft = pytest.importorskip("peft")

from stepgrpo_fast.trainer.model import export, lora
from stepgrpo_fast.trainer.config import SFTConfig, StepGRPOConfig
from stepgrpo_fast.trainer.model.loading import load_model_and_processor
from stepgrpo_fast.trainer.model.objective import (
    PolicyObjective,
    build_policy_batch,
    completion_logprobs,
)


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digit_share(completions, **kwargs):  # a reward with spread for the random tiny model
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) for text in completions]


def _cfg(cls=StepGRPOConfig, **overrides):
    return cls(**{"use_peft": True, "lora_r": 4, "lora_alpha": 8, **overrides})


# ------------------------------------------------------------------------------- targets
def test_default_targets_are_the_language_models_projections_only(tiny_ckpt_25):
    model, _ = load_model_and_processor(str(tiny_ckpt_25))
    targets = lora.resolve_lora_targets(model)
    assert targets and all(t.startswith("model.language_model.layers.") for t in targets)
    leaves = {t.rsplit(".", 1)[1] for t in targets}
    assert leaves == set(lora.DEFAULT_LORA_TARGETS)
    # Qwen2.5-VL's vision MLP has gate/up/down_proj too: lora_vision alone brings them in
    with_vision = lora.resolve_lora_targets(model, vision=True)
    vision = [t for t in with_vision if t.startswith("model.visual.")]
    assert "model.visual.blocks.0.mlp.gate_proj" in vision
    assert "model.visual.blocks.0.attn.qkv" in vision and "model.visual.merger.mlp.0" in vision
    assert set(with_vision) - set(vision) == set(targets)
    assert lora.resolve_lora_targets(model, ["q_proj"]) == [
        t for t in targets if t.endswith(".q_proj")
    ]


def test_bad_targets_list_the_linear_layers(tiny_ckpt):
    model, _ = load_model_and_processor(str(tiny_ckpt))
    with pytest.raises(ValueError, match=r"'qproj' matches no linear layer") as err:
        lora.resolve_lora_targets(model, ["q_proj", "qproj"])
    text = str(err.value)
    assert "model.language_model.layers.*.self_attn.q_proj" in text  # compact: indices folded
    assert "model.visual.blocks.*.mlp.fc1" in text and "layers.0." not in text
    with pytest.raises(ValueError, match="vision-tower layers only"):
        lora.resolve_lora_targets(model, ["fc1"])
    with pytest.raises(ValueError, match="lora_modules_to_save"):
        lora.resolve_lora_targets(model, ["lm_head"])
    with pytest.raises(ValueError, match="'lm_haed' matches no module"):
        lora.lora_config(model, _cfg(lora_modules_to_save=["lm_haed"]))


def test_lora_options_are_checked():
    with pytest.raises(ValueError, match="lora_vision is set but use_peft is false"):
        StepGRPOConfig(lora_vision=True)
    with pytest.raises(ValueError, match="lora_r must be > 0"):
        _cfg(lora_r=0)
    with pytest.raises(ValueError, match=r"lora_dropout must be in \[0, 1\)"):
        _cfg(lora_dropout=1.0)
    with pytest.raises(ValueError, match="train_only and use_peft"):
        _cfg(train_only=["lm_head"])


def test_resume_refuses_a_checkpoint_of_another_kind_or_base(tmp_path):
    full = tmp_path / "checkpoint-1"
    full.mkdir()
    (full / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds full model weights"):
        lora.check_adapter_checkpoint(full, "base")
    adapter = tmp_path / "checkpoint-2"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "trainer_state.json").write_text(json.dumps({"base_model": "/models/a"}))
    lora.check_adapter_checkpoint(adapter, "/models/a")
    with pytest.raises(ValueError, match="trained on model_name_or_path /models/a"):
        lora.check_adapter_checkpoint(adapter, "/models/b")


# ------------------------------------------------------------------------------- fused head
def _batch(model, processor, n=2, p=6, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.get_text_config().vocab_size
    prompt = {
        "input_ids": torch.randint(0, 100, (n, p), generator=g),
        "attention_mask": torch.ones(n, p, dtype=torch.long),
    }
    completion = torch.randint(0, vocab, (n, c), generator=g)
    return build_policy_batch(prompt, completion, torch.ones(n, c, dtype=torch.long),
                              torch.tensor([1.0, -1.0])[:n])


def _perturbed_peft_model(tiny_ckpt, modules_to_save):
    base, processor = load_model_and_processor(str(tiny_ckpt))
    model = lora.wrap_with_lora(
        base, _cfg(model_name_or_path=str(tiny_ckpt), lora_modules_to_save=modules_to_save,
                   lora_dropout=0.0),
        trainable_dtype=torch.float32,
    )
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:  # B (zero at start) and the lm_head copy move
                p.add_(torch.randn_like(p) * 0.05)
    return model, processor


@pytest.mark.parametrize("modules_to_save", [[], ["lm_head"]])
def test_disabled_adapters_score_exactly_the_base_model(tiny_ckpt, modules_to_save):
    fresh, processor = load_model_and_processor(str(tiny_ckpt))
    model, _ = _perturbed_peft_model(tiny_ckpt, modules_to_save)
    batch = _batch(fresh, processor)
    base_logp = completion_logprobs(fresh, batch, impl="torch")
    policy_logp = completion_logprobs(model, batch, impl="torch")
    with lora.adapters_disabled(model):
        ref_logp = completion_logprobs(model, batch, impl="torch")
    assert torch.equal(ref_logp, base_logp)
    assert (policy_logp - base_logp).abs().max() > 1e-3  # the adapters do change the policy
    # the fused op reads the active lm_head: the trained copy with modules_to_save
    logits = model(**batch.model_inputs).logits[:, 5:10].float()  # positions P-1 .. P+C-2
    direct = torch.log_softmax(logits, -1).gather(-1, batch.completion_ids[..., None])[..., 0]
    torch.testing.assert_close(policy_logp, direct, atol=1e-5, rtol=0)


def test_modules_to_save_head_trains_and_base_head_stays_frozen(tiny_ckpt):
    model, processor = _perturbed_peft_model(tiny_ckpt, ["lm_head"])
    batch = _batch(model, processor)
    batch.ref_logp = torch.zeros(batch.completion_ids.shape)
    loss, _ = PolicyObjective(model, beta=0.04, impl="torch")(batch)
    loss.backward()
    head = model.base_model.model.lm_head
    assert head.original_module.weight.grad is None
    assert not head.original_module.weight.requires_grad
    assert head.modules_to_save["default"].weight.grad.abs().sum() > 0
    b_grads = [p.grad for p in lora.lora_b_parameters(model).values()]
    assert b_grads and all(g is not None and g.abs().sum() > 0 for g in b_grads)


# ------------------------------------------------------------------------------- runs
def test_sft_with_lora_trains_only_the_adapter(tmp_path, tiny_ckpt, synthetic_data):
    from peft import PeftModel

    from stepgrpo_fast.trainer.loop import run_sft

    base_file = tiny_ckpt / "model.safetensors"
    before = _sha256(base_file)
    out = tmp_path / "sft"
    summary = run_sft(_cfg(
        SFTConfig, model_name_or_path=str(tiny_ckpt), train_data=str(synthetic_data["sft"]),
        output_dir=str(out), max_steps=2, per_device_batch_size=2, learning_rate=1e-2,
        progress_bar=False, save_steps=1,
    ))
    assert _sha256(base_file) == before  # the base checkpoint is never written
    final = tmp_path / "sft" / "final_model"
    assert summary["final_model"] == str(final)
    assert (final / "adapter_model.safetensors").is_file() and not (final / "config.json").exists()
    assert not (final / "optimizer.pt").exists()
    ckpt = out / "checkpoint-2"
    assert {"optimizer.pt", "scheduler.pt", "rng_state_0.pth", "adapter_model.safetensors"} <= {
        p.name for p in ckpt.iterdir()
    }
    assert json.loads((ckpt / "trainer_state.json").read_text())["base_model"] == str(tiny_ckpt)
    base, _ = load_model_and_processor(str(tiny_ckpt))
    loaded = PeftModel.from_pretrained(base, str(final))
    b = lora.lora_b_parameters(loaded)
    assert len(b) == 2 * 7  # 2 layers x the 7 projections
    assert all(v.abs().max() > 0 for v in b.values())  # every B started at 0 and moved
    # `stepgrpo eval` takes the adapter directory itself (base + adapter, merged on load)
    from stepgrpo_fast.cli import main

    assert main(["eval", "--model", str(final), "--data", str(synthetic_data["eval"]),
                 "--limit", "2", "--max-new-tokens", "8", "--device", "cpu"]) == 0
    # a full-weight run cannot resume the adapter checkpoint
    with pytest.raises(ValueError, match="holds a LoRA adapter"):
        run_sft(SFTConfig(model_name_or_path=str(tiny_ckpt), train_data=str(synthetic_data["sft"]),
                          output_dir=str(out), max_steps=3, per_device_batch_size=2,
                          progress_bar=False), resume=True)


def test_lora_vision_with_bf16_compute_and_gradient_checkpointing(tmp_path, tiny_ckpt,
                                                                   synthetic_data):
    from safetensors.torch import load_file

    from stepgrpo_fast.trainer.loop import run_sft

    run_sft(_cfg(
        SFTConfig, model_name_or_path=str(tiny_ckpt), train_data=str(synthetic_data["sft"]),
        output_dir=str(tmp_path / "sft"), max_steps=1, per_device_batch_size=2,
        learning_rate=1e-2, progress_bar=False, lora_vision=True, dtype="bfloat16",
        gradient_checkpointing=True,
    ))
    adapter = load_file(tmp_path / "sft" / "final_model" / "adapter_model.safetensors")
    vision_b = [v for k, v in adapter.items() if ".visual." in k and ".lora_B." in k]
    assert vision_b and all(v.abs().max() > 0 for v in vision_b)  # the vision tower adapted
    assert {v.dtype for v in adapter.values()} == {torch.float32}  # fp32 masters, bf16 base


def test_stepgrpo_with_lora_needs_no_reference_copy(tmp_path, tiny_ckpt, synthetic_data,
                                                    monkeypatch):
    from stepgrpo_fast.trainer.rl import grpo_loop
    from stepgrpo_fast.trainer.loop import run_stepgrpo

    def no_second_model(*args, **kwargs):
        raise AssertionError("the reference copy was loaded")

    monkeypatch.setattr(grpo_loop, "load_model_and_processor", no_second_model)
    before = _sha256(tiny_ckpt / "model.safetensors")
    summary = run_stepgrpo(_cfg(
        model_name_or_path=str(tiny_ckpt), train_data=str(synthetic_data["rl"]),
        output_dir=str(tmp_path / "rl"), max_steps=2, per_device_batch_size=2, num_generations=2,
        max_new_tokens=12, learning_rate=1e-2, beta=0.04, progress_bar=False, sample_log_steps=0,
        extra_reward_funcs=[f"{__name__}:digit_share"], extra_reward_weights=[1.0],
        lora_modules_to_save=["lm_head"], eval_data=str(synthetic_data["eval"]), eval_at_end=True,
        eval_limit=2, eval_max_new_tokens=8,
    ))
    assert _sha256(tiny_ckpt / "model.safetensors") == before
    assert summary["eval"] is not None and "accuracy" in summary["eval"]
    assert summary["metrics"]["kl"] > 0  # the policy left the adapter-disabled reference
    rows = [json.loads(x) for x in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-7)  # step 1: policy == reference
    from safetensors.torch import load_file

    adapter = load_file(tmp_path / "rl" / "final_model" / "adapter_model.safetensors")
    assert any("lm_head" in k for k in adapter)  # the trained head copy is saved


def test_export_merge_writes_a_checkpoint_eval_loads(tmp_path, tiny_ckpt, synthetic_data):
    from peft import PeftModel
    from safetensors.torch import load_file

    from stepgrpo_fast.cli import main

    adapter = tmp_path / "adapter"
    model, processor = _perturbed_peft_model(tiny_ckpt, [])
    model.save_pretrained(adapter)
    processor.save_pretrained(adapter)
    out = tmp_path / "merged"
    assert main(["export", "--model", str(adapter), "--merge", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json",
            "chat_template.jinja", "generation_config.json"} <= names
    assert "adapter_config.json" not in names
    assert export._stored_dtype(out / "config.json") == export._stored_dtype(tiny_ckpt / "config.json")
    merged = load_file(out / "model.safetensors")
    base = load_file(tiny_ckpt / "model.safetensors")
    assert merged.keys() == base.keys()
    key = "model.layers.0.self_attn.q_proj.weight"  # the on-disk (Qwen2-VL release) names
    assert (merged[key] - base[key]).abs().max() > 1e-4
    # the merged checkpoint scores like base + adapter
    fresh, _ = load_model_and_processor(str(tiny_ckpt))
    with_adapter = PeftModel.from_pretrained(fresh, str(adapter))
    exported, _ = load_model_and_processor(str(out))
    batch = _batch(exported, processor)
    torch.testing.assert_close(completion_logprobs(exported, batch, impl="torch"),
                               completion_logprobs(with_adapter, batch, impl="torch"),
                               atol=1e-5, rtol=0)
    assert main(["export", "--model", str(adapter), "--out", str(tmp_path / "x")]) == 2
    # --base: another copy of the base, stored in bf16 -> the merged weights are bf16 too
    bf16_base = tmp_path / "bf16_base"
    plain, _ = load_model_and_processor(str(tiny_ckpt))
    plain.to(torch.bfloat16).save_pretrained(bf16_base)
    processor.save_pretrained(bf16_base)
    out16 = tmp_path / "merged16"
    assert main(["export", "--model", str(adapter), "--merge", "--out", str(out16),
                 "--base", str(bf16_base)]) == 0
    assert {v.dtype for v in load_file(out16 / "model.safetensors").values()} == {torch.bfloat16}
    assert export._stored_dtype(out16 / "config.json") == torch.bfloat16
    merged16 = load_file(out16 / "model.safetensors")
    assert merged16.keys() == base.keys()
    assert (merged16[key].float() - merged[key]).abs().max() < 0.05  # the same merge, in bf16
    assert main(["eval", "--model", str(out), "--data", str(synthetic_data["eval"]),
                 "--limit", "2", "--max-new-tokens", "8", "--device", "cpu"]) == 0


def test_lora_sft_then_lora_stepgrpo_then_export(tmp_path, tiny_ckpt, synthetic_data):
    """The pipeline: a LoRA SFT adapter is the base of a LoRA StepGRPO run; export merges both."""
    from peft import PeftModel

    from stepgrpo_fast.cli import main
    from stepgrpo_fast.trainer.loop import run_sft, run_stepgrpo

    common = dict(max_steps=1, per_device_batch_size=2, learning_rate=1e-2, progress_bar=False)
    sft = run_sft(_cfg(SFTConfig, model_name_or_path=str(tiny_ckpt),
                       train_data=str(synthetic_data["sft"]), output_dir=str(tmp_path / "sft"),
                       **common))["final_model"]
    rl = run_stepgrpo(_cfg(model_name_or_path=sft, train_data=str(synthetic_data["rl"]),
                           output_dir=str(tmp_path / "rl"), num_generations=2, max_new_tokens=8,
                           sample_log_steps=0, beta=0.04, **common))["final_model"]
    assert lora.adapter_base(rl) == sft and lora.adapter_base(sft) == str(tiny_ckpt)
    out = tmp_path / "merged"
    assert main(["export", "--model", rl, "--merge", "--out", str(out)]) == 0
    base, processor = load_model_and_processor(str(tiny_ckpt))
    by_hand = PeftModel.from_pretrained(
        PeftModel.from_pretrained(base, sft).merge_and_unload(), rl
    )
    exported, _ = load_model_and_processor(str(out))
    batch = _batch(exported, processor)
    torch.testing.assert_close(completion_logprobs(exported, batch, impl="torch"),
                               completion_logprobs(by_hand, batch, impl="torch"),
                               atol=1e-5, rtol=0)


def test_export_without_peft_names_the_extra(tmp_path):
    import subprocess
    import sys

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x"}))
    code = ("import sys\nsys.modules['peft'] = None\nfrom stepgrpo_fast.cli import main\n"
            f"sys.exit(main(['export', '--model', {str(adapter)!r}, '--merge', '--out', "
            f"{str(tmp_path / 'out')!r}]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "stepgrpo_fast[peft]" in done.stderr and "Traceback" not in done.stderr
