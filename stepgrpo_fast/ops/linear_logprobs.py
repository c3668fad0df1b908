"""Triton path of linear_logprobs: the fused forward kernel (no-grad scoring) and the chunked
forward / backward with gradients (cuBLAS GEMMs + Triton row passes), and their launchers.

No grad (reference / old log-probs): _fwd_kernel, program = (token block, vocab split). It loops
    over the split's vocab blocks, computes the fp32 logits tile with tl.dot over H blocks and
    keeps an online logsumexp per row (running max from -inf), the target logit and, for
    entropy, sum e^(z-max) (z-max). No [C, V] buffer at all. Splits are merged by a few
    [splits, N] torch ops. Grid order: GROUP_TOKENS tokens (ops/tiles.py:group_tokens, ~16 MB
    of h) sweep the vocabulary together, token blocks fastest, so h stays in L2 and each W tile
    is read from HBM once per group. Autotuned per (architecture, dot class), keyed on
    (N size class, V, H); trials write only the [4, splits, N] partials (no zeroing).
With grad (4 GEMM-equivalents in all, ops/head_chunks.py): per chunk of counted tokens
    forward   z = h_c W^T (GEMM, fp32) -> _row_stats_kernel: lse, logp, entropy
    backward  z again (GEMM) -> _row_grad_kernel: dZ (compute dtype) -> dH_c = dZ W,
              dW += dZ^T h_c (GEMMs, fp32), db += sum dZ
    No atomics; the same inputs give bit-identical gradients.

All logits math is fp32 (fp32 inputs: tl.dot "tf32" when torch allows TF32 matmuls, "ieee"
otherwise; cuBLAS follows the same switch). Launches are built by plan functions
(forward_plan here, ops/head_rows.py for the row passes: ops/launch_plan.py), which the AOT
registry (gpu/launches.py) calls too. This module imports without Triton.
"""
from __future__ import annotations

import torch

from ..formulas import IGNORE_INDEX
from ..utils import require_triton, triton_interpret
from . import head_rows, launch_plan
from .chunking import iter_chunks
from .head_chunks import Buffers, chunk_rows, gemm
from .launch_plan import LaunchPlan, Target, target_of
from .tiles import (  # noqa: F401 - the tile policy, re-exported for the launch registry
    ARCH_CLASSES,
    AUTOTUNE_V_ALIGN,
    DOT_CLASSES,
    FWD_TILES,
    INTERPRETER_BLOCKS,
    arch_class,
    dot_class,
    gpu_default_blocks,
    group_tokens,
    n_size_class,
    num_sms,
    tile_dict,
    v_split_columns,
)
from .triton_import import tl, triton  # None without Triton

if triton is not None:
    from .logits_tile import logits_tile

    @triton.jit(do_not_specialize=["N_CLASS"])
    def _fwd_kernel(
        h_ptr, w_ptr, b_ptr, tgt_ptr,
        max_ptr, sum_ptr, ylogy_ptr, zt_ptr,          # [V_SPLITS, N] fp32 partials
        N, V, H, V_PER_SPLIT, GROUP_TOKENS, N_CLASS,  # N_CLASS: autotune key only
        stride_hn, stride_hh, stride_wv, stride_wh,
        inv_temp,
        HAS_BIAS: tl.constexpr, RETURN_ENTROPY: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
        INPUT_PRECISION: tl.constexpr,
    ):
        # Grouped order: a group of token blocks (GROUP_TOKENS tokens) runs every vocab split,
        # token blocks fastest: its h rows stay in L2, each W tile is fetched once per group.
        pid = tl.program_id(0)
        num_n_blocks = tl.cdiv(N, BLOCK_N)
        group_n = tl.maximum(GROUP_TOKENS // BLOCK_N, 1)
        per_group = group_n * tl.cdiv(V, V_PER_SPLIT)
        first_n = (pid // per_group) * group_n
        group_size = tl.minimum(num_n_blocks - first_n, group_n)
        pid_n = first_n + (pid % per_group) % group_size
        pid_s = (pid % per_group) // group_size
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
            base = tl.where(new_max == float("-inf"), 0.0, new_max)   # all -inf so far: no NaN
            y = z - base[:, None]                          # -inf in masked / -inf-bias columns
            e = tl.exp(y)
            shift = tl.where(run_max == float("-inf"), 0.0, run_max - base)
            alpha = tl.where(run_max == float("-inf"), 0.0, tl.exp(shift))
            if RETURN_ENTROPY:                             # never 0 * -inf: y -> 0 where e = 0
                ylogy = tl.sum(e * tl.where(e > 0.0, y, 0.0), axis=1)
                run_ylogy = alpha * (run_ylogy + shift * run_sum) + ylogy
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

    def tile_configs(kind: str, arch: str, dot: str) -> list:
        """The autotuner's triton.Config list for ("fwd", architecture, dot class)."""
        if kind != "fwd":
            raise ValueError(f"only the fused forward is autotuned, got kind={kind!r}")
        return [triton.Config({"BLOCK_N": bn, "BLOCK_V": bv, "BLOCK_H": bh}, num_warps=w,
                              num_stages=st) for bn, bv, bh, w, st in FWD_TILES[(arch, dot)]]

    # GPU launches without explicit tiles use these: one autotuner per (architecture class, dot
    # class), so each GPU only ever tries its own spill-free tiles. Keyed on the token-count
    # class too (N_CLASS, tiles.n_size_class). A trial writes the launch's own [4, splits, N]
    # partials (fully overwritten, never read before written): nothing is zeroed or allocated.
    TUNED_KERNELS = {}
    for _arch in ARCH_CLASSES:
        for _dot in DOT_CLASSES:
            TUNED_KERNELS["fwd", _arch, _dot] = triton.autotune(
                configs=tile_configs("fwd", _arch, _dot), key=["N_CLASS", "V", "H"])(_fwd_kernel)
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
    options over its fixed tile (FWD_TILES; in the interpreter, INTERPRETER_BLOCKS)."""
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
            N, V, H, V_SPLIT, group_tokens(H, hidden.element_size()), n_size_class(N),
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
    top = run_max.amax(0)                                  # [N], finite: some logit is
    shift = torch.where(run_sum > 0, run_max - top, 0.0)   # [S, N] <= 0; 0 for an all -inf split
    scale = torch.where(run_sum > 0, torch.exp(shift), 0.0)
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




# ------------------------------------------------------------------ with gradients: chunked
def _valid_rows(targets):
    """Indices [M] of the rows whose target is not ignored, or None when all are counted."""
    valid = targets != IGNORE_INDEX
    return None if bool(valid.all()) else valid.nonzero().squeeze(1)


def _chunk(x, rows, start, stop):
    return x[start:stop] if rows is None else x.index_select(0, rows[start:stop])


def _store(out, rows, start, stop, values):
    if rows is None:
        out[start:stop] = values
    else:
        out.index_copy_(0, rows[start:stop], values)


def _chunking(hidden, weight, rows, budget_bytes, with_grad):
    n_rows = hidden.shape[0] if rows is None else rows.numel()
    budget = target_of(hidden.device).chunk_budget if budget_bytes is None else int(budget_bytes)
    size = chunk_rows(max(n_rows, 1), weight.shape[0], hidden.dtype, budget, with_grad=True)
    return n_rows, size, Buffers(size, weight.shape[0], hidden.dtype, hidden.device, with_grad)


def linear_logprobs_forward_chunks(hidden, weight, targets, bias=None, temperature=1.0,
                                   return_entropy=False, *, budget_bytes=None):
    """The forward of the gradient path: per chunk of counted rows, the logits GEMM into the
    fp32 [C, V] buffer and one _row_stats_kernel pass. hidden [N,H], weight [V,H], targets [N].
    Returns (logp [N] fp32, entropy [N] fp32 | None, lse [N] fp32); ignored rows get 0.
    ``budget_bytes``: the [C, V] buffer budget (default: the Target's chunk_budget); chunks are
    sized as the backward's, so both passes see the same chunks."""
    n, dev = hidden.shape[0], hidden.device
    logp = torch.zeros(n, dtype=torch.float32, device=dev)
    lse = torch.zeros(n, dtype=torch.float32, device=dev)
    entropy = torch.zeros(n, dtype=torch.float32, device=dev) if return_entropy else None
    rows = _valid_rows(targets)
    m, size, bufs = _chunking(hidden, weight, rows, budget_bytes, with_grad=False)
    w_t = weight.t()
    for start, stop in iter_chunks(m, size):
        z, _ = bufs.view(stop - start)
        gemm(_chunk(hidden, rows, start, stop), w_t, z)
        plan = head_rows.stats_plan(z, bias, _chunk(targets, rows, start, stop).contiguous(),
                                    temperature, return_entropy)
        launch_plan.launch(plan)
        lse_c, logp_c, ent_c = plan.outputs
        _store(lse, rows, start, stop, lse_c)
        _store(logp, rows, start, stop, logp_c)
        if return_entropy:
            _store(entropy, rows, start, stop, ent_c)
    return logp, entropy, lse


def linear_logprobs_backward_chunks(hidden, weight, targets, bias, temperature, lse, entropy,
                                    grad_logp, grad_entropy, *, need_hidden=True,
                                    need_weight=True, need_bias=True, budget_bytes=None):
    """Per chunk: the logits GEMM again, _row_grad_kernel -> dZ (compute dtype), then
    dH_c = dZ W and dW += dZ^T h_c (GEMMs accumulating in fp32), db += sum dZ.
    grad_logp / grad_entropy: [N] or None (= zero). Returns (dH [N,H] hidden.dtype,
    dW [V,H] weight.dtype, db [V] bias.dtype), None each when not wanted."""
    n, h_dim = hidden.shape
    v, dev = weight.shape[0], hidden.device
    need_bias = need_bias and bias is not None
    rows = _valid_rows(targets)
    m = n if rows is None else rows.numel()
    active = m > 0 and (grad_logp is not None or grad_entropy is not None)
    d_h = torch.zeros(n, h_dim, dtype=torch.float32, device=dev) if need_hidden else None
    d_w = (torch.empty if active else torch.zeros)(v, h_dim, dtype=torch.float32, device=dev) \
        if need_weight else None
    d_b = torch.zeros(v, dtype=torch.float32, device=dev) if need_bias else None
    if active and (need_hidden or need_weight or need_bias):
        _, size, bufs = _chunking(hidden, weight, rows, budget_bytes, with_grad=True)
        dh_c = torch.empty(size, h_dim, dtype=torch.float32, device=dev) \
            if need_hidden and rows is not None else None
        f32 = (lambda t: None if t is None else t.to(torch.float32))
        g_l, g_e = f32(grad_logp), f32(grad_entropy)
        for start, stop in iter_chunks(m, size):
            c = stop - start
            z, dz = bufs.view(c)
            h_c = _chunk(hidden, rows, start, stop)
            gemm(h_c, weight.t(), z)
            pick = (lambda t: None if t is None else _chunk(t, rows, start, stop).contiguous())
            g_lc = pick(g_l) if g_l is not None else torch.zeros(c, device=dev)
            launch_plan.launch(head_rows.grad_plan(
                z, bias, pick(targets), temperature, pick(lse), g_lc, pick(g_e),
                pick(entropy) if g_e is not None else None, dz))
            if need_hidden:
                if rows is None:
                    gemm(dz, weight, d_h[start:stop])
                else:
                    gemm(dz, weight, dh_c[:c])
                    d_h.index_copy_(0, rows[start:stop], dh_c[:c])
            if need_weight:
                gemm(dz.t(), h_c, d_w, accumulate=start > 0)
            if need_bias:
                d_b += dz.sum(0, dtype=torch.float32)
    return (None if d_h is None else d_h.to(hidden.dtype),
            None if d_w is None else d_w.to(weight.dtype),
            None if d_b is None else d_b.to(bias.dtype))
