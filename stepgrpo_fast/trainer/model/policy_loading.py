"""The model a run trains: load the policy (full fine-tuning or LoRA, fresh or from a checkpoint,
in the run's weight / compute dtypes).

``load_policy`` is what ``run.start_run`` calls after it has resolved the resume checkpoint;
writing weights out (``save_weights_as``, merged adapters) is model/export.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from stepgrpo_fast.trainer.config import TrainConfigBase
from stepgrpo_fast.trainer.model.loading import load_model_and_processor
from stepgrpo_fast.trainer.model.objective import freeze_vision_tower, frozen_linears_to, train_only
from stepgrpo_fast.trainer.model.sharded_checkpoint import check_resume_layout, holds_shards


def load_policy(
    config: TrainConfigBase, resume_from: Path | None, device: torch.device, precision: Any
) -> tuple[torch.nn.Module, Any]:
    """(model in train mode with only the trained parameters requiring grad, processor).

    Full fine-tuning: the checkpoint (or the configured model) in the weight dtype (fp32 masters
    unless low_precision_weights); under mixed precision the frozen linear layers (freeze_vision,
    train_only) are held in the compute dtype (policy.frozen_linears_to). use_peft: the configured base in the compute dtype (frozen),
    with fresh LoRA adapters or the checkpoint's adapter; adapters in the weight dtype.
    fsdp: a checkpoint holds no weights (torch.distributed.checkpoint shards, read after the
    model is sharded: model/sharded_checkpoint.py), so the configured model is loaded.
    """
    check_resume_layout(resume_from, bool(config.fsdp))
    if not config.use_peft:
        if resume_from is not None and (Path(resume_from) / "adapter_config.json").is_file():
            raise ValueError(
                f"cannot resume {resume_from} without use_peft: it holds a LoRA adapter "
                "(set use_peft: true and the same model_name_or_path)"
            )
        model_path = str(resume_from) if resume_from is not None else config.model_name_or_path
        if resume_from is not None and holds_shards(resume_from):
            model_path = config.model_name_or_path  # its trained weights come from the shards
        model, processor = load_model_and_processor(
            model_path, **load_kwargs(config, device, precision.weight_dtype)
        )
        model.train()
        if config.freeze_vision:
            freeze_vision_tower(model)
        if config.train_only:
            train_only(model, config.train_only)
        if config.gradient_checkpointing:
            enable_activation_checkpointing(model)
        if precision.mixed:  # frozen layers need no fp32 master: same bits, no per-token re-cast
            frozen_linears_to(model, precision.compute_dtype)
        return model, processor
    from stepgrpo_fast.trainer.model import lora

    if resume_from is not None:
        lora.check_adapter_checkpoint(resume_from, config.model_name_or_path)
    base, processor = load_model_and_processor(  # frozen: the compute dtype is enough
        config.model_name_or_path, **load_kwargs(config, device, precision.compute_dtype)
    )
    if config.gradient_checkpointing:
        enable_activation_checkpointing(base)
        base.enable_input_require_grads()  # the frozen embeddings give checkpoints no grad input
    if resume_from is None:
        model = lora.wrap_with_lora(base, config, trainable_dtype=precision.weight_dtype)
    else:
        model = lora.load_adapter(base, resume_from, trainable_dtype=precision.weight_dtype)
    model.train()
    return model, processor


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """``gradient_checkpointing: true``: transformers 5.25 renamed gradient_checkpointing_enable
    to activation_checkpointing_enable (the old name warns, and goes in v6); both are supported."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    (enable or model.gradient_checkpointing_enable)()


def load_kwargs(
    config: TrainConfigBase, device: torch.device, dtype: torch.dtype
) -> dict[str, Any]:
    return dict(
        torch_dtype=dtype,
        attn_implementation=None
        if config.attn_implementation == "auto"
        else config.attn_implementation,
        device=device,
        min_pixels=config.min_pixels,
        max_pixels=config.max_pixels,
    )
