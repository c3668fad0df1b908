"""Triton path of linear_grpo_loss: the GRPO loss and its gradients straight from hidden states,
never more than a [C, V] chunk of logits, no atomics (twin of linear_grpo_loss_chunked.py).

Only counted tokens (weight != 0) are processed: M = counted tokens, taken in chunks of C
(ops/head_chunks.py: C from the [C, V] memory budget).

One pass (token-level options, the usual case): 3 GEMM-equivalents, gradients formed in the
forward. Per chunk:
    z = h_c W^T                       GEMM -> fp32 [C, V]
    _row_stats_kernel                 lse, logp (, entropy with an entropy bonus)
    policy_token_terms (torch, [C])   loss terms, g = d loss / d logp (formulas.py)
    _row_grad_kernel                  dZ = (g (onehot - p) + q p (log p + H)) / T, compute dtype
    dH_c = dZ W,  dW += dZ^T h_c      GEMMs accumulating in fp32;  db += sum dZ
Two passes (options that need every token's log-prob or entropy before any gradient: GSPO's
sequence-level ratio, the off-policy sequence mask, top_entropy_quantile < 1), and the whole
loss without gradients: the fused forward kernel of linear_logprobs (ops/linear_logprobs.py,
no [C, V] buffer) scores all counted tokens, token_coefficients_glue forms every coefficient on
[M] vectors, then (with gradients) the chunk loop runs as above minus the stats pass (4
GEMM-equivalents).

Row passes are launched from ops/head_rows.py's plan functions, the fused forward from
linear_logprobs.forward_plan (ops/launch_plan.py), which the AOT registry calls too.
"""
from __future__ import annotations

import torch

from ..formulas import (
    IGNORE_INDEX,
    NUM_STATS,
    STAT_ENTROPY,
    STAT_LOSS,
    STAT_RATIO_MAX,
    STAT_RATIO_MIN,
    PolicyOptions,
    entropy_bonus_weights,
    high_entropy_mask,
    merge_stats,
    policy_token_terms,
)
from ..utils import require_triton
from . import head_rows, launch_plan
from .chunking import iter_chunks
from .head_chunks import Buffers, chunk_rows, gemm
from .launch_plan import target_of
from .linear_logprobs import linear_logprobs_forward_triton
from .tiles import INTERPRETER_BLOCKS


def _fused_options(blocks, splits, num_warps, vocab: int) -> dict:
    """Tile options of the fused forward: ``blocks`` (BLOCK_N / BLOCK_V / BLOCK_H, num_stages),
    ``splits`` vocabulary splits (-> V_SPLIT columns), ``num_warps``; none = its defaults."""
    opts = {k: v for k, v in (blocks or {}).items()
            if k in ("BLOCK_N", "BLOCK_V", "BLOCK_H", "num_stages")}
    if num_warps:
        opts["num_warps"] = num_warps
    if splits:
        block_v = opts.setdefault("BLOCK_V", INTERPRETER_BLOCKS["BLOCK_V"])
        v_blocks = -(-vocab // block_v)
        opts["V_SPLIT"] = -(-v_blocks // max(1, int(splits))) * block_v
    return opts


def linear_grpo_loss_triton(hidden, weight, targets, weights, adv, old_logp, ref_logp, *, beta,
                            epsilon_low, epsilon_high, temperature=1.0, bias=None,
                            need_hidden_grad=True, need_weight_grad=True, need_bias_grad=True,
                            blocks=None, splits=None, num_warps=None, budget_bytes=None,
                            opts=None, mask=None, seq_len=None, scale=None, sampling=None,
                            entropy_coef=0.0, top_entropy_quantile=1.0):
    """Same contract as linear_grpo_loss_chunked.linear_grpo_loss_chunked, on Triton row passes
    and cuBLAS GEMMs.

    hidden [N,H], weight [V,H] (fp16/bf16/fp32, same dtype), targets [N] int64, weights / adv /
    old / ref [N] fp32 (or None). ``budget_bytes``: the [C, V] buffers' budget (default
    the device's Target.chunk_budget, head_chunks.default_budget). ``blocks`` / ``splits`` / ``num_warps``: tiles
    of the fused forward (two-pass options and the no-grad loss; tests pass large blocks to
    keep the interpreter fast). opts / mask / seq_len / scale / sampling / entropy_coef /
    top_entropy_quantile: as the chunked path.
    Returns (loss, dH [N,H] fp32 | None, dW [V,H] fp32 | None, db [V] fp32 | None, stats).
    """
    require_triton()
    if opts is None:
        opts = PolicyOptions(beta=beta, epsilon_low=epsilon_low, epsilon_high=epsilon_high,
                             use_bias_correction_kl=False)
    if hidden.dtype == torch.float64:
        hidden, weight = hidden.float(), weight.float()
        bias = None if bias is None else bias.float()
    hidden, weight = hidden.contiguous(), weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    f32 = (lambda t: None if t is None else t.to(torch.float32).contiguous())
    weights, adv, old_logp, ref_logp = f32(weights), f32(adv), f32(old_logp), f32(ref_logp)
    mask, scale, sampling = f32(mask), f32(scale), f32(sampling)
    targets = targets.to(torch.int64).contiguous()
    (n, h_dim), v, dev = hidden.shape, weight.shape[0], hidden.device
    need_db = bias is not None and need_bias_grad
    need_any = need_hidden_grad or need_weight_grad or need_db

    rows = torch.nonzero(weights != 0).squeeze(1).contiguous()
    m = rows.numel()
    d_h = torch.zeros(n, h_dim, dtype=torch.float32, device=dev) if need_hidden_grad else None
    d_w = (torch.empty if m else torch.zeros)(v, h_dim, dtype=torch.float32, device=dev) \
        if need_weight_grad else None
    d_b = torch.zeros(v, dtype=torch.float32, device=dev) if need_db else None
    if m == 0:
        stats = torch.zeros(NUM_STATS, dtype=torch.float32, device=dev)
        stats[STAT_RATIO_MIN], stats[STAT_RATIO_MAX] = float("inf"), float("-inf")
        return stats[0].clone(), d_h, d_w, d_b, stats

    want_ent = entropy_coef != 0.0
    two_pass = (not need_any) or opts.sequence_reduction or top_entropy_quantile < 1.0
    t_sel = targets.index_select(0, rows)
    h_sel = hidden.index_select(0, rows) if m < n else hidden
    common = {"weights": weights, "adv": adv, "old": old_logp, "ref": ref_logp, "mask": mask,
              "scale": scale, "sampling": sampling}
    if two_pass:      # every counted token's log-prob (and entropy) first: the fused forward
        has_ent = want_ent or top_entropy_quantile < 1.0
        logp, ent, lse = linear_logprobs_forward_triton(
            h_sel, weight, t_sel, bias, temperature, has_ent,
            **_fused_options(blocks, splits, num_warps, v))
        coef, q, stats = token_coefficients_glue(
            logp, ent, rows, weights, adv, old_logp, ref_logp, opts, mask=mask,
            seq_len=seq_len or n, n=n, scale=scale, sampling=sampling, entropy_coef=entropy_coef,
            top_entropy_quantile=top_entropy_quantile)
        loss = stats[STAT_LOSS].clone()
        if need_any:
            _gradient_chunks(h_sel, weight, bias, t_sel, rows, temperature, (lse, coef, q, ent),
                             None, d_h, d_w, d_b, budget_bytes, stats)
        return loss, d_h, d_w, d_b, stats

    stats = torch.zeros(NUM_STATS, dtype=torch.float32, device=dev)
    stats[STAT_RATIO_MIN], stats[STAT_RATIO_MAX] = float("inf"), float("-inf")
    m_flat = (weights != 0).to(torch.float32) if mask is None else mask
    q_all = m_flat * (float(entropy_coef) / m_flat.sum().clamp(min=1.0)) if want_ent else None
    one_pass = {"opts": opts, "m_flat": m_flat, "q_all": q_all, "inputs": common}
    loss = _gradient_chunks(h_sel, weight, bias, t_sel, rows, temperature, None, one_pass,
                            d_h, d_w, d_b, budget_bytes, stats)
    stats[STAT_LOSS] = loss.to(torch.float32)
    return loss.to(torch.float32), d_h, d_w, d_b, stats


def _gradient_chunks(h_sel, weight, bias, t_sel, rows, temperature, known, one_pass, d_h, d_w,
                     d_b, budget_bytes, stats):
    """The chunk loop over the M counted tokens (h_sel [M, H], t_sel [M], rows [M] their
    indices in [0, N)). ``known`` = (lse, coef, q | None, ent | None) [M] from the two-pass
    scoring, or None: then ``one_pass`` holds what the per-chunk stats pass and
    policy_token_terms need. Accumulates d_h (rows), d_w, d_b and, in one pass, ``stats``;
    returns the loss (float64 0-d; 0 with ``known``)."""
    m, v = t_sel.numel(), weight.shape[0]
    dev = h_sel.device
    budget = target_of(dev).chunk_budget if budget_bytes is None else int(budget_bytes)
    size = chunk_rows(m, v, h_sel.dtype, budget, with_grad=True)
    bufs = Buffers(size, v, h_sel.dtype, dev, with_grad=True)
    dh_c = torch.empty(size, h_sel.shape[1], dtype=torch.float32, device=dev) \
        if d_h is not None else None
    loss = torch.zeros((), dtype=torch.float64, device=dev)
    for start, stop in iter_chunks(m, size):
        c = stop - start
        z, dz = bufs.view(c)
        h_c, t_c, idx = h_sel[start:stop], t_sel[start:stop], rows[start:stop]
        gemm(h_c, weight.t(), z)
        if known is not None:
            lse, coef, q, ent = (None if x is None else x[start:stop].contiguous() for x in known)
        else:
            lse, coef, q, ent, part = _chunk_terms(z, bias, t_c, idx, temperature, one_pass)
            loss += part[STAT_LOSS].double()
            merge_stats(stats, part)
        g_ent = None if q is None else (-q).contiguous()
        launch_plan.launch(head_rows.grad_plan(z, bias, t_c, temperature, lse,
                                               coef.contiguous(), g_ent,
                                               ent if g_ent is not None else None, dz))
        if d_h is not None:
            gemm(dz, weight, dh_c[:c])
            d_h.index_copy_(0, idx, dh_c[:c])
        if d_w is not None:
            gemm(dz.t(), h_c, d_w, accumulate=start > 0)
        if d_b is not None:
            d_b += dz.sum(0, dtype=torch.float32)
    return loss


def _chunk_terms(z, bias, t_c, idx, temperature, one_pass):
    """One-pass chunk: the stats pass and the per-token GRPO maths on its C tokens.
    -> (lse, g = d loss / d logp, q | None, entropy | None, stats with the chunk's loss)."""
    want_ent = one_pass["q_all"] is not None
    plan = head_rows.stats_plan(z, bias, t_c, temperature, want_ent)
    launch_plan.launch(plan)
    lse, logp, ent = plan.outputs
    inp = one_pass["inputs"]
    pick = (lambda t: None if t is None else t.index_select(0, idx))
    m_c = pick(one_pass["m_flat"])
    loss_t, grad_t, part = policy_token_terms(
        logp, pick(inp["weights"]), pick(inp["adv"]), pick(inp["old"]), pick(inp["ref"]),
        one_pass["opts"], m=m_c, seq=None, n_seq=0, scale=pick(inp["scale"]),
        sampling=pick(inp["sampling"]))
    loss = loss_t.sum(dtype=torch.float64)
    q = None
    if want_ent:
        q = pick(one_pass["q_all"])
        loss = loss - (q * ent).sum(dtype=torch.float64)
        part[STAT_ENTROPY] = torch.where(m_c != 0, ent, 0.0).sum()
    part[STAT_LOSS] = loss.to(part.dtype)
    return lse, grad_t.to(torch.float32), q, ent, part


def token_coefficients_glue(logp, ent, rows, weights, adv, old_logp, ref_logp, opts, *, mask, seq_len, n,
                            scale, sampling, entropy_coef, top_entropy_quantile):
    """The per-token maths of the two-pass mode on the M counted tokens (``rows``, ascending)
    -> (d(loss)/d(logp) [M], entropy-bonus weights q [M] | None, stats [NUM_STATS] with the
    loss -- the bonus included -- at STAT_LOSS)."""
    pick = (lambda t: None if t is None else t.index_select(0, rows))
    m_sel = pick(mask) if mask is not None else torch.ones_like(logp)
    sc = pick(scale)
    ent_mask = None
    if top_entropy_quantile < 1.0:
        ent_mask = high_entropy_mask(ent, m_sel, top_entropy_quantile).to(logp.dtype)
        sc = ent_mask if sc is None else sc * ent_mask
    seq = torch.div(rows, int(seq_len), rounding_mode="floor")
    loss_t, grad_t, stats = policy_token_terms(
        logp, pick(weights), pick(adv), pick(old_logp), pick(ref_logp), opts, m=m_sel, seq=seq,
        n_seq=-(-n // int(seq_len)), scale=sc, sampling=pick(sampling))
    loss = loss_t.sum()
    q = None
    if ent is not None:
        stats[STAT_ENTROPY] = torch.where(m_sel != 0, ent, 0.0).sum()
        if entropy_coef != 0.0:
            q = entropy_bonus_weights(m_sel, ent_mask, entropy_coef, logp.dtype)
            loss = loss - (q * ent).sum()
    stats[STAT_LOSS] = loss
    return grad_t.to(torch.float32), q, stats


__all__ = ["IGNORE_INDEX", "linear_grpo_loss_triton", "token_coefficients_glue"]
