"""Triton: the GRPO loss and its gradients straight from hidden states, no [N, V] logits.

Only counted tokens (weight != 0) are processed: the launcher compacts their row indices, so
masked padding costs nothing. M = counted tokens, tokens always on grid axis 0.

  1. _lse_partial_kernel   grid (M/BLOCK_N, SPLITS): tiles z = (h W^T + b) / T over a slice of
                           the vocabulary with an online max / sum-exp (running max starts at -inf)
                           and picks up the target logit. SPLITS > 1 splits V across programs so a
                           small M still fills the GPU; partials are [SPLITS, M].
  2. _token_coef_kernel    grid (M/BLOCK,): merges the partials -> lse, logp; applies the GRPO
                           maths (ops/grpo_loss.py:grpo_token_math) -> the loss coefficient
                           coef = d(loss)/d(logp) / T per token, and per-block loss/metric partials.
                           For the options its maths does not cover (sequence level, delta, cispo,
                           sapo, bias-corrected KL, masks, IS ratio, entropy) torch glue on the
                           [M] vectors replaces it (token_coefficients_glue: formulas.py).
  3. _grad_tile_kernel     grid (M/BLOCK_N, V/BLOCK_V): recomputes its logits tile, forms
                           dZ = coef * (onehot(y) - softmax(z)) (+ q p (z - zbar) with HAS_ENT,
                           the entropy bonus; kernel 1 then carries sum e^(z-max) (z-max) too)
                           in registers, then per H block
                           dH[rows] += dZ W and dW[cols] += dZ^T h via fp32 atomics (db likewise).

Why atomics for dW (and dH) rather than a separate kernel over vocab blocks: a vocab-block dW
kernel would have to recompute every logits tile once more (5 GEMM-sized passes instead of 4) and
its programs own a [BLOCK_V, H] fp32 accumulator, too large for registers at H ~ 900-4096, so it
would round-trip dW through global memory anyway. With the 2-D tile grid the one recompute feeds
both dH and dW while the tile is in registers, and the grid has (M/BLOCK_N)(V/BLOCK_V) programs
(thousands for Qwen's V), which keeps every SM busy even for short batches. Cost: fp32 atomic
traffic of (M/BLOCK_N) V H + (V/BLOCK_V) M H adds and a run-to-run order of summation that is not
bit-deterministic.

Each launch is built by a plan function (lse_plan, token_coef_plan, grad_plan:
ops/launch_plan.py), which the AOT registry (gpu/launches.py) calls too.
"""
from __future__ import annotations

import torch

from ..formulas import (
    KERNEL_STATS,
    NUM_STATS,
    STAT_ENTROPY,
    STAT_LOSS,
    STAT_RATIO_MAX,
    STAT_RATIO_MIN,
    PolicyOptions,
    entropy_bonus_weights,
    high_entropy_mask,
    policy_token_terms,
)
from ..utils import require_triton
from . import launch_plan
from .grpo_loss import reduce_stats
from .launch_plan import LaunchPlan, Target, target_of
from .tiles import (  # noqa: F401 - the tile policy, re-exported for the launch registry
    DEFAULT_BLOCKS,
    GPU_BLOCKS,
    gpu_blocks,
    num_sms,
    token_coef_warps,
    vocab_splits,
)
from .triton_import import tl, triton  # None without Triton

if triton is not None:
    from .grpo_loss import grpo_token_math, load_token_inputs, store_token_stats
    from .logits_tile import logits_tile

    @triton.jit
    def _logits_tile(h_ptr, w_ptr, b_ptr, rows, row_ok, cols, col_ok, H, inv_t,
                     HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
                     BLOCK_H: tl.constexpr, INPUT_PRECISION: tl.constexpr):
        """fp32 [BLOCK_N, BLOCK_V] tile of (h[rows] W[cols]^T + b[cols]) / T; -inf outside V."""
        acc = logits_tile(h_ptr, w_ptr, b_ptr, rows, row_ok, cols, col_ok, H, H, 1, H, 1,
                          HAS_BIAS, BLOCK_N, BLOCK_V, BLOCK_H, INPUT_PRECISION)
        acc = acc * inv_t
        return tl.where(col_ok[None, :], acc, float("-inf"))

    @triton.jit
    def _lse_partial_kernel(h_ptr, w_ptr, b_ptr, rows_ptr, y_ptr, max_ptr, sum_ptr, tgt_ptr, sz_ptr,
                            M, V, H, inv_t, blocks_per_split,
                            HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
                            BLOCK_H: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                            HAS_ENT: tl.constexpr):
        pid_m = tl.program_id(0)
        split = tl.program_id(1)
        offs_m = pid_m * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = offs_m < M
        rows = tl.load(rows_ptr + offs_m, mask=row_ok, other=0).to(tl.int64)
        y = tl.load(y_ptr + rows, mask=row_ok, other=-1)
        run_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)
        run_sum = tl.zeros((BLOCK_N,), tl.float32)
        target = tl.zeros((BLOCK_N,), tl.float32)
        run_sz = tl.zeros((BLOCK_N,), tl.float32)  # sum exp(z - max) (z - max), HAS_ENT only
        v_start = split * blocks_per_split * BLOCK_V
        v_stop = tl.minimum(v_start + blocks_per_split * BLOCK_V, V)
        for v0 in range(v_start, v_stop, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            col_ok = cols < v_stop
            z = _logits_tile(h_ptr, w_ptr, b_ptr, rows, row_ok, cols.to(tl.int64), col_ok, H, inv_t,
                             HAS_BIAS, BLOCK_N, BLOCK_V, BLOCK_H, INPUT_PRECISION)
            new_max = tl.maximum(run_max, tl.max(z, axis=1))
            alpha = tl.exp(run_max - new_max)
            e = tl.exp(z - new_max[:, None])
            if HAS_ENT:  # rebase the running sum of e (z - max) on the new max (online entropy)
                shift = tl.where(run_max == float("-inf"), 0.0, run_max - new_max)
                ez = tl.where(col_ok[None, :], e * (z - new_max[:, None]), 0.0)
                run_sz = alpha * (run_sz + shift * run_sum) + tl.sum(ez, axis=1)
            run_sum = run_sum * alpha + tl.sum(e, axis=1)
            run_max = new_max
            target += tl.sum(tl.where(cols[None, :] == y[:, None], z, 0.0), axis=1)
        out = split.to(tl.int64) * M + offs_m
        tl.store(max_ptr + out, run_max, mask=row_ok)
        tl.store(sum_ptr + out, run_sum, mask=row_ok)
        tl.store(tgt_ptr + out, target, mask=row_ok)
        if HAS_ENT:
            tl.store(sz_ptr + out, run_sz, mask=row_ok)

    @triton.jit
    def _token_coef_kernel(max_ptr, sum_ptr, tgt_ptr, rows_ptr, w_ptr, adv_ptr, old_ptr, ref_ptr,
                           lse_ptr, coef_ptr, stats_ptr, M, SPLITS, beta, eps_low, eps_high, inv_t,
                           HAS_OLD: tl.constexpr, HAS_REF: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        ok = offs < M
        big_max = tl.full((BLOCK,), float("-inf"), tl.float32)
        for s in range(SPLITS):
            big_max = tl.maximum(big_max, tl.load(max_ptr + s * M + offs, mask=ok, other=float("-inf")))
        big_max = tl.where(ok, big_max, 0.0)
        total = tl.zeros((BLOCK,), tl.float32)
        target = tl.zeros((BLOCK,), tl.float32)
        for s in range(SPLITS):
            m_s = tl.load(max_ptr + s * M + offs, mask=ok, other=float("-inf"))
            total += tl.load(sum_ptr + s * M + offs, mask=ok, other=0.0) * tl.exp(m_s - big_max)
            target += tl.load(tgt_ptr + s * M + offs, mask=ok, other=0.0)
        lse = big_max + tl.log(tl.where(ok, total, 1.0))
        logp = target - lse
        rows = tl.load(rows_ptr + offs, mask=ok, other=0).to(tl.int64)
        w, adv, old, ref = load_token_inputs(w_ptr, adv_ptr, old_ptr, ref_ptr, rows, ok, logp,
                                             HAS_OLD, HAS_REF)
        loss, grad, kl, low_f, high_f, ratio, counted = grpo_token_math(
            logp, old, ref, adv, w, beta, eps_low, eps_high, HAS_OLD, HAS_REF)
        tl.store(lse_ptr + offs, lse, mask=ok)
        tl.store(coef_ptr + offs, grad * inv_t, mask=ok)
        store_token_stats(stats_ptr + pid * 8, loss, kl, low_f, high_f, ratio, counted)

    @triton.jit
    def _grad_tile_kernel(h_ptr, w_ptr, b_ptr, rows_ptr, y_ptr, lse_ptr, coef_ptr, q_ptr, zbar_ptr,
                          dh_ptr, dw_ptr, db_ptr, M, V, H, inv_t,
                          HAS_BIAS: tl.constexpr, NEED_DH: tl.constexpr, NEED_DW: tl.constexpr,
                          NEED_DB: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
                          BLOCK_H: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                          HAS_ENT: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_v = tl.program_id(1)
        offs_m = pid_m * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = offs_m < M
        coef = tl.load(coef_ptr + offs_m, mask=row_ok, other=0.0)
        active = tl.max(tl.abs(coef), axis=0)
        if HAS_ENT:  # q = entropy-bonus weight / T, zbar = sum_k p_k z_k
            q = tl.load(q_ptr + offs_m, mask=row_ok, other=0.0)
            zbar = tl.load(zbar_ptr + offs_m, mask=row_ok, other=0.0)
            active += tl.max(tl.abs(q), axis=0)
        if active > 0.0:  # else nothing flows back through these tokens
            rows = tl.load(rows_ptr + offs_m, mask=row_ok, other=0).to(tl.int64)
            y = tl.load(y_ptr + rows, mask=row_ok, other=-1)
            lse = tl.load(lse_ptr + offs_m, mask=row_ok, other=0.0)
            cols = (pid_v * BLOCK_V + tl.arange(0, BLOCK_V)).to(tl.int64)
            col_ok = cols < V
            z = _logits_tile(h_ptr, w_ptr, b_ptr, rows, row_ok, cols, col_ok, H, inv_t,
                             HAS_BIAS, BLOCK_N, BLOCK_V, BLOCK_H, INPUT_PRECISION)
            p = tl.exp(z - lse[:, None])
            onehot = tl.where(cols[None, :] == y[:, None], 1.0, 0.0)
            dz = coef[:, None] * (onehot - p)
            if HAS_ENT:  # d(-q H)/dz = q p (z - zbar)
                dz += q[:, None] * p * (z - zbar[:, None])
            dz = tl.where(row_ok[:, None] & col_ok[None, :], dz, 0.0)
            if NEED_DB:
                tl.atomic_add(db_ptr + cols, tl.sum(dz, axis=0), mask=col_ok)
            dz_in = dz.to(h_ptr.dtype.element_ty)
            for k0 in range(0, H, BLOCK_H):
                ks = k0 + tl.arange(0, BLOCK_H)
                k_ok = ks < H
                row_k = rows[:, None] * H + ks[None, :]
                row_k_ok = row_ok[:, None] & k_ok[None, :]
                col_k = cols[:, None] * H + ks[None, :]
                col_k_ok = col_ok[:, None] & k_ok[None, :]
                if NEED_DH:
                    w = tl.load(w_ptr + col_k, mask=col_k_ok, other=0.0)
                    dh = tl.dot(dz_in, w, input_precision=INPUT_PRECISION)
                    tl.atomic_add(dh_ptr + row_k, dh, mask=row_k_ok)
                if NEED_DW:
                    h = tl.load(h_ptr + row_k, mask=row_k_ok, other=0.0)
                    dw = tl.dot(tl.trans(dz_in), h, input_precision=INPUT_PRECISION)
                    tl.atomic_add(dw_ptr + col_k, dw, mask=col_k_ok)


def _merge_partials(part_max, part_sum, part_tgt, part_sz):
    """[SPLITS, M] partials -> lse, logp (and entropy, zbar = sum p z when part_sz is given)."""
    big = part_max.amax(0)
    scale = torch.exp(part_max - big)
    total = (part_sum * scale).sum(0)
    lse = big + torch.log(total)
    logp = part_tgt.sum(0) - lse
    if part_sz is None:
        return lse, logp, None, None
    sz = (scale * (part_sz + (part_max - big) * part_sum)).sum(0) / total   # sum p (z - big)
    return lse, logp, torch.log(total) - sz, big + sz


def _tile_config(dtype: torch.dtype, target: Target, blocks: dict | None, num_warps) -> dict:
    """Tiles and launch options of the three kernels: GPU_BLOCKS for the dtype on a GPU,
    DEFAULT_BLOCKS in the interpreter, ``blocks`` over them (BLOCK_H_GRAD defaults to BLOCK_H
    when ``blocks`` is given without it); ``num_warps`` overrides the warps."""
    cfg = {**(gpu_blocks(dtype) if target.on_gpu else DEFAULT_BLOCKS), **(blocks or {})}
    stages = cfg.get("num_stages", 3)
    return {"BLOCK_N": cfg["BLOCK_N"], "BLOCK_V": cfg["BLOCK_V"], "BLOCK_H": cfg["BLOCK_H"],
            "BLOCK_H_GRAD": cfg["BLOCK_H_GRAD"] if blocks is None or "BLOCK_H_GRAD" in blocks
            else cfg["BLOCK_H"],
            "num_warps": num_warps or cfg.get("num_warps", 8), "num_stages": stages,
            "num_stages_grad": cfg.get("num_stages_grad", stages),
            # fp32 -> "ieee" (this op ignores torch's TF32 switch); "tf32" is ignored for 16-bit
            "INPUT_PRECISION": "ieee" if dtype == torch.float32 else "tf32"}


def grad_buffers(hidden, weight, need_hidden=True, need_weight=True, need_bias=False):
    """The zeroed fp32 gradients (dH [N,H], dW [V,H], db [V]), None each when not wanted."""
    (n, h_dim), v, device = hidden.shape, weight.shape[0], hidden.device
    d_h = torch.zeros(n, h_dim, dtype=torch.float32, device=device) if need_hidden else None
    d_w = torch.zeros(v, h_dim, dtype=torch.float32, device=device) if need_weight else None
    d_b = torch.zeros(v, dtype=torch.float32, device=device) if need_bias else None
    return d_h, d_w, d_b


def lse_plan(hidden, weight, bias, rows, targets, *, temperature, has_ent, target=None,
             blocks=None, splits=None, num_warps=None) -> LaunchPlan:
    """Kernel 1 over the M = len(rows) counted tokens (hidden / weight contiguous, targets int64).
    The vocab split: ``splits`` or, on CUDA, enough programs to fill the GPU (vocab_splits on
    target.sms), rounded so every split has vocab blocks. outputs = (part_max, part_sum,
    part_tgt, part_sz | None) [SPLITS, M] fp32 (part_sz: has_ent only)."""
    require_triton()
    target = target or target_of(hidden.device)
    cfg = _tile_config(hidden.dtype, target, blocks, num_warps)
    m, v, h_dim, device = rows.numel(), weight.shape[0], hidden.shape[1], hidden.device
    m_blocks, v_blocks = triton.cdiv(m, cfg["BLOCK_N"]), triton.cdiv(v, cfg["BLOCK_V"])
    n_splits = splits or (vocab_splits(m_blocks, v_blocks, target.sms) if target.cuda else 1)
    n_splits = max(1, min(n_splits, v_blocks))
    per_split = triton.cdiv(v_blocks, n_splits)
    n_splits = triton.cdiv(v_blocks, per_split)
    part_max = torch.empty(n_splits, m, dtype=torch.float32, device=device)
    part_sum = torch.empty_like(part_max)
    part_tgt = torch.empty_like(part_max)
    part_sz = torch.empty_like(part_max) if has_ent else None
    b_arg = bias.contiguous() if bias is not None else hidden  # dummy pointer without a bias
    args = (hidden, weight, b_arg, rows, targets, part_max, part_sum, part_tgt,
            part_sz if has_ent else part_max, m, v, h_dim, 1.0 / float(temperature), per_split)
    constexprs = {"HAS_BIAS": bias is not None, "BLOCK_N": cfg["BLOCK_N"],
                  "BLOCK_V": cfg["BLOCK_V"], "BLOCK_H": cfg["BLOCK_H"],
                  "INPUT_PRECISION": cfg["INPUT_PRECISION"], "HAS_ENT": has_ent}
    return LaunchPlan(_lse_partial_kernel, (m_blocks, n_splits), args, constexprs,
                      {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]},
                      outputs=(part_max, part_sum, part_tgt, part_sz))


def token_coef_plan(parts, rows, weights, adv, old_logp, ref_logp, opts, *,
                    temperature) -> LaunchPlan:
    """Kernel 2 on kernel 1's partials ``parts`` (lse_plan outputs); weights / adv / old / ref
    fp32 [N] (old / ref may be None). BLOCK = min(1024, next_power_of_2(M)) tokens per program.
    outputs = (lse [M], coef [M], per-block stats [blocks, KERNEL_STATS]), fp32."""
    require_triton()
    part_max, part_sum, part_tgt, _ = parts
    n_splits, m = part_max.shape
    lse = torch.empty(m, dtype=torch.float32, device=part_max.device)
    coef = torch.empty_like(lse)
    block = min(1024, triton.next_power_of_2(m))
    coef_blocks = triton.cdiv(m, block)
    partials = torch.empty(coef_blocks, KERNEL_STATS, dtype=torch.float32, device=part_max.device)
    args = (part_max, part_sum, part_tgt, rows, weights, adv,
            old_logp if old_logp is not None else weights,
            ref_logp if ref_logp is not None else weights, lse, coef, partials, m, n_splits,
            float(opts.beta), float(opts.epsilon_low), float(opts.epsilon_high),
            1.0 / float(temperature))
    return LaunchPlan(_token_coef_kernel, (coef_blocks,), args,
                      {"HAS_OLD": old_logp is not None, "HAS_REF": ref_logp is not None,
                       "BLOCK": block}, {"num_warps": token_coef_warps(block)},
                      outputs=(lse, coef, partials))


def grad_plan(hidden, weight, bias, rows, targets, lse, coef, q, zbar, d_h, d_w, d_b, dummy, *,
              temperature, target=None, blocks=None, num_warps=None) -> LaunchPlan:
    """Kernel 3: accumulates into d_h / d_w / d_b (grad_buffers; None = not wanted); q / zbar
    [M] with the entropy bonus, else None. ``dummy``: an fp32 buffer on the device standing in
    for every absent pointer (the launcher passes kernel 1's part_max)."""
    require_triton()
    target = target or target_of(hidden.device)
    cfg = _tile_config(hidden.dtype, target, blocks, num_warps)
    m, v, h_dim = rows.numel(), weight.shape[0], hidden.shape[1]
    with_q = q is not None
    b_arg = bias.contiguous() if bias is not None else hidden
    args = (hidden, weight, b_arg, rows, targets, lse, coef, q if with_q else dummy,
            zbar if with_q else dummy,
            d_h if d_h is not None else dummy, d_w if d_w is not None else dummy,
            d_b if d_b is not None else dummy, m, v, h_dim, 1.0 / float(temperature))
    constexprs = {"HAS_BIAS": bias is not None, "NEED_DH": d_h is not None,
                  "NEED_DW": d_w is not None, "NEED_DB": d_b is not None,
                  "BLOCK_N": cfg["BLOCK_N"], "BLOCK_V": cfg["BLOCK_V"],
                  "BLOCK_H": cfg["BLOCK_H_GRAD"], "INPUT_PRECISION": cfg["INPUT_PRECISION"],
                  "HAS_ENT": with_q}
    grid = (triton.cdiv(m, cfg["BLOCK_N"]), triton.cdiv(v, cfg["BLOCK_V"]))
    return LaunchPlan(_grad_tile_kernel, grid, args, constexprs,
                      {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages_grad"]})


def linear_grpo_loss_triton(hidden, weight, targets, weights, adv, old_logp, ref_logp, *, beta,
                            epsilon_low, epsilon_high, temperature=1.0, bias=None, need_hidden_grad=True,
                            need_weight_grad=True, need_bias_grad=True, blocks=None, splits=None,
                            num_warps=None, opts=None, mask=None, seq_len=None, scale=None, sampling=None,
                            entropy_coef=0.0, top_entropy_quantile=1.0):
    """Same contract as linear_grpo_loss_chunked.linear_grpo_loss_chunked, on Triton kernels.

    hidden [N,H], weight [V,H] (fp16/bf16/fp32, same dtype), targets [N] int64, weights / adv /
    old / ref [N] fp32 (or None). ``blocks`` overrides the tiles -- GPU_BLOCKS for the dtype on a
    GPU, DEFAULT_BLOCKS in the interpreter: BLOCK_N/BLOCK_V/BLOCK_H(/BLOCK_H_GRAD, which defaults
    to BLOCK_H when ``blocks`` is given; tests pass large blocks to keep the interpreter fast) and
    num_warps / num_stages / num_stages_grad; ``splits`` the number of vocabulary splits.
    opts / mask / seq_len / scale / sampling / entropy_coef / top_entropy_quantile: as the chunked
    path. Where the kernel-side maths (grpo_token_math) covers the options, kernel 2 computes the
    token coefficients; otherwise (sequence level, delta, cispo / sapo, bias-corrected KL, masks,
    IS ratio, entropy) torch glue on [M]-sized vectors does (formulas.policy_token_terms), between
    kernel 1 and kernel 3 -- the per-sequence reductions and the entropy quantile included, so no
    option adds a logits pass here. Entropy: kernel 1 also carries sum exp(z - max) (z - max)
    (HAS_ENT), kernel 3 adds q p (z - zbar) to dZ.
    Returns (loss, dH [N,H] fp32 | None, dW [V,H] fp32 | None, db [V] fp32 | None, stats).
    """
    require_triton()
    if opts is None:
        opts = PolicyOptions(beta=beta, epsilon_low=epsilon_low, epsilon_high=epsilon_high,
                             use_bias_correction_kl=False)
    target = target_of(hidden.device)
    n = hidden.shape[0]
    if hidden.dtype == torch.float64:
        hidden, weight = hidden.float(), weight.float()
        bias = None if bias is None else bias.float()
    hidden, weight = hidden.contiguous(), weight.contiguous()
    f32 = (lambda t: None if t is None else t.to(torch.float32).contiguous())
    weights, adv, old_logp, ref_logp = f32(weights), f32(adv), f32(old_logp), f32(ref_logp)
    targets = targets.to(torch.int64).contiguous()
    has_ent = entropy_coef != 0.0 or top_entropy_quantile < 1.0
    glue = has_ent or scale is not None or not opts.kernel_expressible(ref_logp is not None)

    rows = torch.nonzero(weights != 0).squeeze(1).contiguous()
    need_db = bias is not None and need_bias_grad
    d_h, d_w, d_b = grad_buffers(hidden, weight, need_hidden_grad, need_weight_grad, need_db)
    if rows.numel() == 0:
        stats = torch.zeros(NUM_STATS, dtype=torch.float32, device=hidden.device)
        stats[STAT_RATIO_MIN], stats[STAT_RATIO_MAX] = float("inf"), float("-inf")
        return stats[0].clone(), d_h, d_w, d_b, stats

    tiles = {"target": target, "blocks": blocks, "num_warps": num_warps}
    plan = lse_plan(hidden, weight, bias, rows, targets, temperature=temperature,
                    has_ent=has_ent, splits=splits, **tiles)
    launch_plan.launch(plan)
    part_max, part_sum, part_tgt, part_sz = plan.outputs

    q = zbar = None
    if glue:
        inv_t = 1.0 / float(temperature)
        lse, logp, ent, zbar = _merge_partials(part_max, part_sum, part_tgt, part_sz)
        coef, q, stats = token_coefficients_glue(
            logp, ent, rows, weights, adv, old_logp, ref_logp, opts, mask=f32(mask), seq_len=seq_len or n,
            n=n, scale=f32(scale), sampling=f32(sampling), entropy_coef=entropy_coef,
            top_entropy_quantile=top_entropy_quantile)
        coef = (coef * inv_t).contiguous()
        q = None if q is None else (q * inv_t).contiguous()
        zbar = None if zbar is None else zbar.contiguous()
    else:
        plan = token_coef_plan(plan.outputs, rows, weights, adv, old_logp, ref_logp, opts,
                               temperature=temperature)
        launch_plan.launch(plan)
        lse, coef, partials = plan.outputs
        stats = reduce_stats(partials)

    if need_hidden_grad or need_weight_grad or need_db:
        launch_plan.launch(grad_plan(hidden, weight, bias, rows, targets, lse, coef, q, zbar,
                                     d_h, d_w, d_b, part_max, temperature=temperature, **tiles))
    return stats[0].clone(), d_h, d_w, d_b, stats


def token_coefficients_glue(logp, ent, rows, weights, adv, old_logp, ref_logp, opts, *, mask, seq_len, n,
                            scale, sampling, entropy_coef, top_entropy_quantile):
    """The torch glue between kernel 1 and kernel 3 on the M counted tokens (``rows``, ascending):
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
    return grad_t, q, stats
