"""Shared prompt (trainer/rl/shared_prompt.py) against the repeated layout, fp32, on tiny random
Qwen2-VL / Qwen2.5-VL / Qwen3-VL models built in memory (hand-made token ids, random pixels):
left-padded prompts of different lengths, one to two images per prompt (and a text-only one),
completions of different lengths and EOS positions. Completion log-probs within 1e-5 relative,
every parameter gradient (vision tower included) within 1e-5 relative in norm, for the loss
options; LoRA; the rollout prefill gives the same completions."""

import pytest
import torch

from stepgrpo_fast.trainer.model.objective import (
    PolicyObjective,
    build_policy_batch,
    build_shared_policy_batch,
    completion_hidden_states,
    completion_logprobs,
)
from stepgrpo_fast.trainer.rl.rollout import (
    SeededGumbelSampler,
    generate_rollouts,
    repeat_prompt_inputs,
)
from stepgrpo_fast.trainer.rl import shared_prompt
from stepgrpo_fast.trainer.rl.shared_prompt import group_prompt_inputs, unsupported_reason

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
PAD, EOS, VS, VE, IMG, VID = 0, 1, 2, 3, 4, 5
VOCAB, G, C = 96, 3, 7
# per prompt: (text tokens before, image grids (t, h, w), text tokens after)
SPECS = [(3, [(1, 4, 4)], 5), (2, [(1, 2, 4), (1, 4, 6)], 2), (6, [], 4)]
LENGTHS = [7, 3, 5, 1, 7, 6, 2, 7, 4]  # completion lengths (EOS last where < C)


def tiny_model(family: str, seed: int = 0, attn: str = "sdpa"):
    import transformers as tf

    rope = {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}
    text = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                rms_norm_eps=1e-6, bos_token_id=PAD, eos_token_id=EOS, pad_token_id=PAD,
                tie_word_embeddings=False, rope_parameters=rope)  # fmt: skip
    common = dict(image_token_id=IMG, video_token_id=VID, vision_start_token_id=VS,
                  vision_end_token_id=VE, tie_word_embeddings=False)  # fmt: skip
    if family == "qwen2_vl":
        vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2)  # fmt: skip
        config, cls = tf.Qwen2VLConfig, tf.Qwen2VLForConditionalGeneration
    elif family == "qwen2_5_vl":
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                      out_hidden_size=64, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])  # fmt: skip
        config, cls = tf.Qwen2_5_VLConfig, tf.Qwen2_5_VLForConditionalGeneration
    else:  # deep-stack features from both vision blocks, interleaved M-RoPE
        text.update(head_dim=16, rope_parameters={**rope, "mrope_interleaved": True})
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                      out_hidden_size=64, patch_size=16, spatial_merge_size=2,
                      temporal_patch_size=2, num_position_embeddings=64,
                      hidden_act="gelu_pytorch_tanh", deepstack_visual_indexes=[0, 1])  # fmt: skip
        config, cls = tf.Qwen3VLConfig, tf.Qwen3VLForConditionalGeneration
    cfg = config(text_config=text, vision_config=vision, **common)
    cfg._attn_implementation = attn
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(cfg).float().train()


def make_prompts(family: str, specs=SPECS, seed: int = 0) -> dict[str, torch.Tensor]:
    """Left-padded prompts as encode_prompts returns them (mm_token_type_ids included)."""
    gen = torch.Generator().manual_seed(seed)
    patch = 16 if family == "qwen3_vl" else 14
    rows, grids, pixels = [], [], []
    for before, images, after in specs:
        row = torch.randint(10, VOCAB, (before,), generator=gen).tolist()
        for t, h, w in images:
            row += [VS] + [IMG] * (t * h * w // 4) + [VE]
            grids.append([t, h, w])
            pixels.append(torch.randn(t * h * w, 3 * 2 * patch * patch, generator=gen))
        rows.append(row + torch.randint(10, VOCAB, (after,), generator=gen).tolist())
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    if grids:
        out.update(pixel_values=torch.cat(pixels), image_grid_thw=torch.tensor(grids),
                   mm_token_type_ids=(ids == IMG).long())  # fmt: skip
    return out


def make_completions(lengths=LENGTHS, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, VOCAB, (len(lengths), C), generator=gen)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        if n < C:
            ids[i, n - 1], ids[i, n:] = EOS, PAD
        mask[i, :n] = 1
    return ids, mask


def both_batches(prompts, lengths=LENGTHS, group=G, seed=1):
    ids, mask = make_completions(lengths, seed)
    adv = torch.randn(len(lengths), generator=torch.Generator().manual_seed(seed))
    repeated = repeat_prompt_inputs(prompts, group, vision_start_token_id=VS)
    return (
        build_policy_batch(repeated, ids, mask, adv),
        build_shared_policy_batch(prompts, ids, mask, adv, group),
    )


def loss_and_grads(model, batch, **options):
    objective = PolicyObjective(model, **options)
    model.zero_grad(set_to_none=True)
    loss, metrics = objective(batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), metrics, grads


def assert_grads_close(repeated, shared, rel=1e-5):
    assert repeated.keys() == shared.keys() and repeated
    for name, g in repeated.items():
        err = (shared[name] - g).norm() / g.norm().clamp_min(1e-30)
        assert err <= rel, f"{name}: gradient differs by {err:.2e} relative"


# loss options of the GRPO family (num_iterations > 1 supplies old_logp, so ratios clip)
LOSS_CASES = [
    dict(loss_type="grpo", beta=0.04),
    dict(loss_type="dapo", beta=0.0, epsilon_high=0.28),
    dict(loss_type="dr_grpo", beta=0.04, max_completion_length=C),
    dict(loss_type="bnpo", beta=0.04),
    dict(loss_type="grpo", beta=0.04, loss_options={"importance_sampling_level": "sequence"}),
    dict(loss_type="cispo", beta=0.0),
    dict(loss_type="sapo", beta=0.04, loss_options={"entropy_coef": 0.01}),
]


@pytest.mark.parametrize("family", FAMILIES)
def test_logprobs_and_every_gradient_match_the_repeated_layout(family):
    model = tiny_model(family)
    repeated, shared = both_batches(make_prompts(family))
    n = repeated.completion_ids.shape[0]
    h_rep, h_shared = completion_hidden_states(model, repeated), completion_hidden_states(model, shared)
    assert h_shared.shape == h_rep.shape == (n, C, 64)  # the head only sees completion positions
    logp_rep = completion_logprobs(model, repeated)
    logp_shared = completion_logprobs(model, shared)
    valid = repeated.completion_mask.bool()
    torch.testing.assert_close(logp_shared[valid], logp_rep[valid], rtol=1e-5, atol=1e-6)
    gen = torch.Generator().manual_seed(2)
    for case in LOSS_CASES:
        # the same reference / old log-probs for both layouts (old ones far enough to clip)
        repeated.ref_logp = logp_rep + 0.05 * torch.randn(logp_rep.shape, generator=gen)
        repeated.old_logp = logp_rep + 0.3 * torch.randn(logp_rep.shape, generator=gen)
        shared.ref_logp, shared.old_logp = repeated.ref_logp, repeated.old_logp
        loss_r, metrics_r, grads_r = loss_and_grads(model, repeated, **case)
        loss_s, metrics_s, grads_s = loss_and_grads(model, shared, **case)
        torch.testing.assert_close(loss_s, loss_r, rtol=1e-5, atol=1e-7, msg=str(case))
        for key, value in metrics_r.items():
            torch.testing.assert_close(metrics_s[key], value, rtol=1e-5, atol=1e-6)
        assert any(k.startswith("model.visual.") for k in grads_r)  # the vision tower trains
        assert_grads_close(grads_r, grads_s)


def test_lora_gradients_match():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        tiny_model("qwen2_vl"),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False,
                   target_modules=["q_proj", "v_proj", "down_proj"]),  # fmt: skip
    )
    repeated, shared = both_batches(make_prompts("qwen2_vl"))
    for batch in (repeated, shared):
        batch.ref_logp = completion_logprobs(model, repeated).detach() - 0.01
    _, _, grads_r = loss_and_grads(model, repeated, beta=0.04)
    _, _, grads_s = loss_and_grads(model, shared, beta=0.04)
    assert grads_r and all("lora_" in name for name in grads_r)
    assert_grads_close(grads_r, grads_s)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_text_only_batch_and_all_full_length(family):
    # no images at all (the model numbers every column) and no completion EOS
    model = tiny_model(family, seed=3)
    specs = [(5, [], 3), (2, [], 2)]
    repeated, shared = both_batches(make_prompts(family, specs), lengths=[C] * 4, group=2)
    valid = repeated.completion_mask.bool()
    torch.testing.assert_close(
        completion_logprobs(model, shared)[valid], completion_logprobs(model, repeated)[valid],
        rtol=1e-5, atol=1e-6,
    )
    repeated.ref_logp = shared.ref_logp = completion_logprobs(model, repeated) - 0.02
    assert_grads_close(loss_and_grads(model, repeated)[2], loss_and_grads(model, shared)[2])


def test_group_prompt_inputs_undoes_repeat():
    prompts = make_prompts("qwen2_vl")
    back = group_prompt_inputs(
        repeat_prompt_inputs(prompts, G, vision_start_token_id=VS), G, vision_start_token_id=VS
    )
    assert back.keys() == prompts.keys()
    for key, value in prompts.items():
        assert torch.equal(back[key], value), key
    broken = repeat_prompt_inputs(prompts, G, vision_start_token_id=VS)
    broken["input_ids"][1, -1] += 1
    with pytest.raises(ValueError, match="of one group differ"):
        group_prompt_inputs(broken, G, vision_start_token_id=VS)


@pytest.mark.parametrize("family", FAMILIES)
def test_rollout_shared_prefill_same_completions(family, monkeypatch):
    model = tiny_model(family).eval()
    prompts = make_prompts(family)
    calls, scores = [], []
    prefill = shared_prompt.prefill
    monkeypatch.setattr(
        shared_prompt, "prefill", lambda m, p, **kw: calls.append(p) or prefill(m, p, **kw)
    )
    sample = SeededGumbelSampler.__call__  # record the logits every decoding step samples from
    monkeypatch.setattr(
        SeededGumbelSampler, "__call__", lambda self, i, s: scores.append(s) or sample(self, i, s)
    )

    class Tok:
        pad_token_id, eos_token_id, unk_token_id = PAD, EOS, None

        def convert_tokens_to_ids(self, token):
            return EOS

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(map(str, ids))

    def rollout(share):
        return generate_rollouts(
            model, Tok(), prompts, num_generations=G, max_new_tokens=10, row_seeds=range(9),
            vision_start_token_id=VS, share_prompt=share,
        )  # fmt: skip

    repeated = rollout(False)
    steps = len(scores)
    shared = rollout(True)
    assert len(calls) == 1 and calls[0]["input_ids"].shape[0] == 3  # the 3 prompts, once
    assert len(scores) == 2 * steps
    for rep, sh in zip(scores[:steps], scores[steps:]):  # the same logits at every step
        torch.testing.assert_close(sh, rep, rtol=1e-5, atol=1e-5)
    assert torch.equal(shared.completion_ids, repeated.completion_ids)
    assert shared.texts == repeated.texts and len(set(shared.texts)) > 1


def test_unsupported_models_fall_back():
    assert unsupported_reason(tiny_model("qwen2_vl")) is None
    flash = tiny_model("qwen2_vl")
    flash.config._attn_implementation_internal = "flash_attention_2"  # not loadable on CPU
    assert "flash_attention_2" in unsupported_reason(flash)
    checkpointed = tiny_model("qwen2_vl")
    checkpointed.gradient_checkpointing_enable()
    assert unsupported_reason(checkpointed) is None  # rollouts / reference: the cache works
    assert "gradient checkpointing" in unsupported_reason(checkpointed, training=True)
    text_only = make_prompts("qwen2_vl", [(4, [], 1)])
    kwargs, reason = shared_prompt.shared_generation_inputs(
        tiny_model("qwen2_vl"), text_only, repeat_prompt_inputs(text_only, 2), 2
    )
    assert kwargs is None and "text-only" in reason
