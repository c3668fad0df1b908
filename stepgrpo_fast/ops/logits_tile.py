"""The Triton building block both fused ops share: one fp32 tile of h @ W^T (+ b).

    logits_tile(...) -> fp32 [BLOCK_N, BLOCK_V] = h[rows] @ W[cols]^T (+ b[cols]),
    looping over H in BLOCK_H steps with tl.dot (fp32 accumulation). Rows/cols outside the
    masks load zeros; callers apply temperature and -inf padding themselves.

Imports without Triton (then ``logits_tile`` does not exist).
"""
from .triton_import import tl, triton  # None without Triton

if triton is not None:

    @triton.jit
    def logits_tile(h_ptr, w_ptr, b_ptr, rows, row_ok, cols, col_ok, H,
                    stride_hn, stride_hh, stride_wv, stride_wh,
                    HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
                    BLOCK_H: tl.constexpr, INPUT_PRECISION: tl.constexpr):
        # rows, cols: int64 offsets (N*H and V*H may pass 2**31)
        acc = tl.zeros([BLOCK_N, BLOCK_V], tl.float32)
        for k0 in range(0, H, BLOCK_H):
            offs_h = k0 + tl.arange(0, BLOCK_H)
            h_ok = offs_h < H
            h_tile = tl.load(h_ptr + rows[:, None] * stride_hn + offs_h[None, :] * stride_hh,
                             mask=row_ok[:, None] & h_ok[None, :], other=0.0)
            w_tile = tl.load(w_ptr + cols[:, None] * stride_wv + offs_h[None, :] * stride_wh,
                             mask=col_ok[:, None] & h_ok[None, :], other=0.0)
            acc = tl.dot(h_tile, tl.trans(w_tile), acc, input_precision=INPUT_PRECISION)
        if HAS_BIAS:
            acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        return acc
