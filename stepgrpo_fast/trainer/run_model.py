"""The model a run trains, in and out: load the policy (full fine-tuning or LoRA, fresh or from a
checkpoint, in the run's weight / compute dtypes) and write weights in another dtype.

``load_policy`` is what ``run.start_run`` calls after it has resolved the resume checkpoint;
``save_weights_as`` writes the final model of a mixed-precision run in its compute dtype
(``Run.finish``, ``stepgrpo export``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from stepgrpo_fast.trainer.config import TrainConfigBase
from stepgrpo_fast.trainer.modeling import load_model_and_processor
from stepgrpo_fast.trainer.policy import freeze_vision_tower, frozen_linears_to, train_only


def load_policy(
    config: TrainConfigBase, resume_from: Path | None, device: torch.device, precision: Any
) -> tuple[torch.nn.Module, Any]:
    """(model in train mode with only the trained parameters requiring grad, processor).

    Full fine-tuning: the checkpoint (or the configured model) in the weight dtype (fp32 masters
    unless low_precision_weights); under mixed precision the frozen linear layers (freeze_vision,
    train_only) are held in the compute dtype (policy.frozen_linears_to). use_peft: the configured base in the compute dtype (frozen),
    with fresh LoRA adapters or the checkpoint's adapter; adapters in the weight dtype.
    """
    if not config.use_peft:
        if resume_from is not None and (Path(resume_from) / "adapter_config.json").is_file():
            raise ValueError(
                f"cannot resume {resume_from} without use_peft: it holds a LoRA adapter "
                "(set use_peft: true and the same model_name_or_path)"
            )
        model_path = str(resume_from) if resume_from is not None else config.model_name_or_path
        model, processor = load_model_and_processor(
            model_path, **load_kwargs(config, device, precision.weight_dtype)
        )
        model.train()
        if config.freeze_vision:
            freeze_vision_tower(model)
        if config.train_only:
            train_only(model, config.train_only)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if precision.mixed:  # frozen layers need no fp32 master: same bits, no per-token re-cast
            frozen_linears_to(model, precision.compute_dtype)
        return model, processor
    from stepgrpo_fast.trainer import peft as lora

    if resume_from is not None:
        lora.check_adapter_checkpoint(resume_from, config.model_name_or_path)
    base, processor = load_model_and_processor(  # frozen: the compute dtype is enough
        config.model_name_or_path, **load_kwargs(config, device, precision.compute_dtype)
    )
    if config.gradient_checkpointing:
        base.gradient_checkpointing_enable()
        base.enable_input_require_grads()  # the frozen embeddings give checkpoints no grad input
    if resume_from is None:
        model = lora.wrap_with_lora(base, config, trainable_dtype=precision.weight_dtype)
    else:
        model = lora.load_adapter(base, resume_from, trainable_dtype=precision.weight_dtype)
    model.train()
    return model, processor


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


def save_weights_as(model: torch.nn.Module, directory: Path, dtype: torch.dtype) -> None:
    """save_pretrained ``model`` into ``directory`` with its floating weights cast to ``dtype``
    (config.json says ``dtype``); the in-memory model (the fp32 masters) is left as it is."""
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    model.save_pretrained(directory, state_dict=state)
    # save_pretrained records the in-memory parameters' dtype (fp32); record the written one
    config_path = Path(directory) / "config.json"
    saved = json.loads(config_path.read_text())
    name = str(dtype).removeprefix("torch.")
    for section in (saved, *(v for v in saved.values() if isinstance(v, dict))):
        if "dtype" in section:
            section["dtype"] = name
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
