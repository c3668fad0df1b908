"""Triton kernels for fused linear log-probs (+ entropy) and their launchers.

Forward  (_fwd_kernel): program = (token block, vocab split). It loops over the split's vocab
         blocks, computes the fp32 logits tile with tl.dot over H blocks, and keeps an online
         logsumexp per row (running max from -inf), the target logit (picked in its tile) and,
         for entropy, sum e^(z-max) (z-max). Splits are merged by a few [splits, N] torch ops,
         so short batches still fill the GPU (flash-decoding style split over V).
Backward (_bwd_kernel): program = (token block, vocab block). It recomputes the logits tile,
         forms dZ = (g_logp (onehot - p) - g_ent p (log p + entropy)) / T and adds
         dZ @ W[vblock] into dH and dZ^T @ H[nblock] into dW with fp32 atomics, looping over H.
         Why atomics: each of the three GEMMs (logits, dH, dW) is then done exactly once per
         tile with no [N, V] buffer; the atomic-free alternatives either hold a [BLOCK, H]
         accumulator (too many registers for H in the thousands) or recompute the logits once
         per H block (H / BLOCK_H extra GEMMs). Atomic traffic per FLOP is
         (BLOCK_N + BLOCK_V) / (6 BLOCK_N BLOCK_V); the result is not bit-deterministic.

All logits math is fp32 (tl.dot accumulates in fp32; fp32 inputs use ``input_precision``
"tf32" when torch allows TF32 matmuls, "ieee" otherwise). Tokens are on grid axis 0 (1-D grids).
Launchers build each launch with a plan function (forward_plan / backward_plan: ops/launch_plan.py),
which the AOT registry (gpu/launches.py) calls too. This module imports without Triton; the
kernels exist only when Triton is installed.
"""
from __future__ import annotations

import torch

from ..formulas import IGNORE_INDEX
from ..utils import require_triton, triton_interpret
from . import launch_plan
from .launch_plan import LaunchPlan, Target, target_of
from .tiles import (  # noqa: F401 - the tile policy, re-exported for the launch registry
    ARCH_CLASSES,
    AUTOTUNE_V_ALIGN,
    BWD_TILES,
    DOT_CLASSES,
    FWD_TILES,
    INTERPRETER_BLOCKS,
    arch_class,
    dot_class,
    gpu_default_blocks,
    num_sms,
    tile_dict,
    v_split_columns,
)
from .triton_import import tl, triton  # None without Triton

if triton is not None:
    from .logits_tile import logits_tile

    @triton.jit
    def _fwd_kernel(
        h_ptr, w_ptr, b_ptr, tgt_ptr,
        max_ptr, sum_ptr, ylogy_ptr, zt_ptr,          # [V_SPLITS, N] fp32 partials
        N, V, H, V_PER_SPLIT,
        stride_hn, stride_hh, stride_wv, stride_wh,
        inv_temp,
        HAS_BIAS: tl.constexpr, RETURN_ENTROPY: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
        INPUT_PRECISION: tl.constexpr,
    ):
        pid = tl.program_id(0)
        num_n_blocks = tl.cdiv(N, BLOCK_N)
        pid_n = pid % num_n_blocks               # token blocks vary fastest: neighbours share W
        pid_s = pid // num_n_blocks
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = offs_n < N
        rows_n = offs_n.to(tl.int64)             # int64 pointer math: N*H, V*H may pass 2**31
        tgt = tl.load(tgt_ptr + offs_n, mask=n_mask, other=-1)

        run_max = tl.full([BLOCK_N], float("-inf"), tl.float32)
        run_sum = tl.zeros([BLOCK_N], tl.float32)
        run_ylogy = tl.zeros([BLOCK_N], tl.float32)
        target_logit = tl.zeros([BLOCK_N], tl.float32)
        v_start = pid_s * V_PER_SPLIT
        v_stop = tl.minimum(v_start + V_PER_SPLIT, V)
        for v0 in range(v_start, v_stop, BLOCK_V):
            offs_v = v0 + tl.arange(0, BLOCK_V)
            v_mask = offs_v < v_stop
            rows_v = offs_v.to(tl.int64)
            acc = logits_tile(h_ptr, w_ptr, b_ptr, rows_n, n_mask, rows_v, v_mask, H,
                              stride_hn, stride_hh, stride_wv, stride_wh,
                              HAS_BIAS, BLOCK_N, BLOCK_V, BLOCK_H, INPUT_PRECISION)
            z = tl.where(v_mask[None, :], acc * inv_temp, float("-inf"))
            new_max = tl.maximum(run_max, tl.max(z, axis=1))
            y = z - new_max[:, None]                       # -inf in masked columns
            e = tl.exp(y)
            shift = run_max - new_max                      # -inf on the first tile
            alpha = tl.exp(shift)
            if RETURN_ENTROPY:
                ylogy = tl.sum(e * tl.where(v_mask[None, :], y, 0.0), axis=1)
                carried = run_ylogy + tl.where(run_sum > 0, shift, 0.0) * run_sum
                run_ylogy = alpha * carried + ylogy
            run_sum = alpha * run_sum + tl.sum(e, axis=1)
            run_max = new_max
            is_target = offs_v[None, :] == tgt[:, None]
            target_logit += tl.sum(tl.where(is_target, z, 0.0), axis=1)

        out = pid_s * N + offs_n
        tl.store(max_ptr + out, run_max, mask=n_mask)
        tl.store(sum_ptr + out, run_sum, mask=n_mask)
        tl.store(zt_ptr + out, target_logit, mask=n_mask)
        if RETURN_ENTROPY:
            tl.store(ylogy_ptr + out, run_ylogy, mask=n_mask)

    @triton.jit
    def _bwd_kernel(
        h_ptr, w_ptr, b_ptr, tgt_ptr, lse_ptr, ent_ptr, glogp_ptr, gent_ptr,
        dh_ptr, dw_ptr, db_ptr,                         # fp32 accumulators (zeroed)
        N, V, H,
        stride_hn, stride_hh, stride_wv, stride_wh,
        inv_temp,
        HAS_BIAS: tl.constexpr, HAS_GRAD_LOGP: tl.constexpr, HAS_GRAD_ENT: tl.constexpr,
        COMPUTE_DH: tl.constexpr, COMPUTE_DW: tl.constexpr, COMPUTE_DB: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
        GROUP_N: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    ):
        # Grouped ordering: GROUP_N token blocks sweep the vocab together (W tiles reused in L2).
        pid = tl.program_id(0)
        num_n_blocks = tl.cdiv(N, BLOCK_N)
        num_v_blocks = tl.cdiv(V, BLOCK_V)
        per_group = GROUP_N * num_v_blocks
        first_n = (pid // per_group) * GROUP_N
        group_size = tl.minimum(num_n_blocks - first_n, GROUP_N)
        pid_n = first_n + (pid % per_group) % group_size
        pid_v = (pid % per_group) // group_size

        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_v = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
        n_mask = offs_n < N
        v_mask = offs_v < V
        rows_n = offs_n.to(tl.int64)             # int64 pointer math: N*H, V*H may pass 2**31
        rows_v = offs_v.to(tl.int64)
        tgt = tl.load(tgt_ptr + offs_n, mask=n_mask, other=-1)
        active = n_mask & (tgt != -100)
        g_logp = tl.zeros([BLOCK_N], tl.float32)
        if HAS_GRAD_LOGP:
            g_logp = tl.load(glogp_ptr + offs_n, mask=active, other=0.0).to(tl.float32)
        g_ent = tl.zeros([BLOCK_N], tl.float32)
        if HAS_GRAD_ENT:
            g_ent = tl.load(gent_ptr + offs_n, mask=active, other=0.0).to(tl.float32)
        # A token block whose rows are all ignored contributes nothing: skip its GEMMs.
        if tl.max(tl.abs(g_logp) + tl.abs(g_ent), axis=0) > 0:
            lse = tl.load(lse_ptr + offs_n, mask=n_mask, other=0.0)
            acc = logits_tile(h_ptr, w_ptr, b_ptr, rows_n, n_mask, rows_v, v_mask, H,
                              stride_hn, stride_hh, stride_wv, stride_wh,
                              HAS_BIAS, BLOCK_N, BLOCK_V, BLOCK_H, INPUT_PRECISION)
            log_p = acc * inv_temp - lse[:, None]
            p = tl.where(v_mask[None, :], tl.exp(log_p), 0.0)
            dz = -p * g_logp[:, None]
            if HAS_GRAD_ENT:
                ent = tl.load(ent_ptr + offs_n, mask=n_mask, other=0.0)
                dz -= g_ent[:, None] * p * (log_p + ent[:, None])
            is_target = offs_v[None, :] == tgt[:, None]
            dz += tl.where(is_target, g_logp[:, None], 0.0)
            dz = dz * inv_temp                             # gradient w.r.t. the raw logits
            if COMPUTE_DB:
                tl.atomic_add(db_ptr + offs_v, tl.sum(dz, axis=0), mask=v_mask)
            dz_in = dz.to(h_ptr.dtype.element_ty)          # tensor-core operand, fp32 accumulate
            for k0 in range(0, H, BLOCK_H):
                offs_h = k0 + tl.arange(0, BLOCK_H)
                h_mask = offs_h < H
                if COMPUTE_DH:
                    w_tile = tl.load(w_ptr + rows_v[:, None] * stride_wv + offs_h[None, :] * stride_wh,
                                     mask=v_mask[:, None] & h_mask[None, :], other=0.0)
                    dh = tl.dot(dz_in, w_tile, input_precision=INPUT_PRECISION)
                    tl.atomic_add(dh_ptr + rows_n[:, None] * H + offs_h[None, :], dh,
                                  mask=n_mask[:, None] & h_mask[None, :])
                if COMPUTE_DW:
                    h_tile = tl.load(h_ptr + rows_n[:, None] * stride_hn + offs_h[None, :] * stride_hh,
                                     mask=n_mask[:, None] & h_mask[None, :], other=0.0)
                    dw = tl.dot(tl.trans(dz_in), h_tile, input_precision=INPUT_PRECISION)
                    tl.atomic_add(dw_ptr + rows_v[:, None] * H + offs_h[None, :], dw,
                                  mask=v_mask[:, None] & h_mask[None, :])


    def tile_configs(kind: str, arch: str, dot: str) -> list:
        """The autotuner's triton.Config list for ("fwd" | "bwd", architecture, dot class)."""
        table = {"fwd": FWD_TILES, "bwd": BWD_TILES}[kind]
        return [triton.Config({"BLOCK_N": bn, "BLOCK_V": bv, "BLOCK_H": bh}, num_warps=w,
                              num_stages=st) for bn, bv, bh, w, st in table[(arch, dot)]]

    # GPU launches without explicit tiles use these: one autotuner per (kind, architecture class,
    # dot class), so each GPU only ever tries its own spill-free tiles. The backward zeroes its
    # atomic accumulators between trials.
    TUNED_KERNELS = {}
    for _arch in ARCH_CLASSES:
        for _dot in DOT_CLASSES:
            TUNED_KERNELS["fwd", _arch, _dot] = triton.autotune(
                configs=tile_configs("fwd", _arch, _dot), key=["V", "H"])(_fwd_kernel)
            TUNED_KERNELS["bwd", _arch, _dot] = triton.autotune(
                configs=tile_configs("bwd", _arch, _dot), key=["V", "H"],
                reset_to_zero=["dh_ptr", "dw_ptr", "db_ptr"])(_bwd_kernel)
    del _arch, _dot


def input_precision_for(dtype: torch.dtype, target: Target | None = None) -> str:
    """tl.dot precision: fp32 inputs follow torch's TF32 switch; 16-bit inputs ignore it.
    ``target``: the machine (default: the real switches now, as ``target_of`` reads them)."""
    interpret = triton_interpret() if target is None else target.interpret
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32 if target is None else target.allow_tf32
    if dtype == torch.float32 and not interpret and allow_tf32:
        return "tf32"
    return "ieee"


def _blocks(H: int, overrides: dict, gpu_defaults: dict, interpret: bool) -> dict:
    base = dict(INTERPRETER_BLOCKS if interpret else gpu_defaults)
    if interpret:
        base["BLOCK_H"] = min(base["BLOCK_H"], max(16, triton.next_power_of_2(H)))
    base.update(overrides)
    return base


def _tile_options(hidden, kind: str, precision: str, target: Target | None = None,
                  **given) -> tuple[object, dict]:
    """(autotuner | None, tile config): on GPU with no tile option given, the autotuner of this
    architecture (``target.capability``; "sm80" off CUDA) and dot class; otherwise the given
    options over its fixed tile (FWD_TILES / BWD_TILES; in the interpreter, INTERPRETER_BLOCKS)."""
    target = target or target_of(hidden.device)
    given = {k: v for k, v in given.items() if v is not None}
    arch, dot = arch_class(target.capability), dot_class(hidden.dtype, precision)
    if target.on_gpu and not given:
        return TUNED_KERNELS[kind, arch, dot], {}
    return None, _blocks(hidden.shape[1], given, gpu_default_blocks(kind, arch, dot),
                         target.interpret)


def _launch_options(cfg: dict) -> dict:
    return {k: cfg[k] for k in ("num_warps", "num_stages") if k in cfg}


def _tiled_plan(kernel, tuned, cfg: dict, grid_of, args: tuple, flags: dict) -> LaunchPlan:
    """The autotuner form (grid of the config's tiles) or the fixed tile ``cfg``."""
    if tuned is not None:
        return LaunchPlan(tuned, lambda meta: grid_of(meta["BLOCK_N"], meta["BLOCK_V"]), args,
                          flags)
    tiles = {k: cfg[k] for k in ("BLOCK_N", "BLOCK_V", "BLOCK_H")}
    return LaunchPlan(kernel, grid_of(cfg["BLOCK_N"], cfg["BLOCK_V"]), args, {**flags, **tiles},
                      _launch_options(cfg))


def forward_plan(hidden, weight, targets, bias=None, temperature=1.0, return_entropy=False, *,
                 target: Target | None = None, BLOCK_N=None, BLOCK_V=None, BLOCK_H=None,
                 V_SPLIT=None, num_warps=None, num_stages=None) -> LaunchPlan:
    """The _fwd_kernel launch of ``linear_logprobs_forward_triton`` (same arguments; ``target``
    defaults to ``target_of(hidden.device)``). Allocates the [splits, N] fp32 partials: outputs =
    (run_max, run_sum, run_ylogy, target_logit), views of one [4, splits, N] buffer."""
    require_triton()
    target = target or target_of(hidden.device)
    N, H = hidden.shape
    V = weight.shape[0]
    precision = input_precision_for(hidden.dtype, target)
    tuned, cfg = _tile_options(hidden, "fwd", precision, target, BLOCK_N=BLOCK_N, BLOCK_V=BLOCK_V,
                               BLOCK_H=BLOCK_H, num_warps=num_warps, num_stages=num_stages)
    block_v = AUTOTUNE_V_ALIGN if tuned is not None else cfg["BLOCK_V"]
    block_n = 128 if tuned is not None else cfg["BLOCK_N"]
    if V_SPLIT is None:   # enough programs to fill ~4 waves of the GPU
        V_SPLIT = v_split_columns(triton.cdiv(N, block_n), V, block_v, target.sms)
    if V_SPLIT % block_v:
        raise ValueError(f"V_SPLIT ({V_SPLIT}) must be a multiple of BLOCK_V ({block_v})")
    splits = triton.cdiv(V, V_SPLIT)
    partial = torch.empty(4, splits, N, dtype=torch.float32, device=hidden.device)
    outputs = partial.unbind(0)            # run_max, run_sum, run_ylogy, target_logit
    args = (hidden, weight, bias if bias is not None else hidden, targets.contiguous(), *outputs,
            N, V, H, V_SPLIT,
            hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
            1.0 / float(temperature))
    flags = {"HAS_BIAS": bias is not None, "RETURN_ENTROPY": bool(return_entropy),
             "INPUT_PRECISION": precision}
    plan = _tiled_plan(_fwd_kernel, tuned, cfg, lambda bn, _bv: (triton.cdiv(N, bn) * splits,),
                       args, flags)
    plan.outputs = outputs
    return plan


def linear_logprobs_forward_triton(hidden, weight, targets, bias=None, temperature=1.0,
                                   return_entropy=False, *, BLOCK_N=None, BLOCK_V=None,
                                   BLOCK_H=None, V_SPLIT=None, num_warps=None, num_stages=None):
    """hidden [N,H], weight [V,H], targets int [N], bias [V] | None.

    Returns (logp [N] fp32, entropy [N] fp32 | None, lse [N] fp32). Ignored rows: logp = entropy = 0.
    ``V_SPLIT``: vocab columns per program (a multiple of BLOCK_V); default fills the GPU.
    """
    plan = forward_plan(hidden, weight, targets, bias, temperature, return_entropy,
                        BLOCK_N=BLOCK_N, BLOCK_V=BLOCK_V, BLOCK_H=BLOCK_H, V_SPLIT=V_SPLIT,
                        num_warps=num_warps, num_stages=num_stages)
    launch_plan.launch(plan)
    run_max, run_sum, run_ylogy, target_logit = plan.outputs
    return merge_vocab_splits(run_max, run_sum, run_ylogy if return_entropy else None,
                              target_logit, targets)


def merge_vocab_splits(run_max, run_sum, run_ylogy, target_logit, targets):
    """Combine per-split online-softmax partials [S, N] -> (logp [N], entropy [N] | None, lse [N])."""
    top = run_max.amax(0)                                  # [N], finite: every split has columns
    shift = run_max - top                                  # [S, N] <= 0
    scale = torch.exp(shift)
    total = (scale * run_sum).sum(0)
    log_total = total.log()
    lse = top + log_total
    valid = targets != IGNORE_INDEX
    logp = torch.where(valid, target_logit.sum(0) - lse, 0.0)
    entropy = None
    if run_ylogy is not None:
        ylogy = (scale * (run_ylogy + shift * run_sum)).sum(0)
        entropy = torch.where(valid, log_total - ylogy / total, 0.0)
    return logp, entropy, lse


def backward_buffers(hidden, weight, bias, need_hidden=True, need_weight=True, need_bias=True):
    """The zeroed fp32 accumulators (dH [N,H], dW [V,H], db [V]) of the backward, None each
    when not wanted (db also without a bias)."""
    N, H = hidden.shape
    V, dev = weight.shape[0], hidden.device
    dh = torch.zeros(N, H, dtype=torch.float32, device=dev) if need_hidden else None
    dw = torch.zeros(V, H, dtype=torch.float32, device=dev) if need_weight else None
    db = torch.zeros(V, dtype=torch.float32, device=dev) if need_bias and bias is not None else None
    return dh, dw, db


def backward_plan(hidden, weight, targets, bias, temperature, lse, entropy, grad_logp,
                  grad_entropy, dh, dw, db, *, target: Target | None = None, BLOCK_N=None,
                  BLOCK_V=None, BLOCK_H=None, num_warps=None, num_stages=None,
                  GROUP_N=8) -> LaunchPlan:
    """The _bwd_kernel launch of ``linear_logprobs_backward_triton`` into the accumulators
    dh / dw / db (``backward_buffers``; None = not computed). Absent inputs and accumulators
    get private 1-element fp32 dummies (autotuning may zero them)."""
    require_triton()
    target = target or target_of(hidden.device)
    N, H = hidden.shape
    V, dev = weight.shape[0], hidden.device
    precision = input_precision_for(hidden.dtype, target)
    tuned, cfg = _tile_options(hidden, "bwd", precision, target, BLOCK_N=BLOCK_N, BLOCK_V=BLOCK_V,
                               BLOCK_H=BLOCK_H, num_warps=num_warps, num_stages=num_stages)

    def or_dummy(t):
        return t if t is not None else torch.zeros(1, dtype=torch.float32, device=dev)

    args = (hidden, weight, or_dummy(bias), targets.contiguous(), lse, or_dummy(entropy),
            or_dummy(None if grad_logp is None else grad_logp.contiguous()),
            or_dummy(None if grad_entropy is None else grad_entropy.contiguous()),
            or_dummy(dh), or_dummy(dw), or_dummy(db),
            N, V, H,
            hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
            1.0 / float(temperature))
    flags = {"HAS_BIAS": bias is not None, "HAS_GRAD_LOGP": grad_logp is not None,
             "HAS_GRAD_ENT": grad_entropy is not None,
             "COMPUTE_DH": dh is not None, "COMPUTE_DW": dw is not None,
             "COMPUTE_DB": db is not None, "GROUP_N": GROUP_N, "INPUT_PRECISION": precision}
    return _tiled_plan(_bwd_kernel, tuned, cfg,
                       lambda bn, bv: (triton.cdiv(N, bn) * triton.cdiv(V, bv),), args, flags)


def linear_logprobs_backward_triton(hidden, weight, targets, bias, temperature, lse, entropy,
                                    grad_logp, grad_entropy, *, need_hidden=True,
                                    need_weight=True, need_bias=True, BLOCK_N=None, BLOCK_V=None,
                                    BLOCK_H=None, V_SPLIT=None, num_warps=None, num_stages=None,
                                    GROUP_N=8):
    """Recompute tiles; returns (dH [N,H] hidden.dtype, dW [V,H] weight.dtype, db [V]) or None each.

    dH, dW (and db) are accumulated in fp32 buffers allocated once per call, then cast.
    grad_logp / grad_entropy: [N] or None (= zero).
    """
    require_triton()
    del V_SPLIT  # forward-only option
    dh, dw, db = backward_buffers(hidden, weight, bias, need_hidden, need_weight, need_bias)
    has_any = grad_logp is not None or grad_entropy is not None
    if has_any and (dh is not None or dw is not None or db is not None):
        launch_plan.launch(backward_plan(
            hidden, weight, targets, bias, temperature, lse, entropy, grad_logp, grad_entropy,
            dh, dw, db, BLOCK_N=BLOCK_N, BLOCK_V=BLOCK_V, BLOCK_H=BLOCK_H, num_warps=num_warps,
            num_stages=num_stages, GROUP_N=GROUP_N))
    return (None if dh is None else dh.to(hidden.dtype),
            None if dw is None else dw.to(weight.dtype),
            None if db is None else db.to(bias.dtype))
