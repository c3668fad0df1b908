"""Model loading, the LM head / hidden-state split, and generation on the tiny checkpoints."""

import json
import shutil

import pytest
import torch
from PIL import Image

from stepgrpo_fast.data.records import load_records
from stepgrpo_fast.data.prompts import encode_prompts, encode_sft
from stepgrpo_fast.trainer.model.loading import (
    decoder_hidden_states,
    lm_head,
    load_model_and_processor,
    resolve_attn_implementation,
    resolve_dtype,
)


@pytest.fixture(scope="module", params=["tiny_ckpt", "tiny_ckpt_25"])
def loaded(request):
    path = request.getfixturevalue(request.param)
    model, processor = load_model_and_processor(path)
    return path, model, processor


def test_loads_on_cpu_in_fp32_with_sdpa(loaded):
    path, model, processor = loaded
    info = json.loads((path / "tiny_model_info.json").read_text())
    assert model.config.model_type == info["family"]
    assert next(model.parameters()).dtype == torch.float32
    assert next(model.parameters()).device.type == "cpu"
    assert model.config._attn_implementation == "sdpa"
    assert not model.training
    assert type(processor).__name__.startswith("Offline")
    assert processor.image_processor.__class__.__name__ == "Qwen2VLImageProcessorPil"
    assert processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id


def test_lm_head_is_output_embedding(loaded):
    _, model, _ = loaded
    head = lm_head(model)
    assert isinstance(head, torch.nn.Linear)
    assert head.weight.shape == (
        model.config.text_config.vocab_size,
        model.config.text_config.hidden_size,
    )
    assert head is model.get_output_embeddings()


@pytest.mark.parametrize("encoder", ["prompts", "sft"])
def test_hidden_states_times_head_equal_logits(loaded, synthetic_data, encoder):
    _, model, processor = loaded
    records = load_records(synthetic_data["sft"], require_response=True)[:4]
    batch = (
        encode_prompts(processor, records)
        if encoder == "prompts"
        else encode_sft(processor, records)
    )
    assert batch["attention_mask"].min() == 0  # the batch really is padded
    with torch.no_grad():
        hidden = decoder_hidden_states(model, **batch)
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert hidden.shape == (*batch["input_ids"].shape, model.config.text_config.hidden_size)
    torch.testing.assert_close(lm_head(model)(hidden), logits, atol=1e-5, rtol=0)


def test_hidden_states_derive_mm_token_type_ids(loaded, synthetic_data):
    _, model, processor = loaded
    records = load_records(synthetic_data["rl"])[:2]
    batch = encode_prompts(processor, records)
    without = {k: v for k, v in batch.items() if k != "mm_token_type_ids"}
    with torch.no_grad():
        torch.testing.assert_close(
            decoder_hidden_states(model, **without), decoder_hidden_states(model, **batch)
        )


def test_image_changes_hidden_states_and_gradients_reach_vision_tower(loaded, synthetic_data):
    _, model, processor = loaded
    records = load_records(synthetic_data["rl"])[:2]
    batch = encode_prompts(processor, records)
    hidden = decoder_hidden_states(model, **batch)
    other = dict(batch, pixel_values=torch.randn_like(batch["pixel_values"]))
    with torch.no_grad():
        assert not torch.allclose(decoder_hidden_states(model, **other), hidden)
    model.zero_grad(set_to_none=True)
    hidden.pow(2).mean().backward()
    vision_grads = [
        p.grad for n, p in model.named_parameters() if "visual" in n and p.grad is not None
    ]
    assert vision_grads and any(g.abs().sum() > 0 for g in vision_grads)
    model.zero_grad(set_to_none=True)


def test_sampled_generation_with_image(loaded, synthetic_data):
    _, model, processor = loaded
    records = load_records(synthetic_data["rl"])[:2]
    batch = encode_prompts(processor, records)
    prompt_len = batch["input_ids"].shape[1]
    torch.manual_seed(0)
    out = model.generate(
        **batch,
        do_sample=True,
        temperature=1.2,
        num_return_sequences=4,
        max_new_tokens=12,
        min_new_tokens=12,
    )
    assert out.shape == (8, prompt_len + 12)
    # Prompts are repeated per sample; the sampled completions differ.
    assert torch.equal(out[:4, :prompt_len], batch["input_ids"][0].expand(4, -1))
    completions = {tuple(row.tolist()) for row in out[:4, prompt_len:]}
    assert len(completions) > 1
    # A training forward right after generate still matches the logits (stale rope deltas reset).
    with torch.no_grad():
        hidden = decoder_hidden_states(model, **batch)
        torch.testing.assert_close(lm_head(model)(hidden), model(**batch).logits, atol=1e-5, rtol=0)


def test_pixel_bounds_override(tiny_ckpt):
    _, small = load_model_and_processor(tiny_ckpt, min_pixels=28 * 28, max_pixels=56 * 56)
    _, default = load_model_and_processor(tiny_ckpt)
    image = Image.new("RGB", (84, 84), (10, 200, 30))
    assert small.image_processor(images=[image], return_tensors="pt")[
        "image_grid_thw"
    ].tolist() == [[1, 4, 4]]
    assert default.image_processor(images=[image], return_tensors="pt")[
        "image_grid_thw"
    ].tolist() == [[1, 6, 6]]
    with pytest.raises(ValueError, match="min_pixels"):
        load_model_and_processor(tiny_ckpt, min_pixels=10_000, max_pixels=100)


def test_save_and_reload_round_trip(loaded, tmp_path, synthetic_data):
    _, model, processor = loaded
    out = tmp_path / "saved"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    assert json.loads((out / "processor_config.json").read_text())["processor_class"] in (
        "Qwen2VLProcessor",
        "Qwen2_5_VLProcessor",
    )
    model2, processor2 = load_model_and_processor(out)
    batch = encode_prompts(processor, load_records(synthetic_data["rl"])[:2])
    batch2 = encode_prompts(processor2, load_records(synthetic_data["rl"])[:2])
    assert all(torch.equal(batch[k], batch2[k]) for k in batch)
    with torch.no_grad():
        torch.testing.assert_close(model2(**batch).logits, model(**batch).logits)


def test_bad_paths_and_model_types(tmp_path, tiny_ckpt):
    with pytest.raises(ValueError, match="does not exist"):
        load_model_and_processor(tmp_path / "nope")
    with pytest.raises(ValueError, match="no config.json"):
        load_model_and_processor(tmp_path)
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file"):
        load_model_and_processor(tmp_path / "file.bin")
    other = tmp_path / "llama"
    shutil.copytree(tiny_ckpt, other)
    (other / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "hidden_size": 8,
                "num_attention_heads": 2,
                "num_hidden_layers": 1,
            }
        )
    )
    with pytest.raises(ValueError, match="model_type 'llama'"):
        load_model_and_processor(other)


def test_resolve_helpers():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype(None, cpu) == torch.float32
    assert resolve_dtype("auto", cuda) == torch.bfloat16
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    assert resolve_dtype("torch.float16", cpu) == torch.float16
    assert resolve_dtype(torch.float64, cpu) == torch.float64
    for bad in ("int8", "nonsense"):
        with pytest.raises(ValueError, match="dtype"):
            resolve_dtype(bad, cpu)
    assert resolve_attn_implementation(None, cpu) == "sdpa"
    assert resolve_attn_implementation("eager", cuda) == "eager"
