"""Input validation of the public ops, written once for linear_logprobs, grpo_loss and
linear_grpo_loss: tensor types, shapes, dtypes, devices, target ids, temperature, GRPO options.

Every error names the problem and prints the shapes / dtypes / devices it saw:
TypeError for a non-tensor, ValueError for everything else.
"""
from __future__ import annotations

import math

import torch

from ..formulas import IGNORE_INDEX, IS_LEVELS, LOSS_TYPES
from ..utils import check_same_device, describe

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

__all__ = [
    "FLOAT_DTYPES",
    "TRITON_DTYPES",
    "check_algorithm_options",
    "check_algorithm_tensors",
    "check_counted_targets",
    "check_grpo_options",
    "check_linear_head",
    "check_same_device",
    "check_target_ids",
    "check_temperature",
    "check_token_tensors",
    "require_tensors",
    "shapes_of",
]


def require_tensors(**named) -> None:
    """TypeError naming the first argument that is neither a tensor nor None."""
    for name, value in named.items():
        if value is not None and not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")


def shapes_of(**named) -> str:
    """'hidden[2, 3, 8] float32 on cpu, weight[...] ...' of the tensors given (None skipped)."""
    return ", ".join(describe(k, v) for k, v in named.items() if v is not None)


def _is_integer(t: torch.Tensor) -> bool:
    return not (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool)


def check_linear_head(hidden, weight, targets, bias, *, ranks: tuple[int, ...], hidden_form: str,
                      dims: str, ignored: str, shapes: str) -> None:
    """The LM-head inputs both fused ops take: hidden [..., H] with ``hidden.dim()`` in ``ranks``
    (``hidden_form`` says which, e.g. "[N, H] or [B, T, H]"), weight [V, H] of the same floating
    dtype, targets integer shaped like hidden without H, bias [V] floating or None, nothing empty
    (``dims``: the dimension names, e.g. "N, H and V"). ``ignored`` completes the targets dtype
    message (e.g. ", -100 = ignored")."""
    if hidden.dim() not in ranks:
        raise ValueError(f"hidden must be {hidden_form} and weight [V, H]; got {shapes}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be [V, H]; got {shapes}")
    if hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"hidden and weight disagree on H ({hidden.shape[-1]} vs "
                         f"{weight.shape[1]}); got {shapes}")
    if hidden.dtype not in FLOAT_DTYPES or weight.dtype not in FLOAT_DTYPES:
        raise ValueError(f"hidden and weight must be floating point; got {shapes}")
    if hidden.dtype != weight.dtype:
        raise ValueError(f"hidden and weight must share one floating dtype (the same dtype); "
                         f"got {shapes}")
    if not _is_integer(targets):
        raise ValueError(f"targets must be an integer tensor of token ids{ignored}; got {shapes}")
    if tuple(targets.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"targets must have shape {list(hidden.shape[:-1])} (hidden without H: "
                         f"targets must be [N] for hidden [N, H], [B, T] for [B, T, H]); "
                         f"got {shapes}")
    if hidden.numel() == 0 or weight.numel() == 0:
        raise ValueError(f"empty input: {dims} must all be > 0; got {shapes}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]
                             or bias.dtype not in FLOAT_DTYPES):
        raise ValueError(f"bias must be a floating [V] = [{weight.shape[0]}] tensor; "
                         f"got {shapes}")


def check_target_ids(targets: torch.Tensor, vocab_size: int, shapes: str) -> None:
    """Targets in [0, V) or IGNORE_INDEX (reads them: one device sync on GPU)."""
    if targets.device.type == "meta":
        return
    bad = (targets != IGNORE_INDEX) & ((targets < 0) | (targets >= vocab_size))
    if bool(bad.any()):
        first = bad.reshape(-1).nonzero()[0, 0].item()
        value = targets.reshape(-1)[first].item()
        raise ValueError(f"targets must be in [0, {vocab_size}) or {IGNORE_INDEX}; "
                         f"found {value} at flat index {first}; got {shapes}")


def check_counted_targets(targets: torch.Tensor, mask: torch.Tensor, vocab_size: int) -> None:
    """Targets where mask != 0 must be token ids in [0, V) (reads them: one device sync on GPU)."""
    bad = (mask != 0) & ((targets < 0) | (targets >= vocab_size))
    if bool(bad.any()):
        b_i, t_i = bad.nonzero()[0].tolist()
        raise ValueError(f"targets[{b_i}, {t_i}] = {int(targets[b_i, t_i])} is outside "
                         f"[0, {vocab_size}) at a position the mask counts "
                         f"(targets {list(targets.shape)}, mask {list(mask.shape)})")


def check_temperature(temperature) -> float:
    """A finite temperature > 0 (a number or a one-element tensor) -> float."""
    value = temperature.item() if isinstance(temperature, torch.Tensor) else temperature
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"temperature must be a finite number > 0 (positive), "
                         f"got {temperature!r}")
    return float(value)


def check_grpo_options(beta, epsilon_low, epsilon_high, loss_type, max_completion_length,
                       ref_logp) -> None:
    """loss_type in LOSS_TYPES, beta / epsilons finite >= 0, ref_logp when beta > 0,
    max_completion_length a positive int or None."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    for name, val in (("beta", beta), ("epsilon_low", epsilon_low),
                      ("epsilon_high", epsilon_high)):
        if isinstance(val, bool) or not isinstance(val, (int, float)) \
                or not math.isfinite(val) or val < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {val!r}")
    if beta > 0 and ref_logp is None:
        raise ValueError(f"beta={beta} > 0 adds the KL penalty to the reference model and needs "
                         "ref_logp (the reference model's log-probs [B, T]); pass ref_logp, or "
                         "beta=0.0 for no KL term")
    if max_completion_length is not None and (isinstance(max_completion_length, bool)
                                              or not isinstance(max_completion_length, int)
                                              or max_completion_length < 1):
        raise ValueError(f"max_completion_length must be a positive int or None, "
                         f"got {max_completion_length!r}")


def check_token_tensors(b: int, t: int, where: str, mask, advantages, old_logp,
                        ref_logp) -> None:
    """mask [B,T], advantages [B] | [B,T], old/ref [B,T] float; ValueError naming every shape."""
    require_tensors(mask=mask, advantages=advantages, old_logp=old_logp, ref_logp=ref_logp)
    shapes = f"{where}; " + shapes_of(mask=mask, advantages=advantages, old_logp=old_logp,
                                      ref_logp=ref_logp)
    if tuple(mask.shape) != (b, t):
        raise ValueError(f"mask must be [B, T] = [{b}, {t}]; got {shapes}")
    if tuple(advantages.shape) not in ((b,), (b, t)):
        raise ValueError(f"advantages must be [B] = [{b}] or [B, T] = [{b}, {t}]; got {shapes}")
    if not advantages.dtype.is_floating_point:
        raise ValueError(f"advantages must be floating point; got {shapes}")
    for name, val in (("old_logp", old_logp), ("ref_logp", ref_logp)):
        if val is not None and (tuple(val.shape) != (b, t) or not val.dtype.is_floating_point):
            raise ValueError(f"{name} must be a floating [B, T] = [{b}, {t}] tensor; got {shapes}")
    if mask.dtype.is_complex:
        raise ValueError(f"mask must be bool, integer or float; got {shapes}")


def _number(name, val, *, low=None, low_open=False, high=None, allow_none=False):
    """A finite int/float (not bool) within the bounds, or None when allowed; ValueError naming it."""
    if val is None and allow_none:
        return
    ok = not isinstance(val, bool) and isinstance(val, (int, float)) and math.isfinite(val)
    if ok and low is not None:
        ok = val > low if low_open else val >= low
    if ok and high is not None:
        ok = val <= high
    if not ok:
        rng = "" if low is None else (f" > {low}" if low_open else f" >= {low}")
        rng += "" if high is None else f" and <= {high}"
        raise ValueError(f"{name} must be a finite number{rng}{' or None' if allow_none else ''}, "
                         f"got {val!r}")


def check_algorithm_options(*, importance_sampling_level, delta, use_bias_correction_kl,
                            entropy_coef, top_entropy_quantile, off_policy_mask_threshold,
                            sapo_temperature_pos, sapo_temperature_neg, num_items_in_batch,
                            device) -> None:
    """The TRL 1.16 options of the GRPO family (loss_type is checked by check_grpo_options)."""
    if importance_sampling_level not in IS_LEVELS:
        raise ValueError(f"importance_sampling_level must be one of {IS_LEVELS}, "
                         f"got {importance_sampling_level!r}")
    _number("delta", delta, low=0.0, low_open=True, allow_none=True)
    if not isinstance(use_bias_correction_kl, bool):
        raise ValueError(  # noqa: TRY004 - the module's rule: TypeError only for non-tensors
            f"use_bias_correction_kl must be a bool, got {use_bias_correction_kl!r}")
    _number("entropy_coef", entropy_coef)
    _number("top_entropy_quantile", top_entropy_quantile, low=0.0, high=1.0)
    _number("off_policy_mask_threshold", off_policy_mask_threshold, low=0.0, allow_none=True)
    _number("sapo_temperature_pos", sapo_temperature_pos, low=0.0, low_open=True)
    _number("sapo_temperature_neg", sapo_temperature_neg, low=0.0, low_open=True)
    nib = num_items_in_batch
    if isinstance(nib, torch.Tensor):
        if nib.numel() != 1 or nib.dtype.is_complex or nib.dtype == torch.bool:
            raise ValueError(f"num_items_in_batch must be an int, a one-element real tensor or None; "
                             f"got {describe('num_items_in_batch', nib)}")
        if nib.device != device and nib.device.type != "cpu":
            raise ValueError(f"num_items_in_batch is on {nib.device}, the inputs on {device}")
    elif nib is not None:
        _number("num_items_in_batch", nib, low=0.0)


def check_algorithm_tensors(b: int, t: int, device, *, importance_sampling_ratio, sampling_logp,
                            entropy) -> None:
    """importance_sampling_ratio [B,T] or [B,1], sampling_logp / entropy [B,T]: floating, on
    ``device``; ValueError naming the argument and its shape."""
    require_tensors(importance_sampling_ratio=importance_sampling_ratio, sampling_logp=sampling_logp,
                    entropy=entropy)
    for name, val, shapes in (("importance_sampling_ratio", importance_sampling_ratio, ((b, t), (b, 1))),
                              ("sampling_logp", sampling_logp, ((b, t),)),
                              ("entropy", entropy, ((b, t),))):
        if val is None:
            continue
        if tuple(val.shape) not in shapes or not val.dtype.is_floating_point:
            want = " or ".join(str(list(s)) for s in shapes)
            raise ValueError(f"{name} must be a floating {want} tensor (B, T = {b}, {t}); "
                             f"got {describe(name, val)}")
        if val.device != device:
            raise ValueError(f"{name} is on {val.device}, the inputs on {device}; "
                             f"got {describe(name, val)}")
