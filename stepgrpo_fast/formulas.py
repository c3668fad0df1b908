"""The GRPO maths every implementation shares: constants, per-token formulas, the stats layout.

Torch only; imports nothing from the package, so the oracles (reference/), the CPU and Triton
implementations (ops/) and the public ops (functional/) all read the same definitions.
Notation (shapes): B sequences, T completion positions, N = B*T tokens, V vocabulary.

    ratio_t = exp(logp_t - old_t)  (token level; sequence level: exp of the masked sequence mean)
    pg_t    = -min(ratio_t A_t, clip(ratio_t, 1-eps_low, 1+eps_high) A_t)   (or cispo / sapo)
    kl_t    = exp(ref_t - logp_t) - (ref_t - logp_t) - 1   (k3, times ratio_t when bias-corrected)
    l_t     = pg_t * scale_t + beta kl_t
    loss    = sum_t w_t l_t - sum_t q_t H_t   with the per-token weight w (``token_weights``) and
              the entropy-bonus weight q (``entropy_bonus_weights``)
The whole family, with its gradient in closed form: ``policy_token_terms``.

The method, in words and with the sources of each choice: docs/METHOD.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo")
IS_LEVELS = ("token", "sequence")   # importance_sampling_level (TRL 1.16's names)
ADVANTAGE_SCALES = ("group", "batch", "none")
IGNORE_INDEX = -100          # a target id that is not scored (log-prob 0, no gradient)

# Layout of the statistics vector every implementation returns next to the loss: sums over the
# counted tokens, except the ratio min / max. The Triton token kernels write the first
# KERNEL_STATS entries per block (the launchers pad the rest with zeros).
(STAT_LOSS, STAT_KL, STAT_CLIP_LOW, STAT_CLIP_HIGH, STAT_RATIO, STAT_COUNT, STAT_RATIO_MIN,
 STAT_RATIO_MAX, STAT_ENTROPY, STAT_CISPO_CLIP) = range(10)
NUM_STATS = 10
KERNEL_STATS = 8


@dataclass(frozen=True)
class PolicyOptions:
    """The scalar options of the GRPO family (TRL 1.16 names and meaning, see docs/METHOD.md).

    ``beta`` is the KL coefficient (the KL term is on when beta != 0 and ref log-probs are given).
    """

    loss_type: str = "grpo"
    importance_sampling_level: str = "token"
    beta: float = 0.0
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    delta: float | None = None
    use_bias_correction_kl: bool = True
    sapo_temperature_pos: float = 1.0
    sapo_temperature_neg: float = 1.05
    off_policy_mask_threshold: float | None = None

    @property
    def sequence_reduction(self) -> bool:
        """True when a token's gradient needs a reduction over its whole sequence first."""
        return self.importance_sampling_level == "sequence" or self.off_policy_mask_threshold is not None

    def kernel_expressible(self, has_ref: bool) -> bool:
        """True when the legacy per-token Triton maths (grpo_token_math) computes exactly this:
        token-level ratios, the hard clip without delta, plain (uncorrected) KL."""
        return (self.loss_type in ("grpo", "bnpo", "dr_grpo", "dapo", "luspo")
                and not self.sequence_reduction and self.delta is None
                and not (has_ref and self.beta != 0.0 and self.use_bias_correction_kl))


def token_weights(mask: torch.Tensor, loss_type: str, max_completion_length: int | None = None,
                  dtype: torch.dtype = torch.float32, num_items_in_batch=None) -> torch.Tensor:
    """mask [B,T] -> w [B,T] (float32 or ``dtype``) with loss = sum(w * l).

    grpo, sapo:   m / (B * max(sum_t m, 1))     per-sequence mean, then batch mean
    bnpo:         m / max(sum m, 1)             mean over all counted tokens
    dr_grpo:      m / (B * max_completion_length)  (defaults to T)
    dapo, cispo:  m / max(num_items_in_batch, 1)   (None -> sum m: the counted tokens of this call)
    luspo:        m / B                         per-sequence sum (length-weighted), batch mean
    Rows or batches without counted tokens get weight 0, never NaN.
    """
    m = mask.to(dtype)
    b, t = m.shape
    if loss_type in ("grpo", "sapo"):
        return m / (m.sum(1, keepdim=True).clamp(min=1.0) * b)
    if loss_type == "bnpo":
        return m / m.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return m / (b * float(max_completion_length or t))
    if loss_type in ("dapo", "cispo"):
        if num_items_in_batch is None:
            return m / m.sum().clamp(min=1.0)
        if isinstance(num_items_in_batch, torch.Tensor):
            return m / num_items_in_batch.detach().to(m.device, dtype).clamp(min=1.0)
        return m / max(float(num_items_in_batch), 1.0)
    if loss_type == "luspo":
        return m / float(b)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def _seq_mean(x, m, seq, n_seq):
    """Per-sequence sum(x m) / max(sum m, 1) -> [n_seq], and sum m per sequence."""
    msum = torch.zeros(n_seq, dtype=x.dtype, device=x.device).index_add_(0, seq, m)
    tot = torch.zeros(n_seq, dtype=x.dtype, device=x.device).index_add_(0, seq, x * m)
    return tot / msum.clamp(min=1.0), msum


def off_policy_keep(logp, sampling, adv, m, counted, seq, n_seq, threshold):
    """DeepSeek-V3.2's off-policy sequence mask (TRL get_off_policy_mask) -> float keep [n].

    kl_t = nan_to_num(sampling - logp, nan=0); keep where A >= 0 or mean_seq(kl) <= threshold.
    """
    kl = torch.nan_to_num(sampling - logp, nan=0.0)
    kl = torch.where(counted, kl, torch.zeros_like(kl))
    avg, _ = _seq_mean(kl, m, seq, n_seq)
    return ((adv >= 0) | (avg[seq] <= threshold)).to(logp.dtype)


def policy_token_terms(logp, weight, adv, old, ref, opts: PolicyOptions, *, m=None, seq=None,
                       n_seq: int = 0, scale=None, sampling=None):
    """Per-token weighted loss and d(loss)/d(logp) of the whole GRPO family, closed form.

    Flat vectors [n]: logp, weight (token_weights; 0 = not counted), adv, old / ref / sampling
    (or None), m (mask values, for the sequence means; default weight != 0), seq (int64 sequence
    id in [0, n_seq) of each token; needed when opts.sequence_reduction -- all tokens of a
    sequence must be present), scale (constant multiplier of the policy term: entropy mask times
    importance-sampling ratio; None = 1). Per token, with log w = logp - old (token level) or
    its masked sequence mean (sequence level), c1 = exp(log w):
        kl  = exp(ref - logp) - (ref - logp) - 1, times c1 with use_bias_correction_kl
        P   = -min(min(c1, delta) A, clip(c1, 1-eps_low, 1+eps_high) A)   grpo bnpo dr_grpo dapo luspo
            = -stopgrad(min(c1, eps_high)) A logp                         cispo
            = -4/tau sigmoid(tau (c1 - 1)) A,  tau = sapo_temperature_pos if A > 0 else _neg   sapo
        l   = P * scale * offpolicy_keep + beta kl
    Tokens with weight 0 get exactly 0 (even with inf/NaN log-probs there).
    Returns (loss_t [n], grad_t [n], stats [NUM_STATS] without the entropy sum).
    """
    counted = weight != 0
    zero = torch.zeros_like(logp)
    lp = torch.where(counted, logp, zero)
    lr = torch.where(counted, lp - old, zero) if old is not None else zero
    seq_level = opts.importance_sampling_level == "sequence"
    if opts.sequence_reduction:
        mv = counted.to(logp.dtype) if m is None else torch.where(counted, m.to(logp.dtype), zero)
    if seq_level:
        s, msum = _seq_mean(lr, mv, seq, n_seq)
        c1 = torch.exp(s)[seq]
    else:
        c1 = torch.exp(lr)
    keep = scale
    if opts.off_policy_mask_threshold is not None:
        samp = sampling if sampling is not None else (old if old is not None else lp)
        k = off_policy_keep(lp, samp, adv, mv, counted, seq, n_seq, opts.off_policy_mask_threshold)
        keep = k if keep is None else keep * k
    lt = opts.loss_type
    el, eh = opts.epsilon_low, opts.epsilon_high
    direct = zero          # d l / d logp at fixed c1
    if lt == "cispo":
        cl = c1.clamp(max=eh)
        pol = -cl * adv * lp
        direct = -cl * adv
        dc = zero
        c1m = c1
    elif lt == "sapo":
        tau = torch.where(adv > 0, torch.full_like(adv, opts.sapo_temperature_pos),
                          torch.full_like(adv, opts.sapo_temperature_neg))
        sig = torch.sigmoid(tau * (c1 - 1))
        pol = -sig * 4 / tau * adv
        dc = -4 * adv * sig * (1 - sig)
        c1m = c1
    else:
        c2 = c1.clamp(1 - el, 1 + eh)
        c1m = c1 if opts.delta is None else c1.clamp(max=opts.delta)
        v1, v2 = c1m * adv, c2 * adv
        pol = -torch.minimum(v1, v2)
        # autograd's rule for torch.min: the smaller branch, ties split half / half
        d1 = adv if opts.delta is None else torch.where(c1 <= opts.delta, adv, zero)
        d2 = torch.where((c1 >= 1 - el) & (c1 <= 1 + eh), adv, zero)
        dc = -torch.where(v1 < v2, d1, torch.where(v2 < v1, d2, 0.5 * (d1 + d2)))
    if keep is not None:
        pol, dc, direct = pol * keep, dc * keep, direct * keep
    if opts.beta != 0.0 and ref is not None:
        diff = torch.where(counted, ref - lp, zero)
        e = torch.exp(diff)
        kl = e - diff - 1
        if opts.use_bias_correction_kl:
            direct = direct + opts.beta * c1 * (1 - e)
            dc = dc + opts.beta * kl
            kl = kl * c1
        else:
            direct = direct + opts.beta * (1 - e)
        loss_t = pol + opts.beta * kl
    else:
        kl = zero
        loss_t = pol
    loss_t = torch.where(counted, weight * loss_t, zero)
    g_coef = torch.where(counted, weight * dc, zero)
    if seq_level:
        big = torch.zeros(n_seq, dtype=logp.dtype, device=logp.device).index_add_(0, seq, g_coef)
        grad_t = weight * direct + (big * torch.exp(s) / msum.clamp(min=1.0))[seq] * mv
    else:
        grad_t = weight * direct + g_coef * c1
    grad_t = torch.where(counted, grad_t, zero)
    low = (c1m < 1 - el) & (adv < 0)
    high = (c1m > 1 + eh) & (adv > 0)
    stats = token_stats(loss_t, counted, kl, low, high, c1)
    stats[STAT_CISPO_CLIP] = ((c1 > eh) & (adv > 0) & counted).sum().to(stats.dtype)
    return loss_t, grad_t, stats


def entropy_bonus_weights(mask: torch.Tensor, entropy_mask, entropy_coef: float,
                          dtype=torch.float32) -> torch.Tensor:
    """q [B,T] with loss -= sum(q * H): q = entropy_coef * em / max(sum em, 1), em = mask * entropy
    mask (TRL's effective mask; a plain masked mean, not normalised by the loss type)."""
    em = mask.to(dtype)
    if entropy_mask is not None:
        em = em * entropy_mask.to(dtype)
    return em * (float(entropy_coef) / em.sum().clamp(min=1.0))


def high_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, top_quantile: float) -> torch.Tensor:
    """TRL's get_high_entropy_mask(entropy, mask, 1 - top_quantile) on this call's tokens only
    (TRL gathers the entropies of all processes first): threshold = torch.quantile of the float32
    entropies of the counted tokens at 1 - top_quantile; keep counted tokens with
    entropy * mask >= threshold. No counted tokens -> all False. [B,T] bool."""
    counted = mask != 0
    local = entropy[counted].float()
    if local.numel() == 0:
        return torch.zeros_like(counted)
    thr = torch.quantile(local, 1.0 - float(top_quantile))
    return ((entropy * mask.to(entropy.dtype)) >= thr.to(entropy.dtype)) & counted


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
        torch.zeros((), dtype=f32, device=counted.device),
        torch.zeros((), dtype=f32, device=counted.device),
    ])


def stats_to_metrics(stats: torch.Tensor, *, entropy: bool = False,
                     cispo: bool = False) -> dict[str, torch.Tensor]:
    """stats[NUM_STATS] (sums over counted tokens) -> metrics dict of 0-d detached float32 tensors.

    kl, clip_ratio (region-clipped fraction: ratio < 1-eps_low with A < 0, or > 1+eps_high with
    A > 0, as TRL logs it), clip_ratio_low, clip_ratio_high, ratio_mean/min/max; all means over
    counted (mask != 0) tokens. Without counted tokens: kl and clip ratios 0, ratios 1.
    ``entropy``: add "entropy" (mean over counted tokens); ``cispo``: add "cispo_clip_ratio"
    (fraction of counted tokens with ratio > epsilon_high and A > 0, as TRL logs it).
    """
    s = stats.detach().to(torch.float32)
    count = s[STAT_COUNT]
    denom = count.clamp(min=1.0)
    has = count > 0
    one = torch.ones((), dtype=torch.float32, device=s.device)
    out = {
        "kl": s[STAT_KL] / denom,
        "clip_ratio": (s[STAT_CLIP_LOW] + s[STAT_CLIP_HIGH]) / denom,
        "clip_ratio_low": s[STAT_CLIP_LOW] / denom,
        "clip_ratio_high": s[STAT_CLIP_HIGH] / denom,
        "ratio_mean": torch.where(has, s[STAT_RATIO] / denom, one),
        "ratio_min": torch.where(has, s[STAT_RATIO_MIN], one),
        "ratio_max": torch.where(has, s[STAT_RATIO_MAX], one),
        "num_tokens": count,
    }
    if entropy:
        out["entropy"] = s[STAT_ENTROPY] / denom
    if cispo:
        out["cispo_clip_ratio"] = s[STAT_CISPO_CLIP] / denom
    return out


def merge_stats(total: torch.Tensor, part: torch.Tensor) -> None:
    """total += part in place (sums added, ratio min / max combined): chunked implementations."""
    total[:STAT_RATIO_MIN] += part[:STAT_RATIO_MIN]
    total[STAT_ENTROPY:] += part[STAT_ENTROPY:]
    total[STAT_RATIO_MIN] = torch.minimum(total[STAT_RATIO_MIN], part[STAT_RATIO_MIN])
    total[STAT_RATIO_MAX] = torch.maximum(total[STAT_RATIO_MAX], part[STAT_RATIO_MAX])
