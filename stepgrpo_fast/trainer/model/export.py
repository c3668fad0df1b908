"""Writing a model out: weights cast to a chosen dtype, and a LoRA adapter merged into its base
as a self-contained checkpoint (``stepgrpo export --merge``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from stepgrpo_fast.trainer.model.loading import load_merged
from stepgrpo_fast.trainer.model.lora import ADAPTER_CONFIG, adapter_base, is_adapter_dir


def save_weights_as(
    model: torch.nn.Module, directory: Path, dtype: torch.dtype, *, state_dict: dict | None = None
) -> None:
    """save_pretrained ``model`` into ``directory`` with its floating weights cast to ``dtype``
    (config.json says ``dtype``); the in-memory model (the fp32 masters) is left as it is.
    state_dict: the weights to write instead of ``model.state_dict()`` (gathered FSDP2 shards)."""
    state = model.state_dict() if state_dict is None else state_dict
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.save_pretrained(directory, state_dict=state)
    # save_pretrained records the in-memory parameters' dtype (fp32); record the written one
    config_path = Path(directory) / "config.json"
    saved = json.loads(config_path.read_text())
    name = str(dtype).removeprefix("torch.")
    for section in (saved, *(v for v in saved.values() if isinstance(v, dict))):
        if "dtype" in section:
            section["dtype"] = name
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")


def export_merged(
    adapter_dir: str | Path, out_dir: str | Path, *, base: str | Path | None = None
) -> Path:
    """Write base + adapter merged as a self-contained checkpoint (weights in the base
    checkpoint's dtype, config, generation config, tokenizer / processor files) to ``out_dir``."""
    adapter_dir, out = Path(adapter_dir), Path(out_dir)
    if not is_adapter_dir(adapter_dir):
        raise ValueError(
            f"--model {adapter_dir}: not a PEFT adapter directory (needs {ADAPTER_CONFIG} and no "
            "config.json; a full checkpoint needs no merging)"
        )
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {out} exists and is not empty")
    model, processor = load_merged(adapter_dir, base=base, torch_dtype="float32", device="cpu")
    base_path = Path(str(base) if base is not None else adapter_base(adapter_dir))
    while is_adapter_dir(base_path):  # an adapter on an adapter: the dtype of the full model
        base_path = Path(adapter_base(base_path))
    dtype = _stored_dtype(base_path / "config.json")
    out.mkdir(parents=True, exist_ok=True)
    save_weights_as(model, out, dtype)
    processor.save_pretrained(out)
    return out


def _stored_dtype(config_json: Path) -> torch.dtype:
    """The dtype a checkpoint's config.json records (dtype / torch_dtype), fp32 when absent."""
    try:
        cfg = json.loads(config_json.read_text())
    except (OSError, json.JSONDecodeError):
        return torch.float32
    sections = [cfg, *(v for v in cfg.values() if isinstance(v, dict))]
    for section in sections:
        name = section.get("dtype") or section.get("torch_dtype")
        if isinstance(name, str) and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
    return torch.float32
