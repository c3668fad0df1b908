"""Public GRPO ops: validation, impl dispatch, autograd Functions.

    group_advantages(rewards, group_size, *, scale="group", eps=1e-4)
    grpo_loss(logp, advantages, mask, *, old_logp=None, ref_logp=None, beta=0.04, ...)
    linear_grpo_loss(hidden, weight, targets, mask, advantages, *, ...)

impl="torch": the closed-form per-token maths (formulas.py); for linear_grpo_loss the chunked
single-pass CPU implementation (ops/linear_grpo_loss_chunked.py). The oracles the tests hold
them to: reference/grpo_loss.py. impl="triton": ops/grpo_loss.py and ops/linear_grpo_loss.py
(imported only when used). impl="auto": Triton on CUDA tensors when Triton is installed.

Gradients flow to logp (grpo_loss) and to hidden, weight, bias (linear_grpo_loss) only:
advantages, old_logp, ref_logp and mask are constants, as in TRL (computed under no_grad there).
Both losses do all their work in forward (the per-token loss gradient is local) and save the
gradient; backward only scales it by grad_output.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..formulas import ADVANTAGE_SCALES, grpo_token_terms, stats_to_metrics, token_weights
from ..ops.linear_grpo_loss_chunked import linear_grpo_loss_chunked
from ..reference.grpo_loss import group_advantages_reference
from ..utils import describe, resolve_impl
from .checks import (
    FLOAT_DTYPES,
    check_counted_targets,
    check_grpo_options,
    check_linear_head,
    check_same_device,
    check_temperature,
    check_token_tensors,
    require_tensors,
    shapes_of,
)


# ----------------------------------------------------------------------------- advantages
def group_advantages(rewards, group_size: int, *, scale: str = "group", eps: float = 1e-4,
                     impl: str = "auto") -> torch.Tensor:
    """Group-relative advantages.

    rewards: 1-D tensor or sequence of numbers [G * group_size]; consecutive runs of ``group_size``
    items form a group. Returns float32 [G * group_size]:
        "group": (r - mean_g) / (std_g + eps), unbiased std of the group (TRL's default)
        "batch": (r - mean_g) / (std_batch + eps)
        "none":  r - mean_g
    NaN rewards are left out of the statistics (nanmean/nanstd as TRL) and get advantage 0; a group
    whose rewards are all equal gets 0, never NaN. ValueError when group_size does not divide the
    number of rewards or ``scale`` is unknown.
    """
    if not isinstance(rewards, torch.Tensor):
        if not isinstance(rewards, Sequence) or isinstance(rewards, (str, bytes)):
            raise TypeError(f"rewards must be a 1-D tensor or a sequence of numbers, got {type(rewards).__name__}")
        rewards = torch.tensor([float("nan") if r is None else float(r) for r in rewards], dtype=torch.float32)
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D; got {describe('rewards', rewards)}")
    if not rewards.dtype.is_floating_point:
        rewards = rewards.to(torch.float32)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if rewards.numel() == 0 or rewards.numel() % group_size:
        raise ValueError(f"group_size={group_size} must divide the number of rewards ({rewards.numel()}) "
                         "and there must be at least one")
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"scale must be one of {ADVANTAGE_SCALES}, got {scale!r}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if resolve_impl(impl, rewards) == "triton":
        from ..ops.grpo_loss import group_advantages_triton
        return group_advantages_triton(rewards, group_size, scale, float(eps))
    return group_advantages_reference(rewards, group_size, scale, float(eps))


def _flat_inputs(mask, advantages, old_logp, ref_logp, loss_type, max_completion_length, dtype):
    """-> weights [B,T] (token_weights), advantages [B,T], old [B,T] | None, ref [B,T] | None in dtype."""
    weights = token_weights(mask, loss_type, max_completion_length, dtype)
    adv = advantages.to(dtype)
    adv = (adv[:, None] if adv.dim() == 1 else adv).expand(mask.shape)
    old = None if old_logp is None else old_logp.detach().to(dtype)
    ref = None if ref_logp is None else ref_logp.detach().to(dtype)
    return weights, adv, old, ref


# ------------------------------------------------------------------------------ grpo_loss
class GRPOLossFunction(torch.autograd.Function):
    """logp [B,T] -> (loss 0-d, stats [8]); forward computes d(loss)/d(logp) and saves it."""

    @staticmethod
    def forward(ctx, logp, weights, adv, old, ref, beta, epsilon_low, epsilon_high, impl):
        dtype = torch.float64 if logp.dtype == torch.float64 else torch.float32
        lp = logp.detach().to(dtype)
        if impl == "triton":
            from ..ops.grpo_loss import grpo_token_loss_triton
            loss, grad, stats = grpo_token_loss_triton(lp, weights, adv, old, ref, beta, epsilon_low, epsilon_high)
        else:
            loss_t, grad, stats = grpo_token_terms(lp, weights, adv, old, ref, beta, epsilon_low, epsilon_high)
            loss = loss_t.sum()
        ctx.save_for_backward(grad)
        ctx.logp_dtype = logp.dtype
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    def backward(ctx, grad_loss, grad_stats):
        (grad,) = ctx.saved_tensors
        return (grad * grad_loss).to(ctx.logp_dtype), None, None, None, None, None, None, None, None


def grpo_loss(logp, advantages, mask, *, old_logp=None, ref_logp=None, beta: float = 0.04,
              epsilon_low: float = 0.2, epsilon_high: float = 0.2, loss_type: str = "grpo",
              max_completion_length: int | None = None, impl: str = "auto"):
    """Clipped-surrogate GRPO loss with a k3 KL penalty, from per-token log-probs.

    logp [B,T] float (differentiable); advantages [B] or [B,T]; mask [B,T] (bool/int/float; tokens
    with mask 0 do not count, float values weight tokens as in TRL); old_logp, ref_logp [B,T] or None.
        ratio = exp(logp - old_logp)    (old_logp None -> logp.detach(): ratio 1, REINFORCE gradient)
        l_t   = -min(ratio A, clip(ratio, 1-epsilon_low, 1+epsilon_high) A) + beta * KL_t
        KL_t  = exp(ref - logp) - (ref - logp) - 1   (beta > 0 requires ref_logp: ValueError otherwise)
    loss_type "grpo": per-sequence masked mean, then mean over the B sequences (a sequence without
    counted tokens contributes 0); "bnpo": sum / counted tokens; "dr_grpo": sum / (B *
    max_completion_length), default T. No counted tokens at all -> loss 0, gradient 0.
    Returns (loss: 0-d tensor, float32 or float64 for float64 logp; metrics: dict of 0-d detached
    float32 tensors "kl", "clip_ratio", "clip_ratio_low", "clip_ratio_high", "ratio_mean",
    "ratio_min", "ratio_max", "num_tokens").
    """
    if not isinstance(logp, torch.Tensor):
        raise TypeError(f"logp must be a torch.Tensor, got {type(logp).__name__}")
    if logp.dim() != 2 or logp.dtype not in FLOAT_DTYPES:
        raise ValueError(f"logp must be a floating [B, T] tensor; got {describe('logp', logp)}")
    b, t = logp.shape
    check_token_tensors(b, t, f"logp is {list(logp.shape)}", mask, advantages, old_logp, ref_logp)
    check_grpo_options(beta, epsilon_low, epsilon_high, loss_type, max_completion_length, ref_logp)
    check_same_device(logp=logp, mask=mask, advantages=advantages, old_logp=old_logp, ref_logp=ref_logp)
    backend = resolve_impl(impl, logp)
    dtype = torch.float64 if logp.dtype == torch.float64 else torch.float32
    use_ref = ref_logp if beta > 0 else None
    weights, adv, old, ref = _flat_inputs(mask, advantages, old_logp, use_ref, loss_type,
                                          max_completion_length, dtype)
    loss, stats = GRPOLossFunction.apply(logp, weights, adv, old, ref, float(beta), float(epsilon_low),
                                         float(epsilon_high), backend)
    return loss, stats_to_metrics(stats)


# ------------------------------------------------------------------------- linear_grpo_loss
class LinearGRPOLossFunction(torch.autograd.Function):
    """(hidden [N,H], weight [V,H], bias [V] | None) -> (loss 0-d, stats [8]).

    Forward computes the loss and dH, dW, db in one pass; backward scales them by grad_output.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, weights, adv, old, ref, beta, epsilon_low, epsilon_high,
                temperature, impl, need_grads):
        need_h, need_w, need_b = need_grads
        args = (hidden.detach(), weight.detach(), targets, weights, adv, old, ref)
        kwargs = {"beta": beta, "epsilon_low": epsilon_low, "epsilon_high": epsilon_high,
                  "temperature": temperature, "bias": None if bias is None else bias.detach(),
                  "need_hidden_grad": need_h, "need_weight_grad": need_w, "need_bias_grad": need_b}
        if impl == "triton":
            from ..ops.linear_grpo_loss import linear_grpo_loss_triton
            loss, d_h, d_w, d_b, stats = linear_grpo_loss_triton(*args, **kwargs)
        else:
            loss, d_h, d_w, d_b, stats = linear_grpo_loss_chunked(*args, **kwargs)
        # Saved tensors are released right after backward (unless retain_graph), so the buffers
        # returned there become the .grad tensors without a copy: the ~V*H*4-byte dW exists once.
        ctx.save_for_backward(d_h, d_w, d_b)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    def backward(ctx, grad_loss, grad_stats):
        d_h, d_w, d_b = ctx.saved_tensors
        h_dtype, w_dtype, b_dtype = ctx.dtypes

        unit = bool(grad_loss == 1)  # the usual loss.backward(): return the buffers themselves

        def scaled(g, dtype):
            if g is None:
                return None
            if not unit:
                g = g * grad_loss.to(g.dtype)
            return g.to(dtype)

        return (scaled(d_h, h_dtype), scaled(d_w, w_dtype), scaled(d_b, b_dtype),
                None, None, None, None, None, None, None, None, None, None, None)


def linear_grpo_loss(hidden, weight, targets, mask, advantages, *, old_logp=None, ref_logp=None,
                     beta: float = 0.04, epsilon_low: float = 0.2, epsilon_high: float = 0.2,
                     temperature: float = 1.0, loss_type: str = "grpo", max_completion_length: int | None = None,
                     bias=None, impl: str = "auto"):
    """GRPO loss straight from hidden states, never materialising [B*T, V] logits.

    hidden [B,T,H] and weight [V,H] (same float dtype), bias [V] or None, targets int [B,T] (the
    sampled tokens; where mask == 0 any value, e.g. -100), mask [B,T], advantages [B] or [B,T],
    old_logp / ref_logp [B,T] or None.
        logp_t = log softmax((h_t W^T + b) / temperature)[y_t]     in fp32
    then exactly ``grpo_loss(logp, ...)`` (see there for beta, epsilons, loss_type, metrics).
    Differentiable w.r.t. hidden, weight and bias. Gradients are computed in forward, one pass,
    three GEMMs (logits, dH, dW) over token chunks; backward scales them by grad_output.
    Returns (loss 0-d float32 (float64 for float64 inputs), metrics dict).
    """
    require_tensors(hidden=hidden, weight=weight, targets=targets, mask=mask, bias=bias)
    if mask is None:
        raise TypeError("mask must be a torch.Tensor, got NoneType")
    check_linear_head(hidden, weight, targets, bias, ranks=(3,), hidden_form="[B, T, H]",
                      dims="B, T, H and V", ignored="",
                      shapes=shapes_of(hidden=hidden, weight=weight, targets=targets, mask=mask,
                                       bias=bias))
    b, t, h = hidden.shape
    check_token_tensors(b, t, f"hidden is {list(hidden.shape)}", mask, advantages, old_logp,
                        ref_logp)
    check_counted_targets(targets, mask, weight.shape[0])
    check_grpo_options(beta, epsilon_low, epsilon_high, loss_type, max_completion_length, ref_logp)
    temperature = check_temperature(temperature)
    check_same_device(hidden=hidden, weight=weight, targets=targets, mask=mask, advantages=advantages,
                      old_logp=old_logp, ref_logp=ref_logp, bias=bias)
    backend = resolve_impl(impl, hidden)
    dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    use_ref = ref_logp if beta > 0 else None
    weights, adv, old, ref = _flat_inputs(mask, advantages, old_logp, use_ref, loss_type,
                                          max_completion_length, dtype)
    flat = (lambda x: None if x is None else x.reshape(-1).contiguous())
    grad_on = torch.is_grad_enabled()
    need = (grad_on and hidden.requires_grad, grad_on and weight.requires_grad,
            grad_on and bias is not None and bias.requires_grad)
    loss, stats = LinearGRPOLossFunction.apply(
        hidden.reshape(b * t, h).contiguous(), weight.contiguous(), bias,
        targets.reshape(-1).long(), flat(weights), flat(adv), flat(old), flat(ref), float(beta),
        float(epsilon_low), float(epsilon_high), float(temperature), backend, need)
    return loss, stats_to_metrics(stats)
