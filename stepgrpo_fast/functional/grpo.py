"""Public GRPO ops: validation, impl dispatch, autograd Functions.

    group_advantages(rewards, group_size, *, scale="group", eps=1e-4)
    grpo_loss(logp, advantages, mask, *, old_logp=None, ref_logp=None, beta=0.04, ...)
    linear_grpo_loss(hidden, weight, targets, mask, advantages, *, ...)

The GRPO family (TRL 1.16's loss_type, importance_sampling_level, delta, use_bias_correction_kl,
entropy_coef, top_entropy_quantile, off_policy_mask_threshold, vLLM importance-sampling ratio,
sapo temperatures, num_items_in_batch) is documented once, in ALGORITHM_OPTIONS_DOC below and
docs/METHOD.md ("The GRPO family").

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
import warnings
from collections.abc import Sequence

import torch

from ..formulas import (
    ADVANTAGE_SCALES,
    STAT_ENTROPY,
    STAT_LOSS,
    PolicyOptions,
    entropy_bonus_weights,
    high_entropy_mask,
    policy_token_terms,
    stats_to_metrics,
    token_weights,
)
from ..ops.group_advantages_torch import group_advantages_torch
from ..ops.linear_grpo_loss_chunked import linear_grpo_loss_chunked
from ..utils import describe, resolve_impl
from .checks import (
    FLOAT_DTYPES,
    check_algorithm_options,
    check_algorithm_tensors,
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
    return group_advantages_torch(rewards, group_size, scale, float(eps))


ALGORITHM_OPTIONS_DOC = """
    loss_type: "grpo" (default here; TRL 1.16's default is "dapo") | "bnpo" | "dr_grpo" | "dapo" |
        "cispo" | "sapo" | "luspo" -- TRL's per-token loss and reduction (formulas.token_weights).
    importance_sampling_level: "token" (default) | "sequence" (GSPO: log ratio = masked sequence
        mean of logp - old_logp, broadcast over the sequence). TRL's warnings (luspo at token
        level; sequence level with bnpo / dr_grpo / dapo / cispo) are UserWarnings here.
    num_items_in_batch: int | one-element tensor | None -- the dapo / cispo normaliser:
        loss = sum(per_token_loss * mask) / max(num_items_in_batch, 1); None -> the counted
        tokens of this call. TRL 1.16 divides by inputs["num_items_in_batch"] / num_processes *
        gradient_accumulation_steps / steps_per_generation in training: pass that value and use
        the loss as is, or pass inputs["num_items_in_batch"] / num_processes / steps_per_generation
        and divide the loss by gradient_accumulation_steps like every other loss type (this also
        reproduces TRL's scaling of the entropy bonus). Ignored by the other loss types.
    delta: float > 0 | None -- two-sided clipping: the unclipped branch uses min(ratio, delta).
    use_bias_correction_kl: bool, default True as TRL 1.16: kl_t *= ratio_t (with the ratio's
        gradient, also where it is exactly 1). CHANGES the gradient of every beta > 0 call
        compared with earlier versions of this function (pass False for the old behaviour).
    entropy_coef: float, default 0 -- loss -= entropy_coef * mean entropy over the effective mask
        (mask * high-entropy mask), a plain masked mean whatever the loss type.
    top_entropy_quantile: float in [0, 1], default 1 -- keep the policy term (not the KL) only on
        tokens with entropy >= quantile(entropies of this call's counted tokens, 1 - q) (TRL gathers
        the entropies of all processes first; here the quantile is over this call).
    off_policy_mask_threshold: float >= 0 | None, with sampling_logp [B,T] | None (default old_logp,
        else logp.detach(); NaN differences count 0): a sequence's policy term is kept where
        A >= 0 or mean_t(sampling_logp - logp) <= threshold (DeepSeek-V3.2).
    importance_sampling_ratio: [B,T] | [B,1] tensor | None -- constant multiplier of the policy
        term (TRL's vLLM importance-sampling correction, computed by the caller).
    sapo_temperature_pos = 1.0, sapo_temperature_neg = 1.05: the sapo gate temperatures (TRL's).
    Order as TRL: policy term * off-policy mask * entropy mask * IS ratio, then + beta * KL.
"""


def _prepare(mask, advantages, old_logp, ref_logp, sampling_logp, importance_sampling_ratio, *, beta,
             epsilon_low, epsilon_high, loss_type, max_completion_length, num_items_in_batch,
             importance_sampling_level, delta, use_bias_correction_kl, sapo_temperature_pos,
             sapo_temperature_neg, off_policy_mask_threshold, dtype):
    """-> (PolicyOptions, dict of [B,T] tensors in dtype: weights, adv, old, ref, m, scale, sampling)."""
    if loss_type == "luspo" and importance_sampling_level != "sequence":
        warnings.warn("loss_type='luspo' with importance_sampling_level='token': the LUSPO paper "
                      "uses importance_sampling_level='sequence' (as TRL warns)", stacklevel=3)
    if importance_sampling_level == "sequence" and loss_type in ("bnpo", "dr_grpo", "dapo", "cispo"):
        warnings.warn(f"importance_sampling_level='sequence' with loss_type={loss_type!r} sums per-token "
                      "terms, weighting each sequence by its length; GSPO uses loss_type='grpo' "
                      "(as TRL warns)", stacklevel=3)
    use_ref = ref_logp if beta > 0 else None
    opts = PolicyOptions(loss_type=loss_type, importance_sampling_level=importance_sampling_level,
                         beta=float(beta) if use_ref is not None else 0.0, epsilon_low=float(epsilon_low),
                         epsilon_high=float(epsilon_high), delta=None if delta is None else float(delta),
                         use_bias_correction_kl=use_bias_correction_kl,
                         sapo_temperature_pos=float(sapo_temperature_pos),
                         sapo_temperature_neg=float(sapo_temperature_neg),
                         off_policy_mask_threshold=None if off_policy_mask_threshold is None
                         else float(off_policy_mask_threshold))
    shape = mask.shape
    adv = advantages.to(dtype)
    adv = (adv[:, None] if adv.dim() == 1 else adv).expand(shape)
    det = (lambda x: None if x is None else x.detach().to(dtype).expand(shape))
    sampling = det(sampling_logp) if opts.off_policy_mask_threshold is not None else None
    return opts, {"weights": token_weights(mask, loss_type, max_completion_length, dtype, num_items_in_batch),
                  "adv": adv, "old": det(old_logp), "ref": det(use_ref), "m": mask.to(dtype),
                  "scale": det(importance_sampling_ratio), "sampling": sampling}


def _check_all(b, t, device, mask, advantages, old_logp, ref_logp, *, beta, epsilon_low, epsilon_high,
               loss_type, max_completion_length, importance_sampling_ratio, sampling_logp, entropy,
               **options):
    check_token_tensors(b, t, f"[B, T] = [{b}, {t}]", mask, advantages, old_logp, ref_logp)
    check_grpo_options(beta, epsilon_low, epsilon_high, loss_type, max_completion_length, ref_logp)
    check_algorithm_options(device=device, **options)
    check_algorithm_tensors(b, t, device, importance_sampling_ratio=importance_sampling_ratio,
                            sampling_logp=sampling_logp, entropy=entropy)


def _seq_ids(b, t, device):
    return torch.arange(b, device=device).repeat_interleave(t)


# ------------------------------------------------------------------------------ grpo_loss
class GRPOLossFunction(torch.autograd.Function):
    """(logp [B,T], entropy [B,T] | None) -> (loss 0-d, stats); forward computes d(loss)/d(logp)
    (and d(loss)/d(entropy) = -q) and saves them."""

    @staticmethod
    def forward(ctx, logp, entropy, opts, inputs, entropy_coef, top_entropy_quantile, impl):
        dtype = torch.float64 if logp.dtype == torch.float64 else torch.float32
        b, t = logp.shape
        lp = logp.detach().to(dtype)
        ent = None if entropy is None else entropy.detach().to(dtype)
        scale = inputs["scale"]
        ent_mask = None
        if top_entropy_quantile < 1.0:
            ent_mask = high_entropy_mask(ent, inputs["m"], top_entropy_quantile).to(dtype)
            scale = ent_mask if scale is None else scale * ent_mask
        fast = (impl == "triton" and opts.kernel_expressible(inputs["ref"] is not None) and scale is None)
        if fast:
            from ..ops.grpo_loss import grpo_token_loss_triton
            loss, grad, stats = grpo_token_loss_triton(lp, inputs["weights"], inputs["adv"], inputs["old"],
                                                       inputs["ref"], opts.beta, opts.epsilon_low,
                                                       opts.epsilon_high)
        else:  # the torch formulas (elementwise on [B*T]; also impl="triton" for these options)
            flat = (lambda x: None if x is None else x.reshape(-1))
            loss_t, grad, stats = policy_token_terms(
                lp.reshape(-1), flat(inputs["weights"]), flat(inputs["adv"]), flat(inputs["old"]),
                flat(inputs["ref"]), opts, m=flat(inputs["m"]), seq=_seq_ids(b, t, lp.device), n_seq=b,
                scale=flat(scale), sampling=flat(inputs["sampling"]))
            grad = grad.reshape(b, t)
            loss = loss_t.sum()
        d_ent = None
        if ent is not None:
            counted = inputs["m"] != 0
            stats[STAT_ENTROPY] = torch.where(counted, ent, 0.0).sum().to(stats.dtype)
            if entropy_coef != 0.0:
                q = entropy_bonus_weights(inputs["m"], ent_mask, entropy_coef, dtype)
                loss = loss - torch.where(q != 0, q * ent, 0.0).sum()
                d_ent = -q
                stats[STAT_LOSS] = loss.to(stats.dtype)
        ctx.save_for_backward(grad, d_ent)
        ctx.dtypes = (logp.dtype, None if entropy is None else entropy.dtype)
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    def backward(ctx, grad_loss, grad_stats):
        grad, d_ent = ctx.saved_tensors
        g_ent = None if d_ent is None else (d_ent * grad_loss).to(ctx.dtypes[1])
        return (grad * grad_loss).to(ctx.dtypes[0]), g_ent, None, None, None, None, None


def grpo_loss(logp, advantages, mask, *, old_logp=None, ref_logp=None, beta: float = 0.04,
              epsilon_low: float = 0.2, epsilon_high: float = 0.2, loss_type: str = "grpo",
              max_completion_length: int | None = None, num_items_in_batch=None,
              importance_sampling_level: str = "token", delta: float | None = None,
              use_bias_correction_kl: bool = True, entropy_coef: float = 0.0,
              top_entropy_quantile: float = 1.0, entropy=None,
              off_policy_mask_threshold: float | None = None, sampling_logp=None,
              importance_sampling_ratio=None, sapo_temperature_pos: float = 1.0,
              sapo_temperature_neg: float = 1.05, impl: str = "auto"):
    """Clipped-surrogate GRPO loss (TRL 1.16's family) from per-token log-probs.

    logp [B,T] float (differentiable); advantages [B] or [B,T]; mask [B,T] (bool/int/float; tokens
    with mask 0 do not count, float values weight tokens as in TRL); old_logp, ref_logp [B,T] or None.
        ratio = exp(logp - old_logp)    (old_logp None -> logp.detach(): ratio 1, REINFORCE gradient)
        l_t   = -min(ratio A, clip(ratio, 1-epsilon_low, 1+epsilon_high) A) + beta * KL_t
        KL_t  = exp(ref - logp) - (ref - logp) - 1   (beta > 0 requires ref_logp: ValueError otherwise)
    loss_type "grpo": per-sequence masked mean, then mean over the B sequences (a sequence without
    counted tokens contributes 0); "bnpo": sum / counted tokens; "dr_grpo": sum / (B *
    max_completion_length), default T. No counted tokens at all -> loss 0, gradient 0.
    entropy [B,T] | None: per-token entropies (this op cannot compute them from log-probs). Needed
    for entropy_coef != 0 (the gradient -entropy_coef * em / sum(em) flows into it when it requires
    grad) and for top_entropy_quantile < 1; ValueError otherwise. Every other option: see
    ALGORITHM_OPTIONS_DOC. impl="triton" runs the Triton token kernel where its per-token maths
    covers the options (token level, hard clip without delta, no masks / IS ratio, KL uncorrected
    or beta = 0), the torch formulas (elementwise on [B*T]) otherwise.
    Returns (loss: 0-d tensor, float32 or float64 for float64 logp; metrics: dict of 0-d detached
    float32 tensors "kl", "clip_ratio", "clip_ratio_low", "clip_ratio_high", "ratio_mean",
    "ratio_min", "ratio_max", "num_tokens", plus "entropy" when entropy is given and
    "cispo_clip_ratio" for cispo).
    """
    if not isinstance(logp, torch.Tensor):
        raise TypeError(f"logp must be a torch.Tensor, got {type(logp).__name__}")
    if logp.dim() != 2 or logp.dtype not in FLOAT_DTYPES:
        raise ValueError(f"logp must be a floating [B, T] tensor; got {describe('logp', logp)}")
    b, t = logp.shape
    opt_kw = {"importance_sampling_level": importance_sampling_level, "delta": delta,
              "use_bias_correction_kl": use_bias_correction_kl, "sapo_temperature_pos": sapo_temperature_pos,
              "sapo_temperature_neg": sapo_temperature_neg,
              "off_policy_mask_threshold": off_policy_mask_threshold}
    _check_all(b, t, logp.device, mask, advantages, old_logp, ref_logp, beta=beta, epsilon_low=epsilon_low,
               epsilon_high=epsilon_high, loss_type=loss_type, max_completion_length=max_completion_length,
               importance_sampling_ratio=importance_sampling_ratio, sampling_logp=sampling_logp,
               entropy=entropy, entropy_coef=entropy_coef, top_entropy_quantile=top_entropy_quantile,
               num_items_in_batch=num_items_in_batch, **opt_kw)
    if entropy is None and (entropy_coef != 0.0 or top_entropy_quantile < 1.0):
        raise ValueError(f"entropy_coef={entropy_coef!r} / top_entropy_quantile={top_entropy_quantile!r} "
                         "need the per-token entropies: pass entropy [B, T] (requires_grad for the "
                         "bonus's gradient), or use linear_grpo_loss, which computes them")
    check_same_device(logp=logp, mask=mask, advantages=advantages, old_logp=old_logp, ref_logp=ref_logp)
    backend = resolve_impl(impl, logp)
    dtype = torch.float64 if logp.dtype == torch.float64 else torch.float32
    opts, inputs = _prepare(mask, advantages, old_logp, ref_logp, sampling_logp, importance_sampling_ratio,
                            beta=beta, epsilon_low=epsilon_low, epsilon_high=epsilon_high, loss_type=loss_type,
                            max_completion_length=max_completion_length, num_items_in_batch=num_items_in_batch,
                            dtype=dtype, **opt_kw)
    loss, stats = GRPOLossFunction.apply(logp, entropy, opts, inputs, float(entropy_coef),
                                         float(top_entropy_quantile), backend)
    return loss, stats_to_metrics(stats, entropy=entropy is not None, cispo=loss_type == "cispo")


# ------------------------------------------------------------------------- linear_grpo_loss
class LinearGRPOLossFunction(torch.autograd.Function):
    """(hidden [N,H], weight [V,H], bias [V] | None) -> (loss 0-d, stats [NUM_STATS]).

    Forward computes the loss and dH, dW, db in one pass; backward scales them by grad_output.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, flat, opts, extra, temperature, impl, need_grads):
        need_h, need_w, need_b = need_grads
        args = (hidden.detach(), weight.detach(), targets, flat["weights"], flat["adv"], flat["old"], flat["ref"])
        kwargs = {"beta": opts.beta, "epsilon_low": opts.epsilon_low, "epsilon_high": opts.epsilon_high,
                  "temperature": temperature, "bias": None if bias is None else bias.detach(),
                  "need_hidden_grad": need_h, "need_weight_grad": need_w, "need_bias_grad": need_b,
                  "opts": opts, "mask": flat["m"], "scale": flat["scale"], "sampling": flat["sampling"],
                  **extra}
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
                None, None, None, None, None, None, None)


def linear_grpo_loss(hidden, weight, targets, mask, advantages, *, old_logp=None, ref_logp=None,
                     beta: float = 0.04, epsilon_low: float = 0.2, epsilon_high: float = 0.2,
                     temperature: float = 1.0, loss_type: str = "grpo", max_completion_length: int | None = None,
                     bias=None, num_items_in_batch=None, importance_sampling_level: str = "token",
                     delta: float | None = None, use_bias_correction_kl: bool = True,
                     entropy_coef: float = 0.0, top_entropy_quantile: float = 1.0,
                     off_policy_mask_threshold: float | None = None, sampling_logp=None,
                     importance_sampling_ratio=None, sapo_temperature_pos: float = 1.0,
                     sapo_temperature_neg: float = 1.05, impl: str = "auto"):
    """GRPO loss straight from hidden states, never materialising [B*T, V] logits.

    hidden [B,T,H] and weight [V,H] (same float dtype), bias [V] or None, targets int [B,T] (the
    sampled tokens; where mask == 0 any value, e.g. -100), mask [B,T], advantages [B] or [B,T],
    old_logp / ref_logp [B,T] or None.
        logp_t = log softmax((h_t W^T + b) / temperature)[y_t]     in fp32
        H_t    = entropy of that softmax (computed only for entropy_coef != 0 or
                 top_entropy_quantile < 1; its gradient comes from the fused op, no [N, V])
    then exactly ``grpo_loss(logp, ..., entropy=H)`` (see there and ALGORITHM_OPTIONS_DOC for
    beta, epsilons, loss_type and the TRL 1.16 options). Differentiable w.r.t. hidden, weight and
    bias. Gradients are computed in forward, one pass, three GEMMs (logits, dH, dW) over token
    chunks; backward scales them by grad_output. Sequence-level options (importance_sampling_level=
    "sequence", off_policy_mask_threshold) keep whole sequences in a chunk; top_entropy_quantile < 1
    adds one logits pass (docs/METHOD.md).
    Returns (loss 0-d float32 (float64 for float64 inputs), metrics dict; "entropy" is added when
    entropies are computed, "cispo_clip_ratio" for cispo).
    """
    require_tensors(hidden=hidden, weight=weight, targets=targets, mask=mask, bias=bias)
    if mask is None:
        raise TypeError("mask must be a torch.Tensor, got NoneType")
    check_linear_head(hidden, weight, targets, bias, ranks=(3,), hidden_form="[B, T, H]",
                      dims="B, T, H and V", ignored="",
                      shapes=shapes_of(hidden=hidden, weight=weight, targets=targets, mask=mask,
                                       bias=bias))
    b, t, h = hidden.shape
    opt_kw = {"importance_sampling_level": importance_sampling_level, "delta": delta,
              "use_bias_correction_kl": use_bias_correction_kl, "sapo_temperature_pos": sapo_temperature_pos,
              "sapo_temperature_neg": sapo_temperature_neg,
              "off_policy_mask_threshold": off_policy_mask_threshold}
    _check_all(b, t, hidden.device, mask, advantages, old_logp, ref_logp, beta=beta, epsilon_low=epsilon_low,
               epsilon_high=epsilon_high, loss_type=loss_type, max_completion_length=max_completion_length,
               importance_sampling_ratio=importance_sampling_ratio, sampling_logp=sampling_logp,
               entropy=None, entropy_coef=entropy_coef, top_entropy_quantile=top_entropy_quantile,
               num_items_in_batch=num_items_in_batch, **opt_kw)
    check_counted_targets(targets, mask, weight.shape[0])
    temperature = check_temperature(temperature)
    check_same_device(hidden=hidden, weight=weight, targets=targets, mask=mask, advantages=advantages,
                      old_logp=old_logp, ref_logp=ref_logp, bias=bias)
    backend = resolve_impl(impl, hidden)
    dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    opts, inputs = _prepare(mask, advantages, old_logp, ref_logp, sampling_logp, importance_sampling_ratio,
                            beta=beta, epsilon_low=epsilon_low, epsilon_high=epsilon_high, loss_type=loss_type,
                            max_completion_length=max_completion_length, num_items_in_batch=num_items_in_batch,
                            dtype=dtype, **opt_kw)
    flat = {k: None if x is None else x.reshape(-1).contiguous() for k, x in inputs.items()}
    extra = {"seq_len": t, "entropy_coef": float(entropy_coef),
             "top_entropy_quantile": float(top_entropy_quantile)}
    grad_on = torch.is_grad_enabled()
    need = (grad_on and hidden.requires_grad, grad_on and weight.requires_grad,
            grad_on and bias is not None and bias.requires_grad)
    loss, stats = LinearGRPOLossFunction.apply(
        hidden.reshape(b * t, h).contiguous(), weight.contiguous(), bias, targets.reshape(-1).long(),
        flat, opts, extra, float(temperature), backend, need)
    with_entropy = entropy_coef != 0.0 or top_entropy_quantile < 1.0
    return loss, stats_to_metrics(stats, entropy=with_entropy, cispo=loss_type == "cispo")
