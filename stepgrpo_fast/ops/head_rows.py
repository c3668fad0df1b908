"""Triton row passes over a chunk's fp32 [C, V] logits (the GEMM's output): no matmul, no
atomics, each program owns BLOCK_R whole rows and sweeps the vocabulary in BLOCK_V columns.

    _row_stats_kernel   s = (z + b) / T; online max / sum e^(s - max) / sum e^(s - max)(s - max)
                        (running max from -inf) -> lse, logp = s_y - lse, entropy (ENTROPY)
    _row_grad_kernel    p = exp(s - lse);  dZ = (g_l (onehot(y) - p) - g_e p (log p + H)) / T,
                        written in the compute dtype (the dH / dW GEMMs' operand)

Numerics: fp32 statistics; a -inf logit (bias entry) has e = 0 and contributes 0 to every sum
(never 0 * -inf: the log factor is replaced by 0 where e = 0, p = 0); columns past V load -inf and
are never stored. Rows are the chunk's counted tokens (compacted by the launcher), so every
target is in [0, V). The dZ pass writes its own buffer (no autotuning: the tiles are fixed per
architecture, ROW_TILES, and a launch touches nothing but its outputs).

Each launch is built by a plan function (stats_plan, grad_plan: ops/launch_plan.py), which the
AOT registry (gpu/launches.py) calls too. Imports without Triton (then no kernels exist).
"""
from __future__ import annotations

import torch

from ..utils import require_triton
from .launch_plan import LaunchPlan, Target, target_of
from .triton_import import tl, triton  # None without Triton

# (BLOCK_R rows, BLOCK_V columns, num_warps) per machine class: one row per program on a GPU
# (C programs, thousands per chunk), 2-D tiles in the interpreter (~2 ms per block iteration).
ROW_TILES = {"gpu": (1, 2048, 8), "interpreter": (16, 1024, 4)}


def row_tiles(target: Target) -> dict:
    br, bv, warps = ROW_TILES["gpu" if target.on_gpu else "interpreter"]
    return {"BLOCK_R": br, "BLOCK_V": bv, "num_warps": warps}


if triton is not None:

    @triton.jit
    def _scaled_tile(z_row, b_ptr, cols, col_ok, row_ok, inv_t, HAS_BIAS: tl.constexpr):
        """fp32 [BLOCK_R, BLOCK_V] tile of (z + b) / T; -inf outside V (and for padded rows)."""
        ok = row_ok[:, None] & col_ok[None, :]
        s = tl.load(z_row[:, None] + cols[None, :], mask=ok, other=float("-inf"))
        if HAS_BIAS:
            s += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        return s * inv_t

    @triton.jit
    def _row_stats_kernel(z_ptr, stride_z, b_ptr, tgt_ptr, lse_ptr, logp_ptr, ent_ptr, C, V,
                          inv_t, HAS_BIAS: tl.constexpr, ENTROPY: tl.constexpr,
                          BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        row_ok = rows < C
        z_row = z_ptr + rows.to(tl.int64) * stride_z
        tgt = tl.load(tgt_ptr + rows, mask=row_ok, other=0)
        run_max = tl.full([BLOCK_R], float("-inf"), tl.float32)
        run_sum = tl.zeros([BLOCK_R], tl.float32)
        run_sy = tl.zeros([BLOCK_R], tl.float32)         # sum e^(s - max) (s - max)
        s_tgt = tl.zeros([BLOCK_R], tl.float32)
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            col_ok = cols < V
            s = _scaled_tile(z_row, b_ptr, cols, col_ok, row_ok, inv_t, HAS_BIAS)
            new_max = tl.maximum(run_max, tl.max(s, axis=1))
            base = tl.where(new_max == float("-inf"), 0.0, new_max)   # all -inf so far: no NaN
            y = s - base[:, None]
            e = tl.exp(y)                                 # 0 at -inf logits and past V
            alpha = tl.where(run_max == float("-inf"), 0.0, tl.exp(run_max - base))
            if ENTROPY:
                shift = tl.where(run_max == float("-inf"), 0.0, run_max - base)
                tile_sy = tl.sum(e * tl.where(e > 0.0, y, 0.0), axis=1)
                run_sy = alpha * (run_sy + shift * run_sum) + tile_sy
            run_sum = alpha * run_sum + tl.sum(e, axis=1)
            run_max = new_max
            s_tgt += tl.sum(tl.where(cols[None, :] == tgt[:, None], s, 0.0), axis=1)
        log_sum = tl.log(tl.where(row_ok, run_sum, 1.0))
        lse = tl.where(row_ok, run_max, 0.0) + log_sum       # padded rows: 0, not -inf
        tl.store(lse_ptr + rows, lse, mask=row_ok)
        tl.store(logp_ptr + rows, tl.where(row_ok, s_tgt, 0.0) - lse, mask=row_ok)
        if ENTROPY:
            tl.store(ent_ptr + rows, log_sum - run_sy / tl.where(row_ok, run_sum, 1.0),
                     mask=row_ok)

    @triton.jit
    def _row_grad_kernel(z_ptr, stride_z, b_ptr, tgt_ptr, lse_ptr, g_logp_ptr, g_ent_ptr,
                         ent_ptr, dz_ptr, stride_dz, C, V, inv_t,
                         HAS_BIAS: tl.constexpr, HAS_GRAD_ENT: tl.constexpr,
                         BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        row_ok = rows < C
        rows64 = rows.to(tl.int64)
        z_row = z_ptr + rows64 * stride_z
        dz_row = dz_ptr + rows64 * stride_dz
        tgt = tl.load(tgt_ptr + rows, mask=row_ok, other=0)
        lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
        g_l = tl.load(g_logp_ptr + rows, mask=row_ok, other=0.0)
        if HAS_GRAD_ENT:
            g_e = tl.load(g_ent_ptr + rows, mask=row_ok, other=0.0)
            ent = tl.load(ent_ptr + rows, mask=row_ok, other=0.0)
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            col_ok = cols < V
            s = _scaled_tile(z_row, b_ptr, cols, col_ok, row_ok, inv_t, HAS_BIAS)
            log_p = s - lse[:, None]
            p = tl.exp(log_p)                             # 0 at -inf logits
            dz = tl.where(cols[None, :] == tgt[:, None], g_l[:, None], 0.0) - g_l[:, None] * p
            if HAS_GRAD_ENT:
                dz -= g_e[:, None] * p * tl.where(p > 0.0, log_p + ent[:, None], 0.0)
            tl.store(dz_row[:, None] + cols[None, :],
                     (dz * inv_t).to(dz_ptr.dtype.element_ty),
                     mask=row_ok[:, None] & col_ok[None, :])


def _bias_arg(bias, fallback):
    return bias.contiguous() if bias is not None else fallback


def stats_plan(logits, bias, targets, temperature, entropy: bool, *,
               target: Target | None = None) -> LaunchPlan:
    """_row_stats_kernel over logits [C, V] fp32 (row stride free, unit column stride), targets
    [C] int64 in [0, V). outputs = (lse, logp, entropy | None), fp32 [C] views of one buffer."""
    require_triton()
    target = target or target_of(logits.device)
    c, v = logits.shape
    tiles = row_tiles(target)
    out = torch.empty(3 if entropy else 2, c, dtype=torch.float32, device=logits.device)
    lse, logp = out[0], out[1]
    ent = out[2] if entropy else None
    args = (logits, logits.stride(0), _bias_arg(bias, logits), targets, lse, logp,
            ent if entropy else lse, c, v, 1.0 / float(temperature))
    flags = {"HAS_BIAS": bias is not None, "ENTROPY": bool(entropy),
             "BLOCK_R": tiles["BLOCK_R"], "BLOCK_V": tiles["BLOCK_V"]}
    return LaunchPlan(_row_stats_kernel, (triton.cdiv(c, tiles["BLOCK_R"]),), args, flags,
                      {"num_warps": tiles["num_warps"]}, outputs=(lse, logp, ent))


def grad_plan(logits, bias, targets, temperature, lse, g_logp, g_ent, ent, dz, *,
              target: Target | None = None) -> LaunchPlan:
    """_row_grad_kernel: dz [C, V] (compute dtype) from logits [C, V] fp32, per-row lse,
    g_logp = d loss / d logp [C] fp32 and, with an entropy gradient, g_ent and entropy [C]."""
    require_triton()
    target = target or target_of(logits.device)
    c, v = logits.shape
    tiles = row_tiles(target)
    has_ent = g_ent is not None
    args = (logits, logits.stride(0), _bias_arg(bias, logits), targets, lse, g_logp,
            g_ent if has_ent else g_logp, ent if has_ent else lse, dz, dz.stride(0), c, v,
            1.0 / float(temperature))
    flags = {"HAS_BIAS": bias is not None, "HAS_GRAD_ENT": has_ent,
             "BLOCK_R": tiles["BLOCK_R"], "BLOCK_V": tiles["BLOCK_V"]}
    return LaunchPlan(_row_grad_kernel, (triton.cdiv(c, tiles["BLOCK_R"]),), args, flags,
                      {"num_warps": tiles["num_warps"]}, outputs=(dz,))
