"""Public fused linear log-probs: validation, impl dispatch, autograd Functions.

    linear_logprobs(hidden, weight, targets, *, bias=None, temperature=1.0,
                    return_entropy=False, impl="auto")

impl="torch" runs the chunked CPU/GPU torch implementation (reference/linear_logprobs.py),
impl="triton" the Triton kernels (ops/linear_logprobs.py, imported only when used),
impl="auto" Triton for CUDA tensors when Triton is installed, torch otherwise.
"""
from __future__ import annotations

import math

import torch

from ..reference.linear_logprobs import (
    IGNORE_INDEX,
    chunked_linear_logprobs_backward,
    chunked_linear_logprobs_forward,
)
from ..utils import check_same_device, describe, resolve_impl

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_linear_inputs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                        bias: torch.Tensor | None = None, *, check_values: bool = True) -> None:
    """Validate (hidden [N,H] | [B,T,H], weight [V,H], targets int [N] | [B,T], bias [V] | None).

    Raises TypeError for non-tensors and ValueError naming shapes/dtypes/devices for everything
    else: ranks, H mismatch, empty sizes, float dtypes, integer targets, targets outside
    [0, V) other than -100 (``check_values`` reads them: one device sync on GPU), devices.
    """
    for name, t in (("hidden", hidden), ("weight", weight), ("targets", targets), ("bias", bias)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    check_same_device(hidden=hidden, weight=weight, targets=targets, bias=bias)
    shapes = ", ".join(describe(k, v) for k, v in
                       (("hidden", hidden), ("weight", weight), ("targets", targets), ("bias", bias))
                       if v is not None)
    if hidden.dim() not in (2, 3):
        raise ValueError(f"hidden must be [N, H] or [B, T, H]; got {shapes}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be [V, H]; got {shapes}")
    if hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"hidden and weight disagree on H ({hidden.shape[-1]} vs "
                         f"{weight.shape[1]}); got {shapes}")
    if hidden.dtype not in _FLOAT_DTYPES or weight.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"hidden and weight must be floating point; got {shapes}")
    if hidden.dtype != weight.dtype:
        raise ValueError(f"hidden and weight must have the same dtype; got {shapes}")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(f"targets must be an integer tensor (token ids, -100 = ignored); got {shapes}")
    if tuple(targets.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"targets must have shape {list(hidden.shape[:-1])} (hidden without H); "
                         f"got {shapes}")
    if hidden.numel() == 0 or weight.numel() == 0:
        raise ValueError(f"empty input: N, H and V must all be > 0; got {shapes}")
    if bias is not None:
        if bias.dim() != 1 or bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias must be [V] = [{weight.shape[0]}]; got {shapes}")
        if bias.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"bias must be floating point; got {shapes}")
    if check_values and targets.device.type != "meta":
        bad = (targets != IGNORE_INDEX) & ((targets < 0) | (targets >= weight.shape[0]))
        if bool(bad.any()):
            first = bad.reshape(-1).nonzero()[0, 0].item()
            value = targets.reshape(-1)[first].item()
            raise ValueError(f"targets must be in [0, {weight.shape[0]}) or {IGNORE_INDEX}; "
                             f"found {value} at flat index {first}; got {shapes}")


def _check_temperature(temperature) -> float:
    if isinstance(temperature, torch.Tensor):
        temperature = temperature.item()
    t = float(temperature)
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature must be a finite positive number, got {temperature!r}")
    return t


class LinearLogprobsTorch(torch.autograd.Function):
    """Chunked torch implementation; inputs already flattened: hidden [N,H], targets [N]."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, bias, temperature, return_entropy):
        logp, entropy, state = chunked_linear_logprobs_forward(
            hidden, weight, targets, bias, temperature, return_entropy)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(hidden, weight, targets, bias)
        ctx.state, ctx.temperature = state, temperature
        return (logp, entropy) if return_entropy else logp

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy=None):
        hidden, weight, targets, bias = ctx.saved_tensors
        need_h, need_w, _, need_b = ctx.needs_input_grad[:4]
        dh, dw, db = chunked_linear_logprobs_backward(
            hidden, weight, targets, bias, ctx.temperature, ctx.state, grad_logp, grad_entropy,
            need_hidden=need_h, need_weight=need_w, need_bias=need_b)
        return dh, dw, None, db, None, None


class LinearLogprobsTriton(torch.autograd.Function):
    """Triton kernels (GPU, or the CPU interpreter); hidden [N,H], targets [N].

    ``block_sizes``: None (autotuned on GPU, large tiles in the interpreter) or a dict of
    launcher tile options (BLOCK_N, BLOCK_V, BLOCK_H, V_SPLIT, num_warps, num_stages).
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, bias, temperature, return_entropy, block_sizes):
        from ..ops.linear_logprobs import linear_logprobs_forward_triton

        logp, entropy, lse = linear_logprobs_forward_triton(
            hidden, weight, targets, bias, temperature, return_entropy, **(block_sizes or {}))
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(hidden, weight, targets, bias, lse, entropy)
        ctx.temperature, ctx.block_sizes = temperature, block_sizes
        return (logp, entropy) if return_entropy else logp

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy=None):
        from ..ops.linear_logprobs import linear_logprobs_backward_triton

        hidden, weight, targets, bias, lse, entropy = ctx.saved_tensors
        need_h, need_w, _, need_b = ctx.needs_input_grad[:4]
        dh, dw, db = linear_logprobs_backward_triton(
            hidden, weight, targets, bias, ctx.temperature, lse, entropy, grad_logp, grad_entropy,
            need_hidden=need_h, need_weight=need_w, need_bias=need_b,
            **(ctx.block_sizes or {}))
        return dh, dw, None, db, None, None, None


def linear_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                    bias: torch.Tensor | None = None, temperature: float = 1.0,
                    return_entropy: bool = False, impl: str = "auto"):
    """Log-probs of ``targets`` under softmax((hidden @ weight.T + bias) / temperature).

    Never materialises the [tokens, vocab] logits: tokens x vocab tiles with an online
    logsumexp, recomputed in backward.

    Args:
        hidden: [N, H] or [B, T, H], fp16 / bf16 / fp32 (fp64 on impl="torch").
        weight: [V, H], same dtype as hidden.
        targets: integer [N] or [B, T]; values in [0, V) or -100 (ignored: logp 0, entropy 0,
            no gradient).
        bias: optional [V].
        temperature: > 0; applied to the logits inside the op (logp, entropy and backward).
        return_entropy: also return the entropy of each row's distribution.
        impl: "auto" | "torch" | "triton" (Triton on CPU tensors needs TRITON_INTERPRET=1).

    Returns:
        logp shaped like targets, float32 (float64 for float64 inputs); with return_entropy,
        (logp, entropy). Differentiable w.r.t. hidden, weight and bias.
    """
    check_linear_inputs(hidden, weight, targets, bias)
    if hidden.device.type == "meta":
        raise ValueError(f"meta tensors carry no data; got {describe('hidden', hidden)}")
    temperature = _check_temperature(temperature)
    chosen = resolve_impl(impl, hidden, weight, targets, bias)
    if chosen == "triton" and hidden.dtype not in _TRITON_DTYPES:
        if impl == "triton":
            raise ValueError(f"impl='triton' supports fp16/bf16/fp32 inputs; got "
                             f"{describe('hidden', hidden)}; use impl='torch' for fp64")
        chosen = "torch"
    out_shape = targets.shape
    hidden2d = hidden.reshape(-1, hidden.shape[-1])
    targets1d = targets.reshape(-1)
    if chosen == "triton":
        out = LinearLogprobsTriton.apply(hidden2d, weight, targets1d, bias, temperature,
                                         bool(return_entropy), None)
    else:
        out = LinearLogprobsTorch.apply(hidden2d, weight, targets1d, bias, temperature,
                                        bool(return_entropy))
    if return_entropy:
        logp, entropy = out
        return logp.view(out_shape), entropy.view(out_shape)
    return out.view(out_shape)
