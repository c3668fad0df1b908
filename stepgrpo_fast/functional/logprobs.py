"""Public fused linear log-probs: validation, impl dispatch, autograd Functions.

    linear_logprobs(hidden, weight, targets, *, bias=None, temperature=1.0,
                    return_entropy=False, impl="auto")

impl="torch" runs the chunked CPU/GPU torch implementation (ops/linear_logprobs_chunked.py),
impl="triton" the Triton kernels (ops/linear_logprobs.py, imported only when used),
impl="auto" Triton for CUDA tensors when Triton is installed, torch otherwise.
"""
from __future__ import annotations

import torch

from ..ops.linear_logprobs_chunked import (
    chunked_linear_logprobs_backward,
    chunked_linear_logprobs_forward,
)
from ..utils import describe, resolve_impl
from .checks import (
    TRITON_DTYPES,
    check_linear_head,
    check_same_device,
    check_target_ids,
    check_temperature,
    require_tensors,
    shapes_of,
)


def check_linear_inputs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                        bias: torch.Tensor | None = None, *, check_values: bool = True) -> None:
    """Validate (hidden [N,H] | [B,T,H], weight [V,H], targets int [N] | [B,T], bias [V] | None).

    Raises TypeError for non-tensors and ValueError naming shapes/dtypes/devices for everything
    else: ranks, H mismatch, empty sizes, float dtypes, integer targets, targets outside
    [0, V) other than -100 (``check_values`` reads them: one device sync on GPU), devices.
    """
    require_tensors(hidden=hidden, weight=weight, targets=targets, bias=bias)
    check_same_device(hidden=hidden, weight=weight, targets=targets, bias=bias)
    shapes = shapes_of(hidden=hidden, weight=weight, targets=targets, bias=bias)
    check_linear_head(hidden, weight, targets, bias, ranks=(2, 3),
                      hidden_form="[N, H] or [B, T, H]", dims="N, H and V",
                      ignored=" (-100 = ignored)", shapes=shapes)
    if check_values:
        check_target_ids(targets, weight.shape[0], shapes)


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
    """Triton path (GPU, or the CPU interpreter); hidden [N,H], targets [N].

    Without any input needing a gradient: the fused forward kernel (no [C, V] buffer). With
    one: the chunked GEMM + row-pass forward, and its backward (ops/linear_logprobs.py).
    ``options``: None, or a dict of fused-kernel tile options (BLOCK_N, BLOCK_V, BLOCK_H,
    V_SPLIT, num_warps, num_stages) and/or ``budget_bytes`` (the chunks' [C, V] budget).
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, bias, temperature, return_entropy, options):
        from ..ops import linear_logprobs as ops

        options = dict(options or {})
        budget = options.pop("budget_bytes", None)
        if any(ctx.needs_input_grad[:4]):
            logp, entropy, lse = ops.linear_logprobs_forward_chunks(
                hidden, weight, targets, bias, temperature, return_entropy, budget_bytes=budget)
        else:
            logp, entropy, lse = ops.linear_logprobs_forward_triton(
                hidden, weight, targets, bias, temperature, return_entropy, **options)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(hidden, weight, targets, bias, lse, entropy)
        ctx.temperature, ctx.budget = temperature, budget
        return (logp, entropy) if return_entropy else logp

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy=None):
        from ..ops.linear_logprobs import linear_logprobs_backward_chunks

        hidden, weight, targets, bias, lse, entropy = ctx.saved_tensors
        need_h, need_w, _, need_b = ctx.needs_input_grad[:4]
        dh, dw, db = linear_logprobs_backward_chunks(
            hidden, weight, targets, bias, ctx.temperature, lse, entropy, grad_logp, grad_entropy,
            need_hidden=need_h, need_weight=need_w, need_bias=need_b, budget_bytes=ctx.budget)
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
    temperature = check_temperature(temperature)
    chosen = resolve_impl(impl, hidden, weight, targets, bias)
    if chosen == "triton" and hidden.dtype not in TRITON_DTYPES:
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
