"""The fused policy pieces against a plain-logits computation of the same tiny Qwen2-VL, plus the
rollout helpers (EOS mask, prompt repetition, seeded sampling)."""

import copy

import pytest
import torch

from stepgrpo_fast.data.records import load_records
from stepgrpo_fast.data.prompts import encode_prompts, encode_sft
from stepgrpo_fast.trainer.model.loading import load_model_and_processor
from stepgrpo_fast.trainer.model.objective import (
    PolicyObjective,
    build_policy_batch,
    completion_logprobs,
    freeze_vision_tower,
    sft_nll,
)
from stepgrpo_fast.trainer.rl.rollout import (
    SeededGumbelSampler,
    completion_mask_from_eos,
    generate_rollouts,
    repeat_prompt_inputs,
    vision_placeholder_ids,
)

TOL = 1e-5


@pytest.fixture(scope="module")
def tiny(tiny_ckpt, synthetic_data):
    model, processor = load_model_and_processor(tiny_ckpt)
    model.train()
    return model, processor, load_records(synthetic_data["rl"]), load_records(synthetic_data["sft"])


def _rollout_batch(
    model, processor, records, *, advantages, max_new_tokens=10, cut_row=1, cut_at=4
):
    prompts = encode_prompts(processor, records)
    rollout = generate_rollouts(
        model,
        processor.tokenizer,
        prompts,
        num_generations=2,
        max_new_tokens=max_new_tokens,
        temperature=1.2,
        row_seeds=[11, 12, 13, 14],
        vision_start_token_id=model.config.vision_start_token_id,
    )
    ids, mask = rollout.completion_ids.clone(), rollout.completion_mask.clone()
    mask[cut_row, cut_at:] = 0  # as if row `cut_row` emitted EOS early
    ids[cut_row, cut_at:] = processor.tokenizer.pad_token_id
    return build_policy_batch(rollout.prompt_inputs, ids, mask, torch.tensor(advantages))


def _plain_logp(model, batch, temperature):
    """log softmax(logits / T) of the completion tokens, from the model's own full logits."""
    logits = model(**batch.model_inputs).logits  # [N, P+C, V]
    p, c = batch.prompt_length, batch.completion_ids.shape[1]
    logp = torch.log_softmax(logits[:, p - 1 : p - 1 + c].float() / temperature, dim=-1)
    return logp.gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1)  # [N, C]


def _plain_grpo_loss(logp, batch, *, beta, eps_low, eps_high, loss_type, max_len=None):
    mask = batch.completion_mask.float()
    old = logp.detach() if batch.old_logp is None else batch.old_logp
    ratio = torch.exp(logp - old)
    adv = batch.advantages[:, None]
    per_token = -torch.min(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
    if beta > 0:
        d = batch.ref_logp - logp
        per_token = per_token + beta * (torch.exp(d) - d - 1)
    if loss_type == "grpo":
        return ((per_token * mask).sum(1) / mask.sum(1)).mean()
    if loss_type == "bnpo":
        return (per_token * mask).sum() / mask.sum()
    return (per_token * mask).sum() / (mask.shape[0] * max_len)


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_grads_close(fused, plain):
    assert fused.keys() == plain.keys() and fused
    for name in fused:
        scale = max(plain[name].abs().max().item(), 1e-3)
        err = (fused[name] - plain[name]).abs().max().item()
        assert err <= TOL * scale, f"{name}: max err {err:.3e} (scale {scale:.3e})"


@pytest.fixture(scope="module")
def tiny25(tiny_ckpt_25, synthetic_data):
    model, processor = load_model_and_processor(tiny_ckpt_25)
    return model, processor, load_records(synthetic_data["rl"]), None


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_fused_logprobs_match_plain_logits(request, family):
    model, processor, records, _ = request.getfixturevalue(
        "tiny" if family == "qwen2_vl" else "tiny25"
    )
    batch = _rollout_batch(model, processor, records[:2], advantages=[1.0, -1.0, 0.5, -0.5])
    for temperature in (1.0, 1.2):
        fused = completion_logprobs(model, batch, temperature=temperature)
        with torch.no_grad():
            plain = _plain_logp(model, batch, temperature)
        assert fused.shape == batch.completion_ids.shape and fused.dtype == torch.float32
        assert (fused - plain).abs().max().item() <= TOL


@pytest.mark.parametrize("case", ["onpolicy_kl", "clipped_old_logp", "bnpo", "dr_grpo"])
def test_fused_grpo_loss_and_grads_match_plain(tiny, case):
    model, processor, records, _ = tiny
    batch = _rollout_batch(model, processor, records[2:4], advantages=[0.7, -0.7, 1.2, -1.2])
    temperature, beta, loss_type, max_len = 1.2, 0.04, "grpo", None
    with torch.no_grad():
        base = _plain_logp(model, batch, temperature)
    gen = torch.Generator().manual_seed(0)
    batch.ref_logp = base + 0.3 * torch.randn(base.shape, generator=gen)
    if case == "clipped_old_logp":
        batch.old_logp = base + 0.5 * torch.randn(
            base.shape, generator=gen
        )  # ratios far outside 1 +- 0.2
    if case in ("bnpo", "dr_grpo"):
        loss_type, max_len = case, 16

    objective = PolicyObjective(
        model,
        beta=beta,
        temperature=temperature,
        loss_type=loss_type,
        max_completion_length=max_len,
        # the plain loss below is the uncorrected k3 KL (TRL 1.16's default corrects it)
        loss_options={"use_bias_correction_kl": False},
    )
    model.zero_grad()
    fused_loss, metrics = objective(batch)
    fused_loss.backward()
    fused_grads = _grads(model)

    model.zero_grad()
    plain_loss = _plain_grpo_loss(
        _plain_logp(model, batch, temperature),
        batch,
        beta=beta,
        eps_low=0.2,
        eps_high=0.2,
        loss_type=loss_type,
        max_len=max_len,
    )
    plain_loss.backward()
    plain_grads = _grads(model)
    model.zero_grad()

    assert abs(fused_loss.item() - plain_loss.item()) <= TOL * max(1.0, abs(plain_loss.item()))
    _assert_grads_close(fused_grads, plain_grads)
    assert {"kl", "clip_ratio", "ratio_mean", "ratio_min", "ratio_max"} <= set(metrics)
    if case == "clipped_old_logp":
        assert metrics["clip_ratio"].item() > 0
    else:
        assert metrics["ratio_mean"].item() == pytest.approx(1.0)


def test_fused_sft_nll_matches_hf_loss(tiny):
    model, processor, _, sft_records = tiny
    inputs = encode_sft(processor, sft_records[:2])
    model.zero_grad()
    fused, metrics = sft_nll(model, inputs)
    fused.backward()
    fused_grads = _grads(model)
    model.zero_grad()
    plain = model(**inputs).loss  # HF: shifted CE, mean over labels
    plain.backward()
    plain_grads = _grads(model)
    model.zero_grad()
    assert abs(fused.item() - plain.item()) <= TOL * max(1.0, plain.item())
    assert metrics["num_label_tokens"].item() == (inputs["labels"][:, 1:] != -100).sum().item()
    _assert_grads_close(fused_grads, plain_grads)


def test_update_moves_policy_towards_positive_advantage(tiny):
    _, processor, records, _ = tiny
    model, _ = load_model_and_processor(tiny[0].name_or_path)
    model.train()
    freeze_vision_tower(model)
    batch = _rollout_batch(model, processor, records[4:6], advantages=[1.0, -1.0, 1.0, -1.0])
    objective = PolicyObjective(model, beta=0.0, temperature=1.2)
    visual_before = copy.deepcopy(model.model.visual.state_dict())

    def score():  # sum_i A_i * mean_t logp_i,t : what the update should raise
        logp = completion_logprobs(model, batch, temperature=1.2)
        mask = batch.completion_mask.float()
        return (batch.advantages * (logp * mask).sum(1) / mask.sum(1)).sum().item()

    before = score()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss, _ = objective(batch)
    loss.backward()
    assert all(p.grad is None for p in model.model.visual.parameters())  # frozen tower gets no grad
    optimizer.step()
    assert score() > before
    after = model.model.visual.state_dict()
    assert all(torch.equal(visual_before[k], after[k]) for k in after)


def test_beta_without_reference_is_an_error(tiny):
    model, processor, records, _ = tiny
    batch = _rollout_batch(model, processor, records[:1] * 2, advantages=[1.0, -1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="ref_logp"):
        PolicyObjective(model, beta=0.04)(batch)


# ------------------------------------------------------------------------------- rollout helpers


def test_completion_mask_includes_first_eos_only():
    ids = torch.tensor([[5, 7, 2, 9, 2], [5, 6, 7, 8, 9], [2, 1, 1, 1, 1]])
    mask = completion_mask_from_eos(ids, [2])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert completion_mask_from_eos(ids, [9, 2]).tolist()[1] == [1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        completion_mask_from_eos(ids[0], [2])


def test_repeat_prompt_inputs_copies_each_rows_images():
    inputs = {
        "input_ids": torch.tensor([[0, 3, 5, 5, 4, 8], [3, 5, 5, 5, 5, 4]]),  # 3 = vision start
        "attention_mask": torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]),
        "image_grid_thw": torch.tensor([[1, 2, 4], [1, 4, 4]]),  # 8 and 16 patches
        "pixel_values": torch.arange(24).float().unsqueeze(1).repeat(1, 3),
    }
    out = repeat_prompt_inputs(inputs, 2, vision_start_token_id=3)
    assert (
        out["input_ids"].tolist()
        == [inputs["input_ids"][0].tolist()] * 2 + [inputs["input_ids"][1].tolist()] * 2
    )
    assert out["image_grid_thw"].tolist() == [[1, 2, 4], [1, 2, 4], [1, 4, 4], [1, 4, 4]]
    first = list(range(8))
    second = list(range(8, 24))
    assert out["pixel_values"][:, 0].long().tolist() == first + first + second + second
    with pytest.raises(ValueError, match="image markers"):
        repeat_prompt_inputs(inputs, 2, vision_start_token_id=99)


def test_seeded_sampler_follows_softmax_and_filters():
    scores = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(6000, 1)
    sampler = SeededGumbelSampler(list(range(6000)), temperature=1.5)
    picks = sampler(None, scores).argmax(-1)
    freq = torch.bincount(picks, minlength=4).float() / 6000
    assert torch.allclose(freq, torch.softmax(scores[0] / 1.5, -1), atol=0.025)
    top2 = SeededGumbelSampler(list(range(500)), temperature=1.0, top_k=2)(
        None, scores[:500]
    ).argmax(-1)
    assert set(top2.tolist()) == {0, 1}
    nucleus = SeededGumbelSampler(list(range(500)), temperature=1.0, top_p=0.5)(
        None, scores[:500]
    ).argmax(-1)
    assert set(nucleus.tolist()) == {0}  # p(token 0) = 0.64 >= 0.5
    same = SeededGumbelSampler([7, 7], temperature=1.0)(None, torch.zeros(2, 50)).argmax(-1)
    assert same[0] == same[1]


def test_rollout_rows_do_not_depend_on_batch_mates(tiny):
    model, processor, records, _ = tiny
    start = model.config.vision_start_token_id
    kw = dict(num_generations=2, max_new_tokens=8, temperature=1.2, vision_start_token_id=start)
    both = generate_rollouts(
        model,
        processor.tokenizer,
        encode_prompts(processor, records[:2]),
        row_seeds=[1, 2, 3, 4],
        **kw,
    )
    alone = generate_rollouts(
        model, processor.tokenizer, encode_prompts(processor, records[1:2]), row_seeds=[3, 4], **kw
    )
    assert both.texts[2:] == alone.texts
    again = generate_rollouts(
        model,
        processor.tokenizer,
        encode_prompts(processor, records[:2]),
        row_seeds=[1, 2, 3, 4],
        **kw,
    )
    assert torch.equal(both.completion_ids, again.completion_ids)
    assert both.texts[0] != both.texts[1]  # different seeds, different samples
    banned = set(vision_placeholder_ids(model))
    assert not banned & set(both.completion_ids.flatten().tolist())
    assert both.prompt_inputs["input_ids"].shape[0] == 4
