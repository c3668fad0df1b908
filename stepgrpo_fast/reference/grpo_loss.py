"""GRPO loss in plain torch: the test oracle, the benchmark baseline and the CPU implementation.

Notation (shapes): B sequences, T completion positions, N = B*T tokens, H hidden, V vocabulary.

    ratio_t = exp(logp_t - old_t)                      (old = logp.detach() when not given: ratio 1)
    pg_t    = -min(ratio_t A_t, clip(ratio_t, 1-eps_low, 1+eps_high) A_t)
    kl_t    = exp(ref_t - logp_t) - (ref_t - logp_t) - 1            (k3; only when beta > 0)
    l_t     = pg_t + beta kl_t
    loss    = sum_t w_t l_t      with the per-token weight w (see ``token_weights``)

Contents:
    group_advantages_reference   -- nan-aware group-relative advantages
    grpo_loss_reference          -- the formula above with autograd (oracle)
    linear_grpo_loss_naive       -- materialises [N, V] logits, then grpo_loss_reference (oracle, baseline)
    token_weights, grpo_token_terms, stats_to_metrics -- closed-form pieces shared by every implementation
    linear_grpo_loss_chunked     -- the CPU implementation: loss AND gradients in one pass over token
                                    chunks, three GEMMs in total, never holding more than a
                                    [chunk, V] fp32 block of logits
"""
from __future__ import annotations

import torch

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo")
ADVANTAGE_SCALES = ("group", "batch", "none")

# Layout of the statistics vector every implementation returns next to the loss.
STAT_LOSS, STAT_KL, STAT_CLIP_LOW, STAT_CLIP_HIGH, STAT_RATIO, STAT_COUNT, STAT_RATIO_MIN, STAT_RATIO_MAX = range(8)
NUM_STATS = 8

# fp32 bytes allowed for one [chunk, V] block of logits in the chunked CPU path.
LOGITS_CHUNK_BYTES = 56 * 2**20


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


# ------------------------------------------------------------------------ shared closed form
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
                           loss_type="grpo", max_completion_length=None, bias=None):
    """Materialise logits [N, V], log_softmax, gather, then ``grpo_loss_reference``.

    hidden [B,T,H], weight [V,H], targets [B,T] (any value where mask == 0). Computes in the dtype of
    ``hidden`` when it is float64, else float32.
    """
    dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    logits = hidden.to(dtype) @ weight.to(dtype).t()
    if bias is not None:
        logits = logits + bias.to(dtype)
    logits = logits / temperature
    safe_targets = torch.where(mask != 0, targets, torch.zeros_like(targets)).long()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, safe_targets[..., None]).squeeze(-1)
    return grpo_loss_reference(logp, advantages, mask, old_logp=old_logp, ref_logp=ref_logp, beta=beta,
                               epsilon_low=epsilon_low, epsilon_high=epsilon_high, loss_type=loss_type,
                               max_completion_length=max_completion_length)


# --------------------------------------------------------------------- chunked CPU implementation
def logits_chunk_rows(vocab_size: int, budget_bytes: int | None = None) -> int:
    """Rows of a [rows, V] fp32 logits block that fit ``budget_bytes`` (default LOGITS_CHUNK_BYTES;
    at least 8, a multiple of 8)."""
    rows = (budget_bytes or LOGITS_CHUNK_BYTES) // (4 * max(vocab_size, 1))
    return max(8, rows - rows % 8)


def linear_grpo_loss_chunked(hidden, weight, targets, weights, adv, old_logp, ref_logp, *, beta,
                             epsilon_low, epsilon_high, temperature=1.0, bias=None, need_hidden_grad=True,
                             need_weight_grad=True, need_bias_grad=True, chunk_rows=None):
    """Loss and gradients of the GRPO loss from hidden states, one pass, three GEMMs.

    hidden [N,H], weight [V,H], targets [N] int64, weights [N] float32 (``token_weights``, flattened),
    adv / old_logp / ref_logp [N] float32 or None. Only tokens with weight != 0 are computed (their
    targets must be in [0, V)). For each chunk of those tokens:
        z  = (h W^T + b) / T                  GEMM 1, into one reused [V, chunk] fp32 buffer
        lse, logp; c = dloss/dlogp            closed form, per token
        dZ = c/T * (onehot(y) - softmax(z))   in place in the same buffer
        dH[chunk] = dZ W                      GEMM 2
        dW += dZ^T h                          GEMM 3, into one fp32 [V,H] buffer
    Returns (loss 0-d fp32, dH [N,H] fp32 or None, dW [V,H] fp32 or None, db [V] fp32 or None,
    stats [NUM_STATS]).
    """
    n, h_dim = hidden.shape
    v = weight.shape[0]
    device = hidden.device
    inv_t = 1.0 / float(temperature)
    compute_dtype = hidden.dtype
    lowp = compute_dtype != torch.float32 and compute_dtype != torch.float64
    acc_dtype = torch.float64 if compute_dtype == torch.float64 else torch.float32
    token_dtype = acc_dtype

    selected = torch.nonzero(weights != 0).squeeze(1)
    n_sel = selected.numel()
    alloc_h = torch.empty if n_sel == n else torch.zeros  # rows of uncounted tokens stay 0
    alloc_w = torch.empty if n_sel > 0 else torch.zeros   # the first chunk overwrites dW
    d_hidden = alloc_h(n, h_dim, dtype=acc_dtype, device=device) if need_hidden_grad else None
    d_weight = alloc_w(v, h_dim, dtype=acc_dtype, device=device) if need_weight_grad else None
    d_bias = torch.zeros(v, dtype=acc_dtype, device=device) if (bias is not None and need_bias_grad) else None
    stats = torch.zeros(NUM_STATS, dtype=torch.float32, device=device)
    stats[STAT_RATIO_MIN], stats[STAT_RATIO_MAX] = float("inf"), float("-inf")
    if n_sel == 0:
        return torch.zeros((), dtype=acc_dtype, device=device), d_hidden, d_weight, d_bias, stats

    rows = min(chunk_rows or logits_chunk_rows(v), n_sel)
    # Logits are held transposed, [V, chunk]: W @ h^T and W^T @ dZ^T run faster than the
    # row-major forms for small chunks with MKL (measured here), and dW += dZ^T h needs no transpose.
    buffer = torch.empty(v, rows, dtype=acc_dtype, device=device)
    h_t_buffer = torch.empty(h_dim, rows, dtype=acc_dtype, device=device) if need_hidden_grad else None
    bias_col = bias.to(acc_dtype)[:, None] if bias is not None else None
    loss_acc = torch.zeros((), dtype=torch.float64, device=device)
    pick = (lambda t, i: None if t is None else t.index_select(0, i))
    # A contiguous run of selected tokens (e.g. an all-ones mask) is sliced, otherwise gathered per chunk.
    contiguous = bool((selected[-1] - selected[0] + 1) == n_sel)
    first = int(selected[0])
    for start in range(0, n_sel, rows):
        idx = selected[start:start + rows]
        c = idx.numel()
        h_c = hidden[first + start:first + start + c] if contiguous else hidden.index_select(0, idx)
        z_t = buffer.view(-1)[:v * c].view(v, c)  # contiguous, also for the last, shorter chunk
        # GEMM 1: z^T = (W h^T + b) / T, bias and 1/T folded into addmm's beta/alpha.
        if lowp:
            z_t.copy_(weight @ h_c.t())
            if bias_col is not None:
                z_t.add_(bias_col)
            if inv_t != 1.0:
                z_t.mul_(inv_t)
        elif bias_col is not None:
            torch.addmm(bias_col, weight, h_c.t(), beta=inv_t, alpha=inv_t, out=z_t)
        else:
            torch.mm(weight, h_c.t(), out=z_t)
            if inv_t != 1.0:
                z_t.mul_(inv_t)
        y = targets.index_select(0, idx)[None, :]
        target_logit = z_t.gather(0, y).squeeze(0)
        col_max = z_t.amax(0, keepdim=True)
        z_t.sub_(col_max).exp_()
        sum_exp = z_t.sum(0)
        logp = (target_logit - col_max.squeeze(0) - sum_exp.log()).to(token_dtype)

        loss_t, grad_t, chunk_stats = grpo_token_terms(logp, weights.index_select(0, idx), pick(adv, idx),
                                                       pick(old_logp, idx), pick(ref_logp, idx), beta,
                                                       epsilon_low, epsilon_high)
        loss_acc += loss_t.sum(dtype=torch.float64)
        _merge_stats(stats, chunk_stats)
        if not (need_hidden_grad or need_weight_grad or d_bias is not None):
            continue
        # dZ^T = a * (onehot - p), a = c / T, p = exp(z - max) / sum_exp: in place.
        a = grad_t.to(acc_dtype) * inv_t
        z_t.mul_((-a / sum_exp)[None, :])
        z_t.scatter_add_(0, y, a[None, :])
        if need_hidden_grad:  # GEMM 2: dH^T = W^T dZ^T
            d_h_t = h_t_buffer.view(-1)[:h_dim * c].view(h_dim, c)
            if lowp:
                d_h_t.copy_(weight.t() @ z_t.to(compute_dtype))
            else:
                torch.mm(weight.t(), z_t, out=d_h_t)
            if contiguous:
                d_hidden[first + start:first + start + c].copy_(d_h_t.t())
            else:
                d_hidden.index_copy_(0, idx, d_h_t.t())
        if need_weight_grad:  # GEMM 3: dW += dZ^T h (the first chunk writes dW: no zero-fill pass)
            h_acc = h_c.to(acc_dtype) if lowp else h_c
            if start == 0:
                torch.mm(z_t, h_acc, out=d_weight)
            else:
                d_weight.addmm_(z_t, h_acc)
        if d_bias is not None:
            d_bias.add_(z_t.sum(1))
    stats[STAT_LOSS] = loss_acc.to(torch.float32)
    return loss_acc.to(acc_dtype), d_hidden, d_weight, d_bias, stats


def _merge_stats(total: torch.Tensor, part: torch.Tensor) -> None:
    total[:STAT_RATIO_MIN] += part[:STAT_RATIO_MIN]
    total[STAT_RATIO_MIN] = torch.minimum(total[STAT_RATIO_MIN], part[STAT_RATIO_MIN])
    total[STAT_RATIO_MAX] = torch.maximum(total[STAT_RATIO_MAX], part[STAT_RATIO_MAX])
