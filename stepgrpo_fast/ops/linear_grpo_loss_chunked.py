"""linear_grpo_loss on torch: the chunked single-pass CPU (and CUDA-without-Triton)
implementation, twin of the Triton kernels in linear_grpo_loss.py (the oracle is
reference/grpo_loss.py: linear_grpo_loss_naive).

Loss AND gradients in one pass over token chunks (whole-vocabulary row blocks,
chunking.logits_chunk_rows), three GEMMs in total, never holding more than a [chunk, V] fp32
block of logits. The per-token maths is formulas.policy_token_terms.

Options that need a per-sequence reduction before the token gradients (GSPO's sequence-level
ratio, the off-policy sequence mask) cut the chunks on sequence boundaries: a chunk holds whole
sequences, so the reduction runs between GEMM 1 and the dZ step of that chunk (no extra GEMM).
A sequence with more counted tokens than the row budget gets a chunk of its own, as long as
the sequence: the [rows, V] buffer grows to max(row budget, longest sequence) rows (4 V L bytes,
e.g. 622 MB for L = 1024 at V = 151,936) -- memory, not time. top_entropy_quantile < 1 needs the
quantile of all the call's entropies before any gradient: one extra GEMM-1 pass (entropy only).
"""
from __future__ import annotations

import torch

from ..formulas import (
    NUM_STATS,
    STAT_ENTROPY,
    STAT_LOSS,
    STAT_RATIO_MAX,
    STAT_RATIO_MIN,
    PolicyOptions,
    high_entropy_mask,
    merge_stats,
    policy_token_terms,
)
from . import workspace
from .chunking import iter_chunks, logits_chunk_rows
from .target_shift import in_range, shifted_exp_into, target_logits


def _sequence_chunks(seq: torch.Tensor, rows: int) -> tuple[list[tuple[int, int]], int]:
    """Cut the selected tokens (sequence ids ``seq``, ascending) into runs of whole sequences of
    at most max(rows, longest sequence) tokens. -> ([(start, stop)], rows used)."""
    _, counts = torch.unique_consecutive(seq, return_counts=True)
    counts = counts.tolist()
    rows = max(rows, max(counts))
    bounds, start, size = [], 0, 0
    for c in counts:
        if size + c > rows:
            bounds.append((start, start + size))
            start, size = start + size, 0
        size += c
    bounds.append((start, start + size))
    return bounds, rows


def _logits_into(z_t, weight, h_c, bias_col, inv_t, lowp, compute_dtype):
    """GEMM 1: z^T = (W h^T + b) / T into the [V, c] buffer, bias and 1/T folded into addmm."""
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


def linear_grpo_loss_chunked(hidden, weight, targets, weights, adv, old_logp, ref_logp, *, beta,
                             epsilon_low, epsilon_high, temperature=1.0, bias=None, need_hidden_grad=True,
                             need_weight_grad=True, need_bias_grad=True, chunk_rows=None, opts=None,
                             mask=None, seq_len=None, scale=None, sampling=None, entropy_coef=0.0,
                             top_entropy_quantile=1.0):
    """Loss and gradients of the GRPO loss from hidden states, one pass, three GEMMs.

    hidden [N,H], weight [V,H], targets [N] int64, weights [N] float32 (``token_weights``, flattened),
    adv / old_logp / ref_logp [N] float32 or None. Only tokens with weight != 0 are computed (their
    targets must be in [0, V)). For each chunk of those tokens:
        z  = (h W^T + b) / T                  GEMM 1, into one reused [V, chunk] fp32 buffer
                                              (kept between calls on the CPU: workspace.py)
        e = exp(z - z_y), S = sum e           shifted by each token's target logit, per vocab
                                              slice right after its GEMM: no max pass
                                              (target_shift.py; a chunk whose S is out of
                                              range, or an entropy option: the column max)
        lse, logp (, entropy); c = dloss/dlogp  closed form, per token (policy_token_terms)
        dZ = c/T (onehot(y) - p) + q/T p (z - sum p z)   in the same buffer (the entropy keeps
                                              exp(z - max) in a second buffer). Without entropy
                                              dZ^T = (e - S onehot) diag(-c / (T S)): only the
                                              target entries are written, the column scale goes
                                              onto the [chunk, H] sides of GEMMs 2 and 3
        dH[chunk] = dZ W                      GEMM 2, written straight into dH's rows
        dW += dZ^T h                          GEMM 3, into one zero-filled fp32 [V,H] buffer
    ``opts`` (formulas.PolicyOptions; None: the legacy maths from beta / epsilons, uncorrected
    KL), mask [N] (mask values), seq_len (T: sequence id = index // T), scale / sampling [N] or
    None, entropy_coef (q = coef * em / sum em with em = mask * entropy mask),
    top_entropy_quantile (< 1: the high-entropy mask, one extra GEMM-1 pass).
    Returns (loss 0-d fp32, dH [N,H] fp32 or None, dW [V,H] fp32 or None, db [V] fp32 or None,
    stats [NUM_STATS]).
    """
    if opts is None:
        opts = PolicyOptions(beta=beta, epsilon_low=epsilon_low, epsilon_high=epsilon_high,
                             use_bias_correction_kl=False)
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
    d_hidden = alloc_h(n, h_dim, dtype=acc_dtype, device=device) if need_hidden_grad else None
    # dW starts zero-filled and every chunk accumulates into it: the fill faults its fresh pages
    # in at memset speed; the first chunk's GEMM writing it directly paid ~2x that (measured here:
    # 452 ms for empty + mm against 351 ms for zeros + addmm_ at V = 151,936, H = 896, 272 rows)
    d_weight = torch.zeros(v, h_dim, dtype=acc_dtype, device=device) if need_weight_grad else None
    d_bias = torch.zeros(v, dtype=acc_dtype, device=device) if (bias is not None and need_bias_grad) else None
    stats = torch.zeros(NUM_STATS, dtype=torch.float32, device=device)
    stats[STAT_RATIO_MIN], stats[STAT_RATIO_MAX] = float("inf"), float("-inf")
    if n_sel == 0:
        return torch.zeros((), dtype=acc_dtype, device=device), d_hidden, d_weight, d_bias, stats

    m_flat = (weights != 0).to(acc_dtype) if mask is None else mask.to(acc_dtype)
    seq_all = None
    rows = min(chunk_rows or logits_chunk_rows(v), n_sel)
    if opts.sequence_reduction:
        seq_all = torch.div(selected, int(seq_len or n), rounding_mode="floor")
        bounds, rows = _sequence_chunks(seq_all, rows)
    else:
        bounds = list(iter_chunks(n_sel, rows))
    # Logits are held transposed, [V, chunk]: W @ h^T runs faster than h @ W^T with MKL (measured
    # here), dW += dZ^T h needs no transpose, and dH = (dZ^T)^T W writes straight into dH's rows.
    # (kept between calls on the CPU: ops/workspace.py; the entropy's second buffer behind it)
    two = entropy_coef != 0.0 or top_entropy_quantile < 1.0
    space = workspace.block((2 if two else 1) * v * rows, acc_dtype, device)
    buffer = space[:v * rows].view(v, rows)
    bias_col = bias.to(acc_dtype)[:, None] if bias is not None else None
    # a -inf bias entry has e = 0 and z' = -inf: e z' is NaN there and must count 0
    minus_inf = bias is not None and bool(torch.isneginf(bias).any())
    loss_acc = torch.zeros((), dtype=torch.float64, device=device)
    pick = (lambda t, i: None if t is None else t.index_select(0, i))
    # A contiguous run of selected tokens (e.g. an all-ones mask) is sliced, otherwise gathered per chunk.
    contiguous = bool((selected[-1] - selected[0] + 1) == n_sel)
    first = int(selected[0])
    h_buffer = torch.empty(rows, h_dim, dtype=acc_dtype, device=device) \
        if (need_hidden_grad and not contiguous) else None

    want_ent = entropy_coef != 0.0
    # The entropy keeps z' = z - max in the buffer and puts e = exp(z') into a second one.
    e_buffer = space[v * rows:].view(v, rows) if two else None

    def chunk_logits(start, stop, keep_shifted=False):
        idx = selected[start:stop]
        c = stop - start
        h_c = hidden[first + start:first + start + c] if contiguous else hidden.index_select(0, idx)
        z_t = buffer.view(-1)[:v * c].view(v, c)  # contiguous, also for the last, shorter chunk
        y = targets.index_select(0, idx)[None, :]
        if not keep_shifted:  # shift by the target logit, no max pass (ops/target_shift.py)
            shift = target_logits(h_c, weight, bias, y[0], inv_t, acc_dtype)
            sum_exp = shifted_exp_into(z_t, weight, h_c, bias_col, shift, inv_t, lowp)
            if in_range(sum_exp):
                logp = (z_t.gather(0, y).squeeze(0).log() - sum_exp.log()).to(token_dtype)
                return idx, c, h_c, z_t, y, sum_exp, logp, z_t
        _logits_into(z_t, weight, h_c, bias_col, inv_t, lowp, compute_dtype)
        target_logit = z_t.gather(0, y).squeeze(0)
        col_max = z_t.amax(0, keepdim=True)
        if keep_shifted:
            e = torch.exp(z_t.sub_(col_max), out=e_buffer.view(-1)[:v * c].view(v, c))
        else:
            e = z_t.sub_(col_max).exp_()
        sum_exp = e.sum(0)
        logp = (target_logit - col_max.squeeze(0) - sum_exp.log()).to(token_dtype)
        return idx, c, h_c, z_t, y, sum_exp, logp, e

    def entropy_of(z_t, e, sum_exp):
        """z_t: z' -> e z' in place; -> (zbar' = sum(e z') / S, H = log S - zbar')."""
        z_t.mul_(e)
        if minus_inf:
            z_t.nan_to_num_(nan=0.0, posinf=float("inf"), neginf=float("-inf"))
        zbar = z_t.sum(0) / sum_exp
        return zbar, sum_exp.log() - zbar

    scale_all = scale
    ent_prepass = None
    if top_entropy_quantile < 1.0:  # the extra GEMM-1 pass: entropies of every counted token
        ent_prepass = torch.empty(n_sel, dtype=acc_dtype, device=device)
        for start, stop in bounds:
            _, _, _, z_t, _, sum_exp, _, e = chunk_logits(start, stop, keep_shifted=True)
            ent_prepass[start:stop] = entropy_of(z_t, e, sum_exp)[1].to(acc_dtype)
        m_sel = m_flat.index_select(0, selected)
        keep = high_entropy_mask(ent_prepass, m_sel, top_entropy_quantile).to(acc_dtype)
        ent_full = torch.zeros(n, dtype=acc_dtype, device=device).index_copy_(0, selected, keep)
        scale_all = ent_full if scale_all is None else scale_all.to(acc_dtype) * ent_full
        em = m_flat * ent_full
        stats[STAT_ENTROPY] = (ent_prepass * (m_sel != 0)).sum().to(torch.float32)
    else:
        em = m_flat
    q_all = em * (float(entropy_coef) / em.sum().clamp(min=1.0)) if want_ent else None

    for start, stop in bounds:
        idx, c, h_c, z_t, y, sum_exp, logp, e = chunk_logits(start, stop, keep_shifted=want_ent)
        seq_c, n_seq = None, 0
        if seq_all is not None:
            s_c = seq_all[start:stop]
            seq_c = s_c - s_c[0]
            n_seq = int(s_c[-1] - s_c[0]) + 1
        loss_t, grad_t, chunk_stats = policy_token_terms(
            logp, weights.index_select(0, idx), pick(adv, idx), pick(old_logp, idx), pick(ref_logp, idx),
            opts, m=m_flat.index_select(0, idx), seq=seq_c, n_seq=n_seq, scale=pick(scale_all, idx),
            sampling=pick(sampling, idx))
        loss_acc += loss_t.sum(dtype=torch.float64)
        if want_ent:
            zbar, ent = entropy_of(z_t, e, sum_exp)   # z_t now holds e z'
            q = q_all.index_select(0, idx)
            loss_acc -= (q * ent).sum(dtype=torch.float64)
            if ent_prepass is None:
                chunk_stats[STAT_ENTROPY] = (ent * (m_flat.index_select(0, idx) != 0)).sum().to(torch.float32)
        merge_stats(stats, chunk_stats)
        if not (need_hidden_grad or need_weight_grad or d_bias is not None):
            continue
        a = grad_t.to(acc_dtype) * inv_t
        if want_ent:  # dZ^T = a (onehot - p) + b p (z' - zbar'), b = q / T, p = e / S, in place:
            b = q * inv_t     # (b / S) e z' + (-(a + b zbar') / S) e, then + a onehot
            z_t.mul_((b / sum_exp)[None, :])
            z_t.addcmul_(e, (-(a + b * zbar) / sum_exp)[None, :])
            z_t.scatter_add_(0, y, a[None, :])
            col = None
        else:  # dZ^T = a onehot - (a / S) e = (e - S onehot) diag(col), col = -a / S: only the
            col = -a / sum_exp   # c target entries change here, col scales the [c, H] sides of
            z_t.scatter_add_(0, y, -sum_exp[None, :])   # GEMMs 2 and 3 (no pass over e)
        if need_hidden_grad:  # GEMM 2: dH = dZ W (z_t^T W: the faster MKL form, straight into dH)
            d_h = d_hidden[first + start:first + start + c] if contiguous else \
                h_buffer.view(-1)[:c * h_dim].view(c, h_dim)
            if lowp:
                d_h.copy_(z_t.t().to(compute_dtype) @ weight)
            else:
                torch.mm(z_t.t(), weight, out=d_h)
            if col is not None:
                d_h.mul_(col[:, None])
            if not contiguous:
                d_hidden.index_copy_(0, idx, d_h)
        if need_weight_grad:  # GEMM 3: dW += dZ^T h
            h_acc = h_c.to(acc_dtype) if lowp else h_c
            d_weight.addmm_(z_t, h_acc if col is None else h_acc * col[:, None])
        if d_bias is not None:
            if col is None:
                d_bias.add_(z_t.sum(1))
            else:
                d_bias.addmv_(z_t, col)
    stats[STAT_LOSS] = loss_acc.to(torch.float32)
    return loss_acc.to(acc_dtype), d_hidden, d_weight, d_bias, stats
