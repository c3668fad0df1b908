"""Fused policy-update pieces: no [N, V] logits tensor is ever built.

    sequence   = prompt (P tokens, left-padded, image tokens inside) ++ completion (C tokens)
    hidden     = decoder_hidden_states(model, ...)           [N, P+C, H]  (through the vision tower)
    h_comp     = hidden[:, P-1 : P-1+C]                      [N, C, H]    h_comp[t] -> token t
    logp       = linear_logprobs(h_comp, W_lm, completion, temperature)   [N, C]
    loss       = linear_grpo_loss(h_comp, W_lm, completion, mask, A, ref_logp, old_logp, ...)

The reference log-probs come from a frozen copy of the starting model under no_grad; the old
log-probs (num_iterations > 1) from the policy before the first update on a batch. The SFT loss
is the mean NLL of the label tokens through the same fused op.

:class:`PolicyObjective` wraps the HF model so that ``accelerator.prepare`` (DDP / DeepSpeed) sees
the whole loss computation inside one ``forward`` and synchronises the gradients as usual.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from stepgrpo_fast.lm_head import effective_temperature, unwrap_model
from stepgrpo_fast.trainer.model.loading import decoder_hidden_states, lm_head
from stepgrpo_fast.trainer.rl.shared_prompt import shared_completion_hidden_states

ROW_KEYS_EXTENDED_WITH_ZEROS = ("mm_token_type_ids", "token_type_ids")
PER_IMAGE_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")


@dataclass
class PolicyBatch:
    """One micro-batch of N = B*M completions ready for the loss.

    model_inputs:    input_ids / attention_mask [N, P+C] (+ mm_token_type_ids [N, P+C],
                     pixel_values [patches, D], image_grid_thw [images, 3])
    prompt_length:   P
    completion_ids:  [N, C] long
    completion_mask: [N, C] long (1 up to and including the first EOS)
    advantages:      [N] float32
    ref_logp:        [N, C] float32 or None (beta == 0)
    old_logp:        [N, C] float32 or None (num_iterations == 1: ratio = exp(logp - logp.detach()))
    num_items_in_batch: the dapo / cispo normaliser of this micro-batch's loss (a float), or None
                     (the op then divides by this micro-batch's counted tokens); set by the loop
                     from the global batch's active tokens (grpo_loop.dapo_num_items)
    group_size:      None: the repeated layout above. G: the shared-prompt layout
                     (rl/shared_prompt.py): model_inputs are the N / G un-repeated prompts
                     ([N/G, P] rows + their images), each run once for its G completions
    """

    model_inputs: dict[str, torch.Tensor]
    prompt_length: int
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    advantages: torch.Tensor
    ref_logp: torch.Tensor | None = None
    old_logp: torch.Tensor | None = None
    num_items_in_batch: float | None = None
    group_size: int | None = None

    def to(self, device: torch.device | str) -> "PolicyBatch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(
            self,
            model_inputs={k: v.to(device) for k, v in self.model_inputs.items()},
            completion_ids=move(self.completion_ids),
            completion_mask=move(self.completion_mask),
            advantages=move(self.advantages),
            ref_logp=move(self.ref_logp),
            old_logp=move(self.old_logp),
        )


def build_policy_batch(
    prompt_inputs: dict[str, torch.Tensor],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    advantages: torch.Tensor,
) -> PolicyBatch:
    """Concatenate the (repeated) prompts and their completions into model inputs.

    prompt_inputs: input_ids / attention_mask [N, P] (+ per-row token types, per-image tensors)
    completion_ids / completion_mask: [N, C];  advantages: [N]
    """
    prompt_ids = prompt_inputs["input_ids"]
    n, p = prompt_ids.shape
    if completion_ids.shape[0] != n or completion_mask.shape != completion_ids.shape:
        raise ValueError(
            f"prompt rows {n}, completion_ids {list(completion_ids.shape)}, "
            f"completion_mask {list(completion_mask.shape)} do not line up"
        )
    if advantages.shape != (n,):
        raise ValueError(f"advantages must be [{n}], got {list(advantages.shape)}")
    c = completion_ids.shape[1]
    inputs: dict[str, torch.Tensor] = {
        "input_ids": torch.cat([prompt_ids, completion_ids], dim=1),  # [N, P+C]
        "attention_mask": torch.cat(
            [
                prompt_inputs["attention_mask"],
                completion_mask.to(prompt_inputs["attention_mask"].dtype),
            ],
            dim=1,
        ),
    }
    for key, value in prompt_inputs.items():
        if key in ("input_ids", "attention_mask"):
            continue
        if key in PER_IMAGE_KEYS:
            inputs[key] = value
        elif key in ROW_KEYS_EXTENDED_WITH_ZEROS:
            inputs[key] = torch.cat([value, value.new_zeros(n, c)], dim=1)
        else:
            raise ValueError(
                f"do not know how to extend prompt input {key!r} "
                f"(shape {list(value.shape)}) over the completion"
            )
    return PolicyBatch(inputs, p, completion_ids, completion_mask, advantages.float())


def build_shared_policy_batch(
    group_inputs: dict[str, torch.Tensor],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    advantages: torch.Tensor,
    group_size: int,
) -> PolicyBatch:
    """A :class:`PolicyBatch` in the shared-prompt layout: each prompt once for its G completions.

    group_inputs: the B un-repeated prompts: input_ids / attention_mask [B, P] (+ images)
    completion_ids / completion_mask: [B*G, C] prompt-major;  advantages: [B*G]
    """
    b, p = group_inputs["input_ids"].shape
    n = completion_ids.shape[0]
    if n != b * group_size or completion_mask.shape != completion_ids.shape:
        raise ValueError(
            f"{b} prompts x num_generations {group_size} do not line up with completion_ids "
            f"{list(completion_ids.shape)} / completion_mask {list(completion_mask.shape)}"
        )
    if advantages.shape != (n,):
        raise ValueError(f"advantages must be [{n}], got {list(advantages.shape)}")
    return PolicyBatch(
        dict(group_inputs), p, completion_ids, completion_mask, advantages.float(),
        group_size=group_size,
    )


def head_operands(
    hidden: torch.Tensor, head: nn.Linear
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(hidden, weight, bias) in the one dtype the fused head ops need.

    Under autocast that is the autocast dtype (what autocast would run the LM head's matmul in:
    fp32 master weights are cast, differentiably, so their gradient arrives in fp32); otherwise
    the weight's dtype. Call the fused op under :func:`no_autocast` so its forward and backward
    both see these dtypes.
    """
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
    else:
        dtype = head.weight.dtype
    bias = None if head.bias is None else head.bias.to(dtype)
    return hidden.to(dtype), head.weight.to(dtype), bias


def _scaled_temperature(model: nn.Module, temperature: float) -> float:
    """T for the fused ops so they score softmax(logits(model) / T) (the model's logit scale)."""
    return effective_temperature(unwrap_model(model).config, temperature)


def no_autocast(device: torch.device):
    """Autocast off for the fused ops (their inputs are cast by :func:`head_operands`)."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def completion_hidden_states(model: nn.Module, batch: PolicyBatch) -> torch.Tensor:
    """[N, C, H]: the hidden state that predicts each completion token (shared-prompt layout:
    rl/shared_prompt.py, the same values without running a prompt more than once)."""
    if batch.group_size is not None:
        return shared_completion_hidden_states(
            model, batch.model_inputs, batch.completion_ids, batch.completion_mask,
            batch.group_size,
        )
    hidden = decoder_hidden_states(model, **batch.model_inputs)  # [N, P+C, H]
    p, c = batch.prompt_length, batch.completion_ids.shape[1]
    return hidden[:, p - 1 : p - 1 + c]  # [N, C, H]


@torch.no_grad()
def completion_logprobs(
    model: nn.Module, batch: PolicyBatch, *, temperature: float = 1.0, impl: str = "auto"
) -> torch.Tensor:
    """log pi(completion_t | prefix) / T-tempered, [N, C] float32, no grad (reference / old)."""
    from stepgrpo_fast.functional import linear_logprobs

    hidden, weight, bias = head_operands(completion_hidden_states(model, batch), lm_head(model))
    with no_autocast(hidden.device):
        return linear_logprobs(
            hidden, weight, batch.completion_ids, bias=bias,
            temperature=_scaled_temperature(model, temperature), impl=impl,
        ).float()


def sft_nll(
    model: nn.Module, inputs: dict[str, torch.Tensor], *, impl: str = "auto"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean NLL over label tokens (labels != -100), via the fused log-prob op.

    inputs: encode_sft output: input_ids / attention_mask / labels [B, S] (+ image tensors)
    """
    from stepgrpo_fast.functional import linear_logprobs

    labels = inputs["labels"]
    model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    hidden = decoder_hidden_states(model, **model_inputs)  # [B, S, H]
    targets = labels[:, 1:]  # [B, S-1]
    keep = targets != -100
    if not bool(keep.any()):
        raise ValueError("SFT batch has no label tokens (every label is -100)")
    h, weight, bias = head_operands(hidden[:, :-1][keep], lm_head(model))  # h [T, H]
    with no_autocast(h.device):
        logp = linear_logprobs(  # [T]
            h, weight, targets[keep], bias=bias,
            temperature=_scaled_temperature(model, 1.0), impl=impl,
        ).float()
    loss = -logp.mean()
    return loss, {"nll": loss.detach(), "num_label_tokens": keep.sum().detach().float()}


class PolicyObjective(nn.Module):
    """The HF model plus the fused StepGRPO / SFT losses in one ``forward`` (for DDP wrapping).

    forward(batch: PolicyBatch)          -> (GRPO loss, metrics)
    forward(sft_inputs=dict, sft=True)   -> (NLL, metrics)

    loss_options: extra keyword arguments of ``functional.linear_grpo_loss`` with TRL 1.16's names
    (importance_sampling_level, delta, use_bias_correction_kl, entropy_coef, top_entropy_quantile,
    off_policy_mask_threshold, sapo_temperature_pos / _neg), passed to every call unchanged.
    precision: a :class:`~stepgrpo_fast.trainer.model.loading.Precision`; mixed precision runs the
    forward under its autocast (fp32 master weights, bf16 / fp16 compute).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        beta: float = 0.04,
        epsilon_low: float = 0.2,
        epsilon_high: float = 0.2,
        temperature: float = 1.0,
        loss_type: str = "grpo",
        max_completion_length: int | None = None,
        impl: str = "auto",
        precision: Any = None,
        loss_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.precision = precision
        self.beta = beta
        self.epsilon_low = epsilon_low
        self.epsilon_high = epsilon_high
        self.temperature = temperature
        self.loss_type = loss_type
        self.max_completion_length = max_completion_length
        self.impl = impl
        self.loss_options = dict(loss_options or {})
        for name in ("num_items_in_batch", "sampling_logp", "importance_sampling_ratio"):
            if name in self.loss_options:
                raise ValueError(f"loss_options: {name} is per batch, not a loss option")

    def forward(
        self,
        batch: PolicyBatch | None = None,
        *,
        sft_inputs: dict[str, Any] | None = None,
        sft: bool = False,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        precision = self.precision
        with precision.autocast() if precision is not None else contextlib.nullcontext():
            if sft:
                return sft_nll(self.model, sft_inputs, impl=self.impl)
            return self.grpo(batch)

    def grpo(self, batch: PolicyBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.beta > 0 and batch.ref_logp is None:
            raise ValueError("beta > 0 needs batch.ref_logp (reference log-probs)")
        hidden, weight, bias = head_operands(  # hidden [N, C, H]
            completion_hidden_states(self.model, batch), lm_head(self.model)
        )
        with no_autocast(hidden.device):
            loss, metrics = self._fused_loss(hidden, weight, bias, batch)
        return loss, {
            k: (v.detach() if isinstance(v, torch.Tensor) else torch.tensor(float(v)))
            for k, v in metrics.items()
        }

    def _fused_loss(self, hidden, weight, bias, batch: PolicyBatch):
        from stepgrpo_fast.functional import linear_grpo_loss

        return linear_grpo_loss(
            hidden,
            weight,
            batch.completion_ids,
            batch.completion_mask,
            batch.advantages,
            old_logp=batch.old_logp,
            ref_logp=batch.ref_logp if self.beta > 0 else None,
            beta=self.beta,
            epsilon_low=self.epsilon_low,
            epsilon_high=self.epsilon_high,
            temperature=_scaled_temperature(self.model, self.temperature),
            loss_type=self.loss_type,
            max_completion_length=self.max_completion_length,
            bias=bias,
            impl=self.impl,
            num_items_in_batch=batch.num_items_in_batch,
            **self.loss_options,
        )


def train_only(model: nn.Module, patterns: list[str]) -> int:
    """Freeze every parameter whose name matches none of ``patterns`` (re.search); returns how
    many parameter tensors stay trainable. Raises ValueError when a pattern matches nothing."""
    import re

    compiled = [re.compile(p) for p in patterns]
    hits = {p.pattern: 0 for p in compiled}
    trainable = 0
    for name, param in model.named_parameters():
        matched = [c.pattern for c in compiled if c.search(name)]
        for pattern in matched:
            hits[pattern] += 1
        if matched and param.requires_grad:
            trainable += 1
        else:
            param.requires_grad_(False)
    unmatched = [p for p, n in hits.items() if n == 0]
    if unmatched:
        names = [n for n, _ in model.named_parameters()]
        raise ValueError(
            f"train_only pattern(s) {unmatched} match no parameter of {type(model).__name__} "
            f"(names look like {names[0]!r} ... {names[-1]!r})"
        )
    return trainable


def freeze_vision_tower(model: nn.Module) -> int:
    """requires_grad=False on the vision encoder (``visual``) parameters; returns how many."""
    bare = model
    visual = getattr(getattr(bare, "model", None), "visual", None) or getattr(bare, "visual", None)
    if visual is None:
        raise ValueError(
            f"{type(model).__name__} has no vision tower (.model.visual / .visual) to freeze"
        )
    count = 0
    for p in visual.parameters():
        p.requires_grad_(False)
        count += 1
    return count


def frozen_linears_to(model: nn.Module, dtype: torch.dtype) -> int:
    """Hold the weights of frozen ``nn.Linear`` layers in ``dtype`` (mixed precision: the
    compute dtype) where that loses nothing; returns the bytes this saves.

    Under autocast a linear layer casts its fp32 weight and bias to the compute dtype on every
    call (round to nearest, as ``.to``), and frozen weights do not enter autocast's weight cache
    (it keeps leaves that require grad only), so a rollout re-casts every frozen layer at every
    decoded token. Holding them in that dtype computes the same bits with no cast and half the
    memory. Only layers whose values ``dtype`` holds exactly are converted (a bf16 checkpoint
    loaded into fp32 masters, as Qwen's releases are; a checkpoint-N of such a run), so the
    fp32 checkpoints a run writes keep every frozen value. Left alone: the output head (the fused
    ops read its weight directly), layers with a trained or shared parameter (tied weights), and
    everything that is not a linear layer (norm weights and embeddings are used in fp32 outside
    autocast's cast list).
    """
    head = lm_head(model)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m is not head]
    owners: dict[int, int] = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            owners[id(param)] = owners.get(id(param), 0) + 1
    saved = 0
    for module in linears:
        params = list(module.parameters(recurse=False))
        if any(p.requires_grad or owners[id(p)] > 1 or not p.is_floating_point() for p in params):
            continue
        low = [p.detach().to(dtype) for p in params]
        if not all(torch.equal(p, q.to(p.dtype)) for p, q in zip(params, low)):
            continue  # not exact in dtype: the checkpoint would lose the fp32 values
        for p, q in zip(params, low):  # the cast once: what module.to(dtype) would compute
            saved += p.numel() * (p.element_size() - q.element_size())
            p.data = q
    return saved
