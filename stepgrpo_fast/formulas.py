"""The GRPO maths every implementation shares: constants, per-token formulas, the stats layout.

Torch only; imports nothing from the package, so the oracles (reference/), the CPU and Triton
implementations (ops/) and the public ops (functional/) all read the same definitions.
Notation (shapes): B sequences, T completion positions, N = B*T tokens, V vocabulary.

    ratio_t = exp(logp_t - old_t)                      (old = logp.detach() when not given: ratio 1)
    pg_t    = -min(ratio_t A_t, clip(ratio_t, 1-eps_low, 1+eps_high) A_t)
    kl_t    = exp(ref_t - logp_t) - (ref_t - logp_t) - 1            (k3; only when beta > 0)
    l_t     = pg_t + beta kl_t
    loss    = sum_t w_t l_t      with the per-token weight w (``token_weights``)

The method, in words and with the sources of each choice: docs/METHOD.md.
"""
from __future__ import annotations

import torch

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo")
ADVANTAGE_SCALES = ("group", "batch", "none")
IGNORE_INDEX = -100          # a target id that is not scored (log-prob 0, no gradient)

# Layout of the statistics vector every implementation returns next to the loss: sums over the
# counted tokens, except the ratio min / max.
(STAT_LOSS, STAT_KL, STAT_CLIP_LOW, STAT_CLIP_HIGH, STAT_RATIO, STAT_COUNT, STAT_RATIO_MIN,
 STAT_RATIO_MAX) = range(8)
NUM_STATS = 8


def token_weights(mask: torch.Tensor, loss_type: str, max_completion_length: int | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """mask [B,T] -> w [B,T] (float32 or ``dtype``) with loss = sum(w * l).

    grpo:    m / (B * max(sum_t m, 1))     per-sequence mean, then batch mean
    bnpo:    m / max(sum m, 1)             mean over all counted tokens
    dr_grpo: m / (B * max_completion_length)  (defaults to T)
    Rows or batches without counted tokens get weight 0, never NaN.
    """
    m = mask.to(dtype)
    b, t = m.shape
    if loss_type == "grpo":
        return m / (m.sum(1, keepdim=True).clamp(min=1.0) * b)
    if loss_type == "bnpo":
        return m / m.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return m / (b * float(max_completion_length or t))
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def grpo_token_terms(logp: torch.Tensor, weight: torch.Tensor, adv: torch.Tensor,
                     old_logp: torch.Tensor | None, ref_logp: torch.Tensor | None, beta: float,
                     epsilon_low: float, epsilon_high: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token weighted loss and its derivative d(loss)/d(logp), closed form (no autograd).

    All inputs are broadcast-compatible float tensors of the token shape. Tokens with weight 0 get
    exactly 0 for both (even when their log-probs are inf/NaN padding).
    Returns (loss_t, dloss_dlogp_t, stats[NUM_STATS]) -- stats summed over counted tokens.
    """
    counted = weight != 0
    ratio = torch.exp(logp - old_logp) if old_logp is not None else torch.ones_like(logp)
    clipped_low = (ratio < 1 - epsilon_low) & (adv < 0)
    clipped_high = (ratio > 1 + epsilon_high) & (adv > 0)
    pg = -torch.minimum(ratio * adv, ratio.clamp(1 - epsilon_low, 1 + epsilon_high) * adv)
    # d(-min(rA, clip(r)A))/dlogp: -A r where the unclipped branch is active, 0 in the clipped region.
    dpg = torch.where(clipped_low | clipped_high, torch.zeros_like(ratio), -adv * ratio)
    if beta != 0.0 and ref_logp is not None:
        diff = ref_logp - logp
        e = torch.exp(diff)
        kl = e - diff - 1
        loss_t, grad_t = pg + beta * kl, dpg + beta * (1 - e)
    else:
        kl = torch.zeros_like(pg)
        loss_t, grad_t = pg, dpg
    zero = torch.zeros_like(loss_t)
    loss_t = torch.where(counted, weight * loss_t, zero)
    grad_t = torch.where(counted, weight * grad_t, zero)
    stats = token_stats(loss_t, counted, kl, clipped_low, clipped_high, ratio)
    return loss_t, grad_t, stats


def token_stats(loss_t, counted, kl, clipped_low, clipped_high, ratio) -> torch.Tensor:
    """Sums over counted tokens -> float32 [NUM_STATS] (layout: the STAT_* constants)."""
    shape = counted.shape
    ratio_b = ratio.expand(shape).to(torch.float32)
    inf = torch.full((), float("inf"), dtype=torch.float32, device=counted.device)
    f32 = torch.float32
    return torch.stack([
        loss_t.sum().to(f32),
        torch.where(counted, kl.expand(shape), 0.0).sum().to(f32),
        (clipped_low.expand(shape) & counted).sum().to(f32),
        (clipped_high.expand(shape) & counted).sum().to(f32),
        torch.where(counted, ratio_b, 0.0).sum().to(f32),
        counted.sum().to(f32),
        torch.where(counted, ratio_b, inf).amin() if counted.numel() else inf,
        torch.where(counted, ratio_b, -inf).amax() if counted.numel() else -inf,
    ])


def stats_to_metrics(stats: torch.Tensor) -> dict[str, torch.Tensor]:
    """stats[NUM_STATS] (sums over counted tokens) -> metrics dict of 0-d detached float32 tensors.

    kl, clip_ratio (region-clipped fraction: ratio < 1-eps_low with A < 0, or > 1+eps_high with
    A > 0, as TRL logs it), clip_ratio_low, clip_ratio_high, ratio_mean/min/max; all means over
    counted (mask != 0) tokens. Without counted tokens: kl and clip ratios 0, ratios 1.
    """
    s = stats.detach().to(torch.float32)
    count = s[STAT_COUNT]
    denom = count.clamp(min=1.0)
    has = count > 0
    one = torch.ones((), dtype=torch.float32, device=s.device)
    return {
        "kl": s[STAT_KL] / denom,
        "clip_ratio": (s[STAT_CLIP_LOW] + s[STAT_CLIP_HIGH]) / denom,
        "clip_ratio_low": s[STAT_CLIP_LOW] / denom,
        "clip_ratio_high": s[STAT_CLIP_HIGH] / denom,
        "ratio_mean": torch.where(has, s[STAT_RATIO] / denom, one),
        "ratio_min": torch.where(has, s[STAT_RATIO_MIN], one),
        "ratio_max": torch.where(has, s[STAT_RATIO_MAX], one),
        "num_tokens": count,
    }


def merge_stats(total: torch.Tensor, part: torch.Tensor) -> None:
    """total += part in place (sums added, ratio min / max combined): chunked implementations."""
    total[:STAT_RATIO_MIN] += part[:STAT_RATIO_MIN]
    total[STAT_RATIO_MIN] = torch.minimum(total[STAT_RATIO_MIN], part[STAT_RATIO_MIN])
    total[STAT_RATIO_MAX] = torch.maximum(total[STAT_RATIO_MAX], part[STAT_RATIO_MAX])
