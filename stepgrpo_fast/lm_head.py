"""The one LM-head log-prob path: find the head, unwrap, gather, scale, score.

The native trainer (trainer/model/objective.py), the TRL adapter (integrations/trl.py) and the verl adapter
(integrations/verl.py) all score completion tokens through these functions:

    unwrap_model(model)          the PreTrainedModel under DDP / DeepSpeed / torch.compile / PEFT
    output_head(model)           its output embedding as an nn.Linear (weight [V, H], bias [V] | None);
                                 a PEFT ``modules_to_save`` copy of the head resolves to the copy
                                 that is active (the original while adapters are disabled)
    effective_temperature(config, T)   T / logit scale (logits * s / T == logits / (T / s))
    gathered_head(weight, bias)  context: a ZeRO-3 partitioned head materialised, plus a
                                 ``regather`` factory for the backward (None when not partitioned)
    head_logprobs(hidden, weight, bias, targets, ...)   log-probs (+ entropies) [N] fp32, never [N, V]

Torch only at import; DeepSpeed and PEFT are looked up lazily and only when their wrappers exist.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

_MAX_WRAPPERS = 8


def unwrap_model(model):
    """The bare HF model under DDP / DeepSpeedEngine (``.module``), torch.compile (``._orig_mod``)
    and PEFT (``get_base_model()``) wrappers, in any nesting (at most 8 deep)."""
    for _ in range(_MAX_WRAPPERS):
        if callable(getattr(model, "get_base_model", None)):  # PeftModel
            model = model.get_base_model()
        elif isinstance(getattr(model, "module", None), torch.nn.Module):  # DDP, DeepSpeed
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model
    return model


def _active_copy(head):
    """A PEFT ModulesToSaveWrapper -> the module its forward would run now; anything else as is."""
    copies = getattr(head, "modules_to_save", None)
    original = getattr(head, "original_module", None)
    if not isinstance(copies, torch.nn.ModuleDict) or original is None:
        return head
    if getattr(head, "disable_adapters", False):
        return original
    active = getattr(head, "active_adapter", None)
    active = active[0] if isinstance(active, (list, tuple)) and active else active
    return copies[active] if active in copies else original


def output_head(model) -> torch.nn.Linear:
    """The output embedding (nn.Linear, weight [V, H]) of a causal (V)LM, through any wrapper.

    TypeError when it is not a plain linear layer, e.g. a LoRA-adapted lm_head (the fused ops read
    the weight directly and would ignore the adapter: put lm_head in modules_to_save instead).
    """
    head = unwrap_model(model).get_output_embeddings()
    head = _active_copy(head)
    if not isinstance(head, torch.nn.Linear) or type(head).__module__.startswith("peft"):
        raise TypeError(
            "the fused log-prob ops need the output embedding to be a plain nn.Linear, got "
            f"{type(head).__module__}.{type(head).__name__}; a LoRA adapter on lm_head is not "
            "supported (keep lm_head out of the LoRA targets, or train it via modules_to_save)"
        )
    return head


def logit_scale(text_config) -> float:
    """The factor the model multiplies its logits by (1.0 for Qwen): logit_scale /
    output_multiplier / lm_head_multiplier, or 1 / logits_scaling (HyperCLOVA X multiplies)."""
    for attr in ("logit_scale", "output_multiplier", "lm_head_multiplier"):
        value = getattr(text_config, attr, None)
        if value is not None:
            return float(value)
    scaling = getattr(text_config, "logits_scaling", None)
    if scaling is not None:
        hyperclova = getattr(text_config, "model_type", "") == "hyperclovax"
        return float(scaling) if hyperclova else 1.0 / float(scaling)
    return 1.0


def effective_temperature(config, temperature: float) -> float:
    """The temperature to give the fused ops so they score ``softmax(logits(model) / T)``.

    ``config``: a model config (its text config is used). ValueError for a model whose logits
    go through final_logit_softcapping (a tanh the fused ops do not implement).
    """
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text_config, "final_logit_softcapping", None) is not None:
        raise ValueError(
            f"{getattr(text_config, 'model_type', 'this model')} uses final_logit_softcapping, "
            "which the fused log-prob ops do not implement"
        )
    return float(temperature) / logit_scale(text_config)


# ------------------------------------------------------------------------------- ZeRO-3 / FSDP2
def zero3_partitioned(*params) -> list:
    """Parameters that DeepSpeed ZeRO-3 currently holds partitioned (empty until gathered)."""
    try:
        from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus
    except ImportError:
        return []
    found = {}
    for p in params:
        if p is not None and hasattr(p, "ds_id") and getattr(p, "ds_status", None) != ZeroParamStatus.AVAILABLE:
            found[id(p)] = p
    return list(found.values())


def _zero3_gather(params: list):
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def _full_tensor(param):
    """An FSDP2 (DTensor) parameter gathered whole; its gradient is reduce-scattered back to the
    shards averaged over the mesh, as FSDP2 averages every other gradient (plain ``full_tensor``
    would leave each shard only its own rank's gradient)."""
    from torch.distributed.tensor import Partial

    return param.full_tensor(grad_placements=[Partial("avg")] * param.device_mesh.ndim)


@contextlib.contextmanager
def gathered_head(weight: torch.Tensor, bias: torch.Tensor | None):
    """with gathered_head(w, b) as (weight, bias, regather): the head's full tensors inside.

    FSDP2 DTensors are made full (their gradient reduce-scattered back, averaged over the
    processes); ZeRO-3 partitions are gathered for the block, and ``regather``
    (a context-manager factory) is what the backward needs to gather them again (None when the
    head was not partitioned: pass it on to :func:`head_logprobs`).
    """
    if type(weight).__name__ == "DTensor":  # FSDP2 shards the head (read outside its forward)
        weight = _full_tensor(weight)
        bias = None if bias is None else _full_tensor(bias)
    partitioned = zero3_partitioned(weight, bias)
    if not partitioned:
        yield weight, bias, None
        return
    regather = (lambda: _zero3_gather(partitioned))
    with regather():
        yield weight, bias, regather


class _RegatheredLinearLogprobs(torch.autograd.Function):
    """linear_logprobs for an LM head whose parameters exist only inside ``regather()`` (ZeRO-3).

    ``apply`` runs inside ``regather()``. The backward enters ``regather()`` again, recomputes,
    and accumulates the weight / bias gradients into the parameters *while they are gathered*
    (a nested ``autograd.backward`` on the leaves, so DeepSpeed's gradient hooks see full-size
    gradients exactly as after a module's own backward); nothing of size [V, H] is kept between
    forward and backward. Only the hidden-state gradient flows back through the graph.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, regather, temperature, impl, compute_dtype):
        ctx.regather, ctx.temperature, ctx.impl, ctx.compute_dtype = regather, temperature, impl, compute_dtype
        ctx.weight, ctx.bias = weight, bias
        ctx.save_for_backward(hidden, targets)
        with torch.no_grad():
            return _linear_logprobs(hidden, weight, bias, targets, temperature, impl, compute_dtype)

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        hidden, targets = ctx.saved_tensors
        params = [t for t in (ctx.weight, ctx.bias) if t is not None and t.requires_grad]
        grad_hidden = None
        with ctx.regather():
            with torch.enable_grad():
                h = hidden.detach().requires_grad_(ctx.needs_input_grad[0])
                leaves = {id(p): p.detach().requires_grad_() for p in params}
                w = leaves.get(id(ctx.weight), ctx.weight.detach())
                b = None if ctx.bias is None else leaves.get(id(ctx.bias), ctx.bias.detach())
                logp, entropy = _linear_logprobs(h, w, b, targets, ctx.temperature, ctx.impl, ctx.compute_dtype)
                wanted = ([h] if h.requires_grad else []) + list(leaves.values())
                upstream = (torch.zeros_like(logp) if grad_logp is None else grad_logp,
                            torch.zeros_like(entropy) if grad_entropy is None else grad_entropy)
                grads = torch.autograd.grad((logp, entropy), wanted, upstream, allow_unused=True)
            if h.requires_grad:
                grad_hidden, grads = grads[0], grads[1:]
            pairs = [(p, g) for p, g in zip(params, grads) if g is not None]
            if pairs:
                torch.autograd.backward([p for p, _ in pairs], [g for _, g in pairs])
        return grad_hidden, None, None, None, None, None, None, None


def _linear_logprobs(hidden, weight, bias, targets, temperature, impl, compute_dtype, want_entropy=True):
    """(logp, entropy or None) fp32 [N], GEMM inputs cast to ``compute_dtype`` (the op accumulates in fp32)."""
    from stepgrpo_fast.functional.logprobs import linear_logprobs

    if compute_dtype is not None:
        hidden, weight = hidden.to(compute_dtype), weight.to(compute_dtype)
        bias = None if bias is None else bias.to(compute_dtype)
    if want_entropy:
        return linear_logprobs(hidden, weight, targets, bias=bias, temperature=temperature,
                               return_entropy=True, impl=impl)
    return linear_logprobs(hidden, weight, targets, bias=bias, temperature=temperature, impl=impl), None


def head_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    temperature: float,
    impl: str = "auto",
    compute_dtype: torch.dtype | None = None,
    regather: Callable | None = None,
    want_entropy: bool = True,
):
    """Per-token log-probs and entropies of ``targets`` under ``softmax((hidden @ weight.T + bias) / T)``.

    hidden [N, H], weight [V, H], bias [V] or None, targets int [N] -> (logp [N] fp32, entropy [N] fp32,
    or None when not ``want_entropy``).
    ``compute_dtype``: dtype the GEMM inputs are cast to (None: hidden is cast to weight's dtype).
    ``regather``: from :func:`gathered_head` for a ZeRO-3 partitioned head; the weight must be
    materialised (inside ``gathered_head``) when this is called.
    """
    if compute_dtype is None and hidden.dtype != weight.dtype:
        hidden = hidden.to(weight.dtype)
    if regather is not None:
        logp, entropy = _RegatheredLinearLogprobs.apply(
            hidden, weight, bias, targets, regather, temperature, impl, compute_dtype)
        return logp, (entropy if want_entropy else None)
    return _linear_logprobs(hidden, weight, bias, targets, temperature, impl, compute_dtype, want_entropy)
