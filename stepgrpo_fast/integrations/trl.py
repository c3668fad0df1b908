"""TRL adapter: StepGRPO rewards as ``GRPOTrainer`` reward functions, and a ``GRPOTrainer`` whose
per-token log-probs come from :func:`stepgrpo_fast.linear_logprobs`.

Tested with TRL 1.16.* only (:data:`SUPPORTED_TRL`): the trainer subclass replaces the fused LM
head that TRL 1.16 installs with ``trl.trainer.utils.add_fused_lm_head`` and that its private
``_get_per_token_logps_and_entropies`` calls as ``model(..., labels=labels, fused_lm_head=True)``.

Usage::

    from stepgrpo_fast.integrations.trl import StepGRPOTrainer, make_reward_funcs
    trainer = StepGRPOTrainer(model="path/to/checkpoint", reward_funcs=make_reward_funcs(mode="paper"),
                              args=GRPOConfig(...), train_dataset=ds)   # ds columns: prompt, solution, key_steps

Only the reward callables (trl_rewards.py, re-exported here) work without TRL installed; everything
else imports it on first use.
"""

from __future__ import annotations

import functools
import os
import types
import warnings

import torch

from stepgrpo_fast.integrations.trl_rewards import (
    StepAccuracyReward,
    StepValidityReward,
    make_reward_funcs,
)
from stepgrpo_fast.lm_head import (
    effective_temperature,
    gathered_head,
    head_logprobs,
    output_head,
    unwrap_model,
)

SUPPORTED_TRL = "1.16."
"""TRL release series the subclass is tested with (it patches TRL private hooks)."""
ALLOW_ANY_TRL_ENV = "STEPGRPO_ALLOW_ANY_TRL"

__all__ = [
    "SUPPORTED_TRL",
    "StepAccuracyReward",
    "StepGRPOTrainer",  # noqa: F822 - built on first access by __getattr__ (imports TRL)
    "StepValidityReward",
    "check_trl_version",
    "install_linear_logprobs_head",
    "make_reward_funcs",
]


# ----------------------------------------------------------------------------------------------
# Version pin
# ----------------------------------------------------------------------------------------------
def check_trl_version(version: str | None = None) -> str:
    """Return the TRL version, or raise ImportError when it is not 1.16.* (set
    ``STEPGRPO_ALLOW_ANY_TRL=1`` to try another release at your own risk)."""
    if version is None:
        try:
            import trl
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "stepgrpo_fast.integrations.trl needs TRL 1.16: pip install 'trl==1.16.*'"
            ) from exc
        version = trl.__version__
    if not version.startswith(SUPPORTED_TRL) and os.environ.get(ALLOW_ANY_TRL_ENV) != "1":
        raise ImportError(
            f"StepGRPOTrainer is tested with TRL {SUPPORTED_TRL}* only and found TRL {version}: it replaces "
            "TRL's private fused LM head (add_fused_lm_head / _get_per_token_logps_and_entropies), which "
            f"changes between releases. Install 'trl=={SUPPORTED_TRL}*' or set {ALLOW_ANY_TRL_ENV}=1 to try anyway."
        )
    return version


# ----------------------------------------------------------------------------------------------
# The LM head: linear_logprobs on the last hidden states, ZeRO-3 / FSDP2 aware
def install_linear_logprobs_head(
    model,
    *,
    temperature: float = 1.0,
    cast_lm_head_to_fp32: bool = False,
    outputs: tuple[str, ...] = ("log_probs",),
    impl: str = "auto",
) -> None:
    """Make ``model(..., labels=labels, fused_lm_head=True)`` run :func:`stepgrpo_fast.linear_logprobs`.

    Same protocol and output (``trl.trainer.utils.FusedCausalLMOutput``) as TRL 1.16's
    ``add_fused_lm_head``: ``log_probs`` [B, T-1] (label at t+1 scored from the hidden state at t),
    ``entropy`` when ``"entropy"`` is in ``outputs``, zeros where the label is -100. The vision inputs
    of a VLM go through the model's own backbone (``model.base_model``) unchanged. Calls without
    ``fused_lm_head=True`` (generation) reach the previous forward untouched.
    """
    from trl.trainer.utils import FusedCausalLMOutput

    model = unwrap_model(model)
    unsupported = [o for o in outputs if o not in ("log_probs", "entropy")]
    if unsupported:
        raise ValueError(
            f"install_linear_logprobs_head: outputs {unsupported} are not computed by linear_logprobs"
        )
    try:  # logits * scale / T == logits / (T / scale)
        effective = effective_temperature(model.config, temperature)
    except ValueError as err:
        raise ValueError(f"{type(model).__name__}: {err}; use trl.GRPOTrainer instead of "
                         "StepGRPOTrainer for this model") from err
    want_entropy = "entropy" in outputs
    previous_forward = model.forward
    previous_code = getattr(
        getattr(previous_forward, "__func__", previous_forward), "__code__", None
    )
    previous_is_trl_head = (
        getattr(previous_code, "co_name", "") == "_fused_forward"
    )  # add_fused_lm_head
    warned_moe = []

    @functools.wraps(type(model).forward)
    def forward(
        self,
        *args,
        fused_lm_head=False,
        labels=None,
        shift_labels=None,
        num_items_in_batch=None,
        **kwargs,
    ):
        if not fused_lm_head or kwargs.get("output_router_logits"):
            # generation / plain calls, and MoE aux-loss calls (TRL's own fused head handles those)
            for key, value in (
                ("labels", labels),
                ("shift_labels", shift_labels),
                ("num_items_in_batch", num_items_in_batch),
            ):
                if value is not None:
                    kwargs[key] = value
            if fused_lm_head:
                if not previous_is_trl_head:
                    raise ValueError(
                        "output_router_logits with fused_lm_head=True needs TRL's add_fused_lm_head "
                        "installed first (StepGRPOTrainer does that)"
                    )
                if not warned_moe:
                    warned_moe.append(True)
                    warnings.warn(
                        "StepGRPOTrainer: MoE router outputs requested; using TRL's own fused LM head",
                        stacklevel=2,
                    )
                kwargs["fused_lm_head"] = True
            return previous_forward(*args, **kwargs)
        kwargs["use_cache"] = False
        backbone_out = self.base_model(*args, **kwargs)
        if shift_labels is None:
            if labels is None:
                raise ValueError("fused_lm_head=True needs labels (or shift_labels)")
            hidden = backbone_out.last_hidden_state[:, :-1]
            labels = labels[:, 1:]
        else:
            hidden = backbone_out.last_hidden_state
            labels = shift_labels
        head = output_head(self)
        hidden = hidden.to(head.weight.device)
        labels = labels.to(head.weight.device)
        mask = labels != -100
        rows, targets = hidden[mask], labels[mask]
        device_type = rows.device.type
        if cast_lm_head_to_fp32:
            compute_dtype = torch.float32
        elif torch.is_autocast_enabled(
            device_type
        ):  # what autocast would feed the model's own lm_head
            compute_dtype = torch.get_autocast_dtype(device_type)
        else:
            compute_dtype = None
        with (
            torch.autocast(device_type, enabled=False),
            gathered_head(head.weight, head.bias) as (weight, bias, regather),
        ):
            if rows.shape[0] == 0:  # no label to score: a zero that keeps the graph connected
                zero = rows.sum() * 0.0
                if regather is None:  # DDP wants a (zero) gradient for every parameter it tracks
                    zero = zero + weight.sum() * 0.0
                logp_rows = entropy_rows = zero.float().expand(0)
            else:
                logp_rows, entropy_rows = head_logprobs(
                    rows,
                    weight,
                    bias,
                    targets,
                    temperature=effective,
                    impl=impl,
                    compute_dtype=compute_dtype,
                    regather=regather,
                    want_entropy=want_entropy,
                )
        log_probs = logp_rows.new_zeros(mask.shape).masked_scatter(mask, logp_rows)
        entropy = (
            entropy_rows.new_zeros(mask.shape).masked_scatter(mask, entropy_rows)
            if want_entropy
            else None
        )
        denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / denominator,
            log_probs=log_probs,
            entropy=entropy,
            label_mask=mask,
        )

    model.forward = types.MethodType(forward, model)


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------
def _build_trainer_class():
    check_trl_version()
    from trl import GRPOTrainer

    class StepGRPOTrainer(GRPOTrainer):
        """``trl.GRPOTrainer`` (TRL 1.16.*) whose per-token log-probs (and entropies) come from
        :func:`stepgrpo_fast.linear_logprobs` on the last hidden states and the LM head.

        Construct it exactly like ``GRPOTrainer``; extra keyword ``logprob_impl`` ("auto" | "torch" |
        "triton"). Works under DDP, DeepSpeed ZeRO-2/3 (a partitioned LM head is gathered around the
        op, forward and backward) and PEFT (the base model's head is patched, as TRL does).

        Every ``GRPOConfig`` loss option (loss_type dapo / cispo / sapo / luspo / ...,
        importance_sampling_level, delta, use_bias_correction_kl, entropy_coef,
        top_entropy_quantile, off_policy_mask_threshold, mask_truncated_completions) is applied
        by TRL's own loss to these log-probs and entropies; none is refused.
        tests/integrations/test_trl_algorithms.py holds the native trainer's objective to it.
        """

        def __init__(self, *args, logprob_impl: str = "auto", **kwargs):
            super().__init__(*args, **kwargs)
            self.logprob_impl = logprob_impl
            cast = bool(getattr(self.args, "cast_lm_head_to_fp32", False))
            install_linear_logprobs_head(
                self.model,
                temperature=self.temperature,
                cast_lm_head_to_fp32=cast,
                outputs=("log_probs", "entropy"),
                impl=logprob_impl,
            )
            if self.ref_model is not None:
                install_linear_logprobs_head(
                    self.ref_model,
                    temperature=self.temperature,
                    cast_lm_head_to_fp32=cast,
                    impl=logprob_impl,
                )

    StepGRPOTrainer.__module__ = __name__
    return StepGRPOTrainer


def __getattr__(name: str):
    # StepGRPOTrainer subclasses trl.GRPOTrainer: build it (and import TRL) on first access only,
    # so that the reward callables above stay usable without TRL.
    if name == "StepGRPOTrainer":
        cls = _build_trainer_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
