"""linear_grpo_loss on torch: the chunked single-pass CPU (and CUDA-without-Triton)
implementation, twin of the Triton kernels in linear_grpo_loss.py (the oracle is
reference/grpo_loss.py: linear_grpo_loss_naive).

Loss AND gradients in one pass over token chunks (whole-vocabulary row blocks,
chunking.logits_chunk_rows), three GEMMs in total, never holding more than a [chunk, V] fp32
block of logits. The per-token maths is formulas.grpo_token_terms.
"""
from __future__ import annotations

import torch

from ..formulas import (
    NUM_STATS,
    STAT_LOSS,
    STAT_RATIO_MAX,
    STAT_RATIO_MIN,
    grpo_token_terms,
    merge_stats,
)
from .chunking import iter_chunks, logits_chunk_rows


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
    for start, stop in iter_chunks(n_sel, rows):
        idx = selected[start:stop]
        c = stop - start
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
        merge_stats(stats, chunk_stats)
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
