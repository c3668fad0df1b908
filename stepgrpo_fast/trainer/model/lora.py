"""LoRA through PEFT for the native trainer: which layers get adapters, wrapping, reloading,
the adapter-disabled reference, and merging an adapter into a full checkpoint.

Option names follow TRL's ModelConfig (``use_peft``, ``lora_r``, ``lora_alpha``, ``lora_dropout``,
``lora_target_modules``, ``lora_modules_to_save``) plus ``lora_vision``:

    targets = the language model's linear layers whose name ends in a lora_target_modules entry
              (default: q/k/v/o_proj, gate/up/down_proj, the attention and MLP projections)
              + every linear layer of the vision tower when lora_vision is true
    W x  ->  W x + (lora_alpha / lora_r) B A dropout(x)     A [r, in], B [out, r] (B starts at 0)

The targets are resolved to full module names here (PEFT matches them exactly), so the
Qwen2.5-VL vision tower's own gate/up/down_proj are never adapted by the default. ``lm_head``
cannot carry a LoRA adapter (the fused log-prob ops read ``lm_head.weight`` directly); put it in
``lora_modules_to_save`` to train a full copy of it instead. The base weights stay frozen and
the base checkpoint on disk is never written; a checkpoint holds only the adapter
(adapter_config.json + adapter_model.safetensors).

peft is imported on first use only (``pip install 'stepgrpo_fast[peft]'``).
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stepgrpo_fast.lm_head import unwrap_model

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_CONFIG = "adapter_config.json"
_VISION_ATTRS = ("visual", "vision_tower", "vision_model")


# ------------------------------------------------------------------------------- layer names
def vision_prefix(model: nn.Module) -> str | None:
    """The module-name prefix of the vision tower ("model.visual" for Qwen-VL), or None."""
    bare = unwrap_model(model)
    for owner_name, owner in (("model", getattr(bare, "model", None)), ("", bare)):
        for attr in _VISION_ATTRS:
            if isinstance(getattr(owner, attr, None), nn.Module):
                return f"{owner_name}.{attr}" if owner_name else attr
    return None


def linear_layer_names(model: nn.Module) -> list[str]:
    """Full names of the model's nn.Linear modules (under any PEFT / DDP wrapper)."""
    return [n for n, m in unwrap_model(model).named_modules() if isinstance(m, nn.Linear)]


def compact_names(names: list[str]) -> str:
    """'model.language_model.layers.*.self_attn.q_proj, ...': layer indices folded, deduplicated."""
    folded = dict.fromkeys(re.sub(r"\.\d+(?=\.|$)", ".*", n) for n in names)
    return ", ".join(folded)


def _under(name: str, prefix: str | None) -> bool:
    return prefix is not None and (name == prefix or name.startswith(prefix + "."))


def _matches(name: str, target: str) -> bool:
    """PEFT's rule for a target name: the module name itself or its dotted suffix."""
    return name == target or name.endswith("." + target)


def resolve_lora_targets(
    model: nn.Module, targets: list[str] | tuple[str, ...] | None = None, *, vision: bool = False
) -> list[str]:
    """Full names of the linear layers that get LoRA adapters.

    targets: name suffixes matched against the language model's linear layers (None / empty:
    DEFAULT_LORA_TARGETS); vision: add every linear layer of the vision tower. ValueError when an
    entry matches nothing (the message lists the model's linear layers) or names the LM head.
    """
    targets = list(targets or DEFAULT_LORA_TARGETS)
    names = linear_layer_names(model)
    head = _output_head_name(model)
    visual = vision_prefix(model)
    if vision and visual is None:
        raise ValueError(
            f"lora_vision: {type(unwrap_model(model)).__name__} has no vision tower "
            f"({', '.join(_VISION_ATTRS)})"
        )
    language = [n for n in names if not _under(n, visual) and n != head]
    chosen: dict[str, None] = {}
    for target in targets:
        if head is not None and _matches(head, target):
            raise ValueError(
                f"lora_target_modules entry {target!r} names the LM head ({head}): the fused "
                "log-prob ops read lm_head.weight directly, so it cannot carry a LoRA adapter; "
                "put it in lora_modules_to_save to train a full copy of it"
            )
        hits = [n for n in language if _matches(n, target)]
        if not hits:
            in_vision = [n for n in names if _under(n, visual) and _matches(n, target)]
            hint = (
                " (it matches vision-tower layers only: the vision tower is adapted as a whole "
                "with lora_vision: true)"
                if in_vision
                else ""
            )
            raise ValueError(
                f"lora_target_modules entry {target!r} matches no linear layer of the language "
                f"model{hint}; the model's linear layers are: {compact_names(names)}"
            )
        chosen.update(dict.fromkeys(hits))
    if vision:
        chosen.update(dict.fromkeys(n for n in names if _under(n, visual)))
    return list(chosen)


def _output_head_name(model: nn.Module) -> str | None:
    bare = unwrap_model(model)
    head = bare.get_output_embeddings() if hasattr(bare, "get_output_embeddings") else None
    for name, module in bare.named_modules():
        if module is head:
            return name
    return None


def check_modules_to_save(model: nn.Module, names: list[str]) -> None:
    """ValueError naming an entry of lora_modules_to_save that matches no module."""
    modules = [n for n, _ in unwrap_model(model).named_modules() if n]
    for entry in names:
        if not any(_matches(n, entry) for n in modules):
            raise ValueError(
                f"lora_modules_to_save entry {entry!r} matches no module of "
                f"{type(unwrap_model(model)).__name__}; its linear layers are: "
                f"{compact_names(linear_layer_names(model))}"
            )


# ------------------------------------------------------------------------------- wrapping
def lora_config(model: nn.Module, config: Any):
    """A peft.LoraConfig for a TrainConfigBase with use_peft (targets resolved to full names)."""
    from peft import LoraConfig

    targets = resolve_lora_targets(model, config.lora_target_modules, vision=config.lora_vision)
    check_modules_to_save(model, config.lora_modules_to_save)
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        modules_to_save=list(config.lora_modules_to_save) or None,
        bias="none",
    )


def wrap_with_lora(model: nn.Module, config: Any, *, trainable_dtype: torch.dtype):
    """get_peft_model(model, lora_config(model, config)): the base frozen, the adapters (and
    modules_to_save copies) trainable and held in ``trainable_dtype``."""
    from peft import get_peft_model

    peft_model = get_peft_model(model, lora_config(model, config))
    # what the adapter applies to: the configured path (PEFT would record the base's own
    # name_or_path, wrong when model_name_or_path is itself an adapter dir, merged on load)
    base = str(config.model_name_or_path)
    if base:  # a local directory as an absolute path: export / eval work from any directory
        base = str(Path(base).expanduser().resolve()) if Path(base).expanduser().is_dir() else base
        for adapter_config in peft_model.peft_config.values():
            adapter_config.base_model_name_or_path = base
    cast_trainable(peft_model, trainable_dtype)
    return peft_model


def load_adapter(model: nn.Module, adapter_dir: str | Path, *, trainable_dtype: torch.dtype):
    """PeftModel.from_pretrained(model, adapter_dir, is_trainable=True) (a resume)."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    cast_trainable(peft_model, trainable_dtype)
    return peft_model


def cast_trainable(model: nn.Module, dtype: torch.dtype) -> None:
    """Trainable parameters (adapters, modules_to_save copies) to ``dtype`` (the AdamW masters);
    a bf16 base stays bf16."""
    for p in model.parameters():
        if p.requires_grad and p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)


def is_peft_model(model: Any) -> bool:
    return callable(getattr(model, "disable_adapter", None)) and hasattr(model, "peft_config")


def adapters_disabled(model: Any):
    """Context in which ``model`` (a PeftModel, possibly under DDP) computes the base model:
    the reference policy of a LoRA run. A no-op context for any other model."""
    while not is_peft_model(model) and isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model.disable_adapter() if is_peft_model(model) else contextlib.nullcontext()


def lora_b_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """name -> lora_B weight of every adapted layer (they start at zero)."""
    return {n: p for n, p in model.named_parameters() if ".lora_B." in n}


# ------------------------------------------------------------------------------- adapter dirs
def is_adapter_dir(path: str | Path) -> bool:
    """A PEFT adapter directory (adapter_config.json, no full model config.json)."""
    p = Path(path)
    return (p / ADAPTER_CONFIG).is_file() and not (p / "config.json").is_file()


def check_adapter_checkpoint(path: str | Path, base: str) -> None:
    """ValueError unless checkpoint ``path`` holds an adapter trained on ``base`` (a resume)."""
    from stepgrpo_fast.trainer.checkpoint import TRAINER_STATE

    if not is_adapter_dir(path):
        raise ValueError(
            f"cannot resume {path} with use_peft: it holds full model weights, not a LoRA "
            "adapter (it was trained without use_peft)"
        )
    trained_on = json.loads((Path(path) / TRAINER_STATE).read_text()).get("base_model")
    if trained_on is not None and str(trained_on) != str(base):
        raise ValueError(
            f"cannot resume {path}: its adapter was trained on model_name_or_path {trained_on}, "
            f"this run has {base}"
        )


def adapter_base(path: str | Path) -> str:
    """The base checkpoint an adapter directory was trained on (base_model_name_or_path)."""
    cfg_path = Path(path) / ADAPTER_CONFIG
    try:
        base = json.loads(cfg_path.read_text()).get("base_model_name_or_path")
    except json.JSONDecodeError as exc:
        raise ValueError(f"{cfg_path}: not valid JSON ({exc})") from None
    if not base:
        raise ValueError(f"{cfg_path} names no base_model_name_or_path; pass the base explicitly")
    return str(base)
