"""GRPO in plain torch: the oracles (tests compare every implementation to them, in float64)
and the benchmarks' naive baseline.

    group_advantages_reference   -- nan-aware group-relative advantages
    grpo_loss_reference          -- the GRPO family with plain autograd, written like TRL 1.16's
                                    _compute_loss (loss types, GSPO, delta, bias-corrected KL,
                                    entropy bonus / mask, off-policy mask, IS ratio)
    linear_grpo_loss_naive       -- materialises [N, V] logits, then grpo_loss_reference

The formula (ratio, clipped surrogate, k3 KL, loss types) is stated in formulas.py, which the
implementations share; this file writes it out again on its own, with autograd, so that the
tests compare against an independent statement. The implementations: functional/grpo.py
(dispatch), ops/linear_grpo_loss_chunked.py (torch), ops/grpo_loss.py and
ops/linear_grpo_loss.py (Triton).
"""
from __future__ import annotations

import torch

from ..formulas import (
    ADVANTAGE_SCALES,
    LOSS_TYPES,
    STAT_CISPO_CLIP,
    STAT_ENTROPY,
    STAT_LOSS,
    stats_to_metrics,
    token_stats,
)


# ----------------------------------------------------------------------------------- advantages
def group_advantages_reference(rewards: torch.Tensor, group_size: int, scale: str = "group",
                               eps: float = 1e-4) -> torch.Tensor:
    """rewards [G*group_size] -> float32 advantages of the same shape.

    (r - group mean) / (std + eps) with the unbiased std of the group ("group") or of the whole
    batch ("batch"), or no division ("none"). NaN rewards are left out of every statistic and get
    advantage 0; a group with equal rewards (or fewer than two finite ones) gets 0.
    """
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"scale must be one of {ADVANTAGE_SCALES}, got {scale!r}")
    flat = rewards.to(torch.float64).reshape(-1)
    finite_all = flat[~torch.isnan(flat)]
    batch_std = finite_all.std() if finite_all.numel() > 1 else torch.zeros((), dtype=torch.float64)
    out = torch.zeros_like(flat)
    for start in range(0, flat.numel(), group_size):  # one group at a time, written plainly
        group = flat[start:start + group_size]
        finite = ~torch.isnan(group)
        if not bool(finite.any()):
            continue
        centred = group[finite] - group[finite].mean()
        if scale == "group":
            std = group[finite].std() if int(finite.sum()) > 1 else torch.zeros((), dtype=torch.float64)
            centred = centred / (std + eps)
        elif scale == "batch":
            centred = centred / (batch_std + eps)
        out[start:start + group_size][finite] = centred
    return out.to(torch.float32)


# ------------------------------------------------------------------------------------ oracle
def grpo_loss_reference(logp, advantages, mask, *, old_logp=None, ref_logp=None, beta=0.04,
                        epsilon_low=0.2, epsilon_high=0.2, loss_type="grpo",
                        max_completion_length=None, num_items_in_batch=None,
                        importance_sampling_level="token", delta=None, use_bias_correction_kl=True,
                        entropy_coef=0.0, top_entropy_quantile=1.0, entropy=None,
                        off_policy_mask_threshold=None, sampling_logp=None,
                        importance_sampling_ratio=None, sapo_temperature_pos=1.0,
                        sapo_temperature_neg=1.05):
    """The GRPO family with plain autograd, written like TRL 1.16's _compute_loss on [B, T]
    tensors. logp [B,T] (and entropy [B,T], differentiable) -> (loss, metrics).

    Computes in the dtype of ``logp`` (tests pass float64). Uncounted positions are zeroed before
    they can turn into NaN (TRL multiplies by the mask afterwards).
    """
    dt = logp.dtype
    adv = advantages if advantages.dim() == 2 else advantages[:, None]
    adv = adv.to(dt)
    m = mask.to(dt)
    counted = m != 0
    zero = torch.zeros_like(logp)
    lp = torch.where(counted, logp, zero)
    old = lp.detach() if old_logp is None else torch.where(counted, old_logp.to(dt), zero)
    b = logp.shape[0]
    ent_mask = None
    if top_entropy_quantile < 1.0:
        local = entropy.detach()[counted].float()
        thr = torch.quantile(local, 1 - top_entropy_quantile) if local.numel() else None
        ent_mask = torch.zeros_like(counted) if thr is None else \
            ((entropy.detach() * m) >= thr.to(dt)) & counted
    if off_policy_mask_threshold is not None:
        samp = sampling_logp if sampling_logp is not None else old
        kl_div = torch.nan_to_num(torch.where(counted, samp.to(dt) - lp.detach(), zero), nan=0.0)
        avg = (kl_div * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1.0)
        off_mask = ((adv >= 0) | (avg <= off_policy_mask_threshold)).to(dt)
    log_ratio = lp - old
    if importance_sampling_level == "token":
        liw = log_ratio
    else:
        liw = ((log_ratio * m).sum(-1) / m.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef_1 = torch.exp(liw)
    if beta != 0.0 and ref_logp is not None:
        ref = torch.where(counted, ref_logp.to(dt), zero)
        kl = torch.exp(ref - lp) - (ref - lp) - 1
        if use_bias_correction_kl:
            kl = kl * coef_1
    else:
        kl = zero
    if loss_type == "cispo":
        per_token = -torch.clamp(coef_1, max=epsilon_high).detach() * adv * lp
    elif loss_type == "sapo":
        tau = torch.where(adv > 0, sapo_temperature_pos, sapo_temperature_neg)
        per_token = -torch.sigmoid(tau * (coef_1 - 1)) * 4 / tau * adv
    else:
        coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
        if delta is not None:
            coef_1 = torch.clamp(coef_1, max=delta)
        per_token = -torch.min(coef_1 * adv, coef_2 * adv)
    if off_policy_mask_threshold is not None:
        per_token = per_token * off_mask
    if ent_mask is not None:
        per_token = per_token * ent_mask
    if importance_sampling_ratio is not None:
        per_token = per_token * importance_sampling_ratio.to(dt)
    if beta != 0.0 and ref_logp is not None:
        per_token = per_token + beta * kl
    per_token = torch.where(counted, per_token, zero)
    if loss_type in ("grpo", "sapo"):
        loss = ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * m).sum() / m.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token * m).sum() / (b * (max_completion_length or logp.shape[1]))
    elif loss_type in ("dapo", "cispo"):
        nib = m.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch, dtype=dt)
        loss = (per_token * m).sum() / nib.clamp(min=1.0)
    elif loss_type == "luspo":
        loss = (per_token * m).sum(-1).mean()
    else:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if entropy_coef != 0.0:
        em = m if ent_mask is None else m * ent_mask
        ent = torch.where(em != 0, entropy, zero)
        loss = loss - entropy_coef * (ent * em).sum() / em.sum().clamp(min=1.0)
    with torch.no_grad():
        ratio = torch.exp(liw).expand_as(lp)
        c1 = coef_1.expand_as(lp)
        low = (c1 < 1 - epsilon_low) & (adv < 0)
        high = (c1 > 1 + epsilon_high) & (adv > 0)
        stats = token_stats(torch.zeros(()), counted, kl.detach(), low, high, ratio)
        stats[STAT_LOSS] = loss.detach().float()
        stats[STAT_CISPO_CLIP] = ((ratio > epsilon_high) & (adv > 0) & counted).sum().float()
        if entropy is not None:
            stats[STAT_ENTROPY] = torch.where(counted, entropy.detach(), zero).sum().float()
    return loss, stats_to_metrics(stats, entropy=entropy is not None, cispo=loss_type == "cispo")


def linear_grpo_loss_naive(hidden, weight, targets, mask, advantages, *, old_logp=None, ref_logp=None,
                           beta=0.04, epsilon_low=0.2, epsilon_high=0.2, temperature=1.0,
                           loss_type="grpo", max_completion_length=None, bias=None,
                           logits_dtype=None, **options):
    """Materialise logits [N, V], log_softmax, gather (and the entropies, when an option needs
    them), then ``grpo_loss_reference`` (``options``: its TRL 1.16 keywords).

    hidden [B,T,H], weight [V,H], targets [B,T] (any value where mask == 0). Computes in the dtype of
    ``hidden`` when it is float64, else float32; ``logits_dtype`` (default: that dtype) is the
    dtype of the logits GEMM, cast to it after.
    """
    dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    gemm_dtype = dtype if logits_dtype is None else logits_dtype
    logits = (hidden.to(gemm_dtype) @ weight.to(gemm_dtype).t()).to(dtype)
    if bias is not None:
        logits = logits + bias.to(dtype)
    logits = logits / temperature
    safe_targets = torch.where(mask != 0, targets, torch.zeros_like(targets)).long()
    logps = torch.log_softmax(logits, dim=-1)
    logp = logps.gather(-1, safe_targets[..., None]).squeeze(-1)
    if options.get("entropy_coef", 0.0) != 0.0 or options.get("top_entropy_quantile", 1.0) < 1.0:
        options["entropy"] = -(logps.exp() * logps).sum(-1)
    return grpo_loss_reference(logp, advantages, mask, old_logp=old_logp, ref_logp=ref_logp, beta=beta,
                               epsilon_low=epsilon_low, epsilon_high=epsilon_high, loss_type=loss_type,
                               max_completion_length=max_completion_length, **options)
