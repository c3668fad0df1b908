"""Triton kernels: group advantages and the per-token GRPO loss with its gradient.

    group_advantages_triton(rewards [n], group_size, scale, eps) -> float32 [n]
    grpo_token_loss_triton(logp, weights, adv, old, ref, beta, eps_low, eps_high)
        -> (loss 0-d fp32, d(loss)/d(logp) like logp in fp32, stats [8])

``grpo_token_math`` is the per-token maths as a @triton.jit function; the fused kernel of
ops/linear_grpo_loss.py calls it too, so both Triton paths share one formula with
formulas.py:policy_token_terms for the options it covers (the torch twin; the test
oracle is reference/grpo_loss.py).
Each launch is built by a plan function (group_advantages_plans, grpo_token_plan:
ops/launch_plan.py), which the AOT registry (gpu/launches.py) calls too.
Kernels are defined only when triton imports; launching on CPU tensors needs TRITON_INTERPRET=1.
"""
from __future__ import annotations

import torch

from ..formulas import KERNEL_STATS, NUM_STATS, STAT_RATIO_MAX, STAT_RATIO_MIN
from ..utils import require_triton
from . import launch_plan
from .launch_plan import LaunchPlan
from .triton_import import tl, triton  # None without Triton

_SCALE_CODE = {"none": 0, "group": 1, "batch": 2}
TOKEN_BLOCK = 1024

if triton is not None:

    @triton.jit
    def grpo_token_math(logp, old, ref, adv, w, beta, eps_low, eps_high,
                        HAS_OLD: tl.constexpr, HAS_REF: tl.constexpr):
        """Per-token weighted loss, d(loss)/d(logp) and metric terms (all fp32, same shape).

        Tokens with w == 0 get loss 0 and gradient 0, whatever their log-probs hold.
        Returns (loss, grad, kl, clipped_low, clipped_high, ratio, counted) -- the last four
        already zeroed where w == 0 (ratio too) so callers can sum them.
        """
        counted = w != 0.0
        if HAS_OLD:
            ratio = tl.exp(tl.where(counted, logp - old, 0.0))
        else:
            ratio = tl.full(logp.shape, 1.0, tl.float32)
        clipped_low = (ratio < 1.0 - eps_low) & (adv < 0.0)
        clipped_high = (ratio > 1.0 + eps_high) & (adv > 0.0)
        ratio_clipped = tl.minimum(tl.maximum(ratio, 1.0 - eps_low), 1.0 + eps_high)
        pg = -tl.minimum(ratio * adv, ratio_clipped * adv)
        dpg = tl.where(clipped_low | clipped_high, 0.0, -adv * ratio)
        if HAS_REF:
            diff = tl.where(counted, ref - logp, 0.0)
            e = tl.exp(diff)
            kl = e - diff - 1.0
            loss = pg + beta * kl
            grad = dpg + beta * (1.0 - e)
        else:
            kl = tl.zeros(logp.shape, tl.float32)
            loss = pg
            grad = dpg
        loss = tl.where(counted, w * loss, 0.0)
        grad = tl.where(counted, w * grad, 0.0)
        kl = tl.where(counted, kl, 0.0)
        low_f = tl.where(counted & clipped_low, 1.0, 0.0)
        high_f = tl.where(counted & clipped_high, 1.0, 0.0)
        return loss, grad, kl, low_f, high_f, ratio, counted

    @triton.jit
    def load_token_inputs(w_ptr, adv_ptr, old_ptr, ref_ptr, idx, ok, logp,
                          HAS_OLD: tl.constexpr, HAS_REF: tl.constexpr):
        """(weight, advantage, old, ref) of the tokens at ``idx``; old / ref default to logp
        (ratio 1, no KL) when not given."""
        w = tl.load(w_ptr + idx, mask=ok, other=0.0)
        adv = tl.load(adv_ptr + idx, mask=ok, other=0.0)
        old = logp
        ref = logp
        if HAS_OLD:
            old = tl.load(old_ptr + idx, mask=ok, other=0.0)
        if HAS_REF:
            ref = tl.load(ref_ptr + idx, mask=ok, other=0.0)
        return w, adv, old, ref

    @triton.jit
    def store_token_stats(stats_ptr, loss, kl, low_f, high_f, ratio, counted):
        """Write this block's 8 partial statistics (layout: reference STAT_* constants)."""
        cnt = tl.where(counted, 1.0, 0.0)
        tl.store(stats_ptr + 0, tl.sum(loss, axis=0))
        tl.store(stats_ptr + 1, tl.sum(kl, axis=0))
        tl.store(stats_ptr + 2, tl.sum(low_f, axis=0))
        tl.store(stats_ptr + 3, tl.sum(high_f, axis=0))
        tl.store(stats_ptr + 4, tl.sum(tl.where(counted, ratio, 0.0), axis=0))
        tl.store(stats_ptr + 5, tl.sum(cnt, axis=0))
        tl.store(stats_ptr + 6, tl.min(tl.where(counted, ratio, float("inf")), axis=0))
        tl.store(stats_ptr + 7, tl.max(tl.where(counted, ratio, float("-inf")), axis=0))

    @triton.jit
    def _grpo_token_kernel(logp_ptr, old_ptr, ref_ptr, adv_ptr, w_ptr, grad_ptr, stats_ptr, n,
                           beta, eps_low, eps_high, HAS_OLD: tl.constexpr, HAS_REF: tl.constexpr,
                           BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        valid = offs < n
        logp = tl.load(logp_ptr + offs, mask=valid, other=0.0)
        w, adv, old, ref = load_token_inputs(w_ptr, adv_ptr, old_ptr, ref_ptr, offs, valid, logp,
                                             HAS_OLD, HAS_REF)
        loss, grad, kl, low_f, high_f, ratio, counted = grpo_token_math(
            logp, old, ref, adv, w, beta, eps_low, eps_high, HAS_OLD, HAS_REF)
        tl.store(grad_ptr + offs, grad, mask=valid)
        store_token_stats(stats_ptr + pid * 8, loss, kl, low_f, high_f, ratio, counted)

    @triton.jit
    def _batch_std_kernel(r_ptr, out_ptr, n, BLOCK: tl.constexpr):
        """out[0] = unbiased std of the non-NaN rewards (0 with fewer than two)."""
        total = tl.zeros((BLOCK,), tl.float32)
        count = tl.zeros((BLOCK,), tl.float32)
        for start in range(0, n, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            r = tl.load(r_ptr + offs, mask=offs < n, other=float("nan"))
            ok = r == r  # noqa: PLR0124 - False exactly for NaN
            total += tl.where(ok, r, 0.0)
            count += tl.where(ok, 1.0, 0.0)
        cnt = tl.sum(count, axis=0)
        mean = tl.sum(total, axis=0) / tl.maximum(cnt, 1.0)
        sq = tl.zeros((BLOCK,), tl.float32)
        for start in range(0, n, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            r = tl.load(r_ptr + offs, mask=offs < n, other=float("nan"))
            d = tl.where(r == r, r - mean, 0.0)  # noqa: PLR0124
            sq += d * d
        var = tl.sum(sq, axis=0) / tl.maximum(cnt - 1.0, 1.0)
        tl.store(out_ptr, tl.sqrt(var))

    @triton.jit
    def _group_advantages_kernel(r_ptr, out_ptr, batch_std_ptr, group_size, eps,
                                 SCALE: tl.constexpr, BLOCK: tl.constexpr):
        """One program per group: nan-aware (r - mean) / (std + eps); NaN rewards -> 0."""
        g = tl.program_id(0).to(tl.int64)
        offs = tl.arange(0, BLOCK)
        inside = offs < group_size
        r = tl.load(r_ptr + g * group_size + offs, mask=inside, other=float("nan"))
        ok = r == r  # noqa: PLR0124 - False exactly for NaN
        cnt = tl.sum(tl.where(ok, 1.0, 0.0), axis=0)
        mean = tl.sum(tl.where(ok, r, 0.0), axis=0) / tl.maximum(cnt, 1.0)
        centred = tl.where(ok, r - mean, 0.0)
        if SCALE == 1:
            var = tl.sum(centred * centred, axis=0) / tl.maximum(cnt - 1.0, 1.0)
            adv = centred / (tl.sqrt(var) + eps)
        elif SCALE == 2:
            adv = centred / (tl.load(batch_std_ptr) + eps)
        else:
            adv = centred
        tl.store(out_ptr + g * group_size + offs, adv, mask=inside)




def reduce_stats(partials: torch.Tensor) -> torch.Tensor:
    """[blocks, KERNEL_STATS] per-block statistics -> [NUM_STATS] (sums; min/max for the ratio
    extremes; the entries the kernels do not write -- entropy, cispo clips -- are 0)."""
    stats = torch.zeros(NUM_STATS, dtype=torch.float32, device=partials.device)
    stats[:KERNEL_STATS] = partials.sum(0)
    stats[STAT_RATIO_MIN] = partials[:, STAT_RATIO_MIN].min()
    stats[STAT_RATIO_MAX] = partials[:, STAT_RATIO_MAX].max()
    return stats


def group_advantages_plans(rewards: torch.Tensor, group_size: int, scale: str = "group",
                           eps: float = 1e-4) -> list[LaunchPlan]:
    """The launches of ``group_advantages_triton``: the batch std (scale="batch" only), then
    the per-group kernel, whose outputs are (advantages [n] fp32,)."""
    require_triton()
    r = rewards.detach().to(torch.float32).contiguous()
    n = r.numel()
    out = torch.empty_like(r)
    batch_std = torch.zeros(1, dtype=torch.float32, device=r.device)
    plans = []
    if scale == "batch":
        plans.append(LaunchPlan(_batch_std_kernel, (1,), (r, batch_std, n),
                                {"BLOCK": min(4096, triton.next_power_of_2(n))}))
    plans.append(LaunchPlan(_group_advantages_kernel, (n // group_size,),
                            (r, out, batch_std, group_size, float(eps)),
                            {"SCALE": _SCALE_CODE[scale],
                             "BLOCK": triton.next_power_of_2(group_size)},
                            outputs=(out,)))
    return plans


def group_advantages_triton(rewards: torch.Tensor, group_size: int, scale: str = "group",
                            eps: float = 1e-4) -> torch.Tensor:
    """rewards [G*group_size] -> float32 advantages (same maths as group_advantages_reference)."""
    plans = group_advantages_plans(rewards, group_size, scale, eps)
    for plan in plans:
        launch_plan.launch(plan)
    return plans[-1].outputs[0]


def grpo_token_plan(logp, weights, adv, old, ref, beta, epsilon_low, epsilon_high, *,
                    block: int = TOKEN_BLOCK) -> LaunchPlan:
    """The _grpo_token_kernel launch of ``grpo_token_loss_triton`` (same arguments): inputs
    broadcast to logp's shape as contiguous fp32; outputs = (grad like logp, per-block stats
    [blocks, KERNEL_STATS]), fp32."""
    require_triton()

    def prep(t):
        return t.detach().to(torch.float32).expand(logp.shape).contiguous()

    lp = prep(logp)
    n = lp.numel()
    grad = torch.empty_like(lp)
    blocks = max(1, triton.cdiv(n, block))
    partials = torch.empty(blocks, KERNEL_STATS, dtype=torch.float32, device=lp.device)
    old_t = prep(old) if old is not None else lp
    ref_t = prep(ref) if ref is not None else lp
    return LaunchPlan(_grpo_token_kernel, (blocks,),
                      (lp, old_t, ref_t, prep(adv), prep(weights), grad, partials, n,
                       float(beta), float(epsilon_low), float(epsilon_high)),
                      {"HAS_OLD": old is not None, "HAS_REF": ref is not None, "BLOCK": block},
                      outputs=(grad, partials))


def grpo_token_loss_triton(logp, weights, adv, old, ref, beta, epsilon_low, epsilon_high, *,
                           block: int = TOKEN_BLOCK):
    """Elementwise GRPO loss over tokens of any shape (all tensors broadcast to logp's shape).

    Returns (loss 0-d fp32, grad fp32 shaped like logp, stats [8] fp32).
    """
    plan = grpo_token_plan(logp, weights, adv, old, ref, beta, epsilon_low, epsilon_high,
                           block=block)
    launch_plan.launch(plan)
    grad, partials = plan.outputs
    stats = reduce_stats(partials)
    return stats[0].clone(), grad, stats
