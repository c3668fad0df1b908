"""GRPO in plain torch: the oracles (tests compare every implementation to them, in float64)
and the benchmarks' naive baseline.

    group_advantages_reference   -- nan-aware group-relative advantages
    grpo_loss_reference          -- the GRPO loss with plain autograd, written like TRL's formula
    linear_grpo_loss_naive       -- materialises [N, V] logits, then grpo_loss_reference

The formula (ratio, clipped surrogate, k3 KL, loss types) is stated in formulas.py, which the
implementations share; this file writes it out again on its own, with autograd, so that the
tests compare against an independent statement. The implementations: functional/grpo.py
(dispatch), ops/linear_grpo_loss_chunked.py (torch), ops/grpo_loss.py and
ops/linear_grpo_loss.py (Triton).
"""
from __future__ import annotations

import torch

from ..formulas import ADVANTAGE_SCALES, LOSS_TYPES, STAT_LOSS, stats_to_metrics, token_stats


# ----------------------------------------------------------------------------------- advantages
def group_advantages_reference(rewards: torch.Tensor, group_size: int, scale: str = "group",
                               eps: float = 1e-4) -> torch.Tensor:
    """rewards [G*group_size] -> float32 advantages of the same shape.

    (r - group mean) / (std + eps) with the unbiased std of the group ("group") or of the whole
    batch ("batch"), or no division ("none"). NaN rewards are left out of every statistic and get
    advantage 0; a group with equal rewards (or fewer than two finite ones) gets 0.
    """
    r = rewards.to(torch.float64).reshape(-1, group_size)
    valid = ~torch.isnan(r)
    count = valid.sum(1, keepdim=True).to(torch.float64)
    r0 = torch.where(valid, r, torch.zeros_like(r))
    mean = r0.sum(1, keepdim=True) / count.clamp(min=1)
    centred = torch.where(valid, r - mean, torch.zeros_like(r))
    if scale == "group":
        var = (centred ** 2).sum(1, keepdim=True) / (count - 1).clamp(min=1)
        adv = centred / (var.sqrt() + eps)
    elif scale == "batch":
        flat = rewards.to(torch.float64).reshape(-1)
        fv = flat[~torch.isnan(flat)]
        std = fv.std(unbiased=True) if fv.numel() > 1 else torch.zeros((), dtype=torch.float64)
        adv = centred / (std + eps)
    elif scale == "none":
        adv = centred
    else:
        raise ValueError(f"scale must be one of {ADVANTAGE_SCALES}, got {scale!r}")
    return adv.reshape(-1).to(torch.float32)


# ------------------------------------------------------------------------------------ oracle
def grpo_loss_reference(logp, advantages, mask, *, old_logp=None, ref_logp=None, beta=0.04,
                        epsilon_low=0.2, epsilon_high=0.2, loss_type="grpo",
                        max_completion_length=None):
    """The GRPO loss with plain autograd, written like TRL's formula. logp [B,T] -> (loss, metrics).

    Computes in the dtype of ``logp`` (tests pass float64).
    """
    adv = advantages if advantages.dim() == 2 else advantages[:, None]
    adv = adv.to(logp.dtype)
    m = mask.to(logp.dtype)
    old = logp.detach() if old_logp is None else old_logp.to(logp.dtype)
    ratio = torch.exp(logp - old)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    kl = torch.zeros_like(per_token)
    if beta != 0.0 and ref_logp is not None:
        ref = ref_logp.to(logp.dtype)
        kl = torch.exp(ref - logp) - (ref - logp) - 1
        per_token = per_token + beta * kl
    counted = m != 0
    per_token = torch.where(counted, per_token, torch.zeros_like(per_token))
    b = logp.shape[0]
    if loss_type == "grpo":
        loss = ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * m).sum() / m.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token * m).sum() / (b * (max_completion_length or logp.shape[1]))
    else:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    with torch.no_grad():
        low = (ratio < 1 - epsilon_low) & (adv < 0)
        high = (ratio > 1 + epsilon_high) & (adv > 0)
        stats = token_stats(torch.zeros(()), counted, kl, low, high, ratio)
        stats[STAT_LOSS] = loss.detach().float()
    return loss, stats_to_metrics(stats)


def linear_grpo_loss_naive(hidden, weight, targets, mask, advantages, *, old_logp=None, ref_logp=None,
                           beta=0.04, epsilon_low=0.2, epsilon_high=0.2, temperature=1.0,
                           loss_type="grpo", max_completion_length=None, bias=None,
                           logits_dtype=None):
    """Materialise logits [N, V], log_softmax, gather, then ``grpo_loss_reference``.

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
    logp = torch.log_softmax(logits, dim=-1).gather(-1, safe_targets[..., None]).squeeze(-1)
    return grpo_loss_reference(logp, advantages, mask, old_logp=old_logp, ref_logp=ref_logp, beta=beta,
                               epsilon_low=epsilon_low, epsilon_high=epsilon_high, loss_type=loss_type,
                               max_completion_length=max_completion_length)
