"""The softmax of one GRPO row block without a max pass: logits shifted by each token's own
target logit, exponentiated block by block while the GEMM's output is still in cache.

linear_grpo_loss_chunked needs, per counted token (a column of the transposed [V, c] block),
S = sum_v exp(z_v - m) for some shift m, and e = exp(z - m) in the block. The classic shift is
the column max: one more pass over the block, and torch's amax over dim 0 of a [V, c] tensor
runs at ~4 GB/s here (38 ms of a 300 ms GEMM at V = 151,936, c = 272). Any finite m gives the
same softmax as long as S neither overflows nor loses the largest terms; m = z_y, the token's
target logit, is the natural one for sampled tokens:

    e_y = exp(z_y - z_y) ~ 1    -> S >= 1: nothing underflows, and log p_y = log e_y - log S
    S = exp(lse - z_y) = 1 / p_y -> S <= MAX_SUM unless the target has p_y < 2^-40 (~1e-12)

z_y comes from a [c, H] row-wise dot product (W's target rows), not from the GEMM, so e_y is
1 only to rounding: the log-prob uses log e_y, not 0. A block with any S above MAX_SUM
(including inf and NaN) is reported back, and its caller redoes that block with the max shift.
The bound keeps the rest of the call in range: the dH GEMM's entries are at most S max|W|, and
the gradient column scale a / S stays far above fp32's smallest normal.

The GEMM runs on vocab slices of at most SLICE_BYTES of output, each followed at once by its
exp and its share of S (a GEMV): the slice is read back from cache, not from memory.
"""
from __future__ import annotations

import torch

MAX_SUM = 2.0 ** 40          # S above this (p_y < 2^-40), 0, inf or NaN: the block takes the max shift
SLICE_BYTES = 4 * 2 ** 20    # fp32 output of one GEMM slice: about one core's L2 here


def target_logits(hidden_c, weight, bias, y, inv_t, dtype=torch.float32):
    """[c] z_y = (h . W[y] + b[y]) / T in ``dtype`` (the block's), one dot product per token;
    non-finite -> 0."""
    w_y = weight.index_select(0, y).to(dtype)
    z_y = (hidden_c.to(dtype) * w_y).sum(1)
    if bias is not None:
        z_y += bias.index_select(0, y).to(dtype)
    z_y *= inv_t
    return torch.where(torch.isfinite(z_y), z_y, torch.zeros_like(z_y))


def shifted_exp_into(e_t, weight, hidden_c, bias_col, shift, inv_t, lowp):
    """Fill e_t [V, c] (fp32) with exp((W h^T + b) / T - shift) and return S [c] = its column sums.

    weight [V, H], hidden_c [c, H] (compute dtype), bias_col [V, 1] and shift [c] in e_t's dtype
    (fp32; fp64 for fp64 inputs).
    """
    v, c = e_t.shape
    rows = max(256, SLICE_BYTES // (4 * c))
    ht = hidden_c.t()
    neg_shift = -shift
    sums = torch.zeros(c, dtype=e_t.dtype, device=e_t.device)
    ones = torch.ones(min(rows, v), dtype=e_t.dtype, device=e_t.device)
    for start in range(0, v, rows):
        stop = min(start + rows, v)
        block = e_t[start:stop]
        if lowp:     # the GEMM in the compute dtype, like an LM head; the rest in fp32
            block.copy_(weight[start:stop] @ ht)
        else:        # (addmm with a broadcast [1, c] shift copies it into the block first: slower)
            torch.mm(weight[start:stop], ht, out=block)
        if bias_col is not None:
            block.add_(bias_col[start:stop])
        torch.add(neg_shift, block, alpha=inv_t, out=block).exp_()   # one pass: z / T - shift
        sums.addmv_(block.t(), ones[:stop - start])
    return sums


def in_range(sums) -> bool:
    """True when every S is in (0, MAX_SUM] (NaN and inf are out of range; 0 only happens when a
    target's own logit is -inf, so that shift fell back to 0, and every other exp underflowed)."""
    return bool(((sums > 0) & (sums <= MAX_SUM)).all())
