"""Checkpoints of an FSDP2 run (``fsdp: full_shard``) through torch.distributed.checkpoint.

Inside the atomic ``checkpoint-<step>/`` of trainer/checkpoint.py (temp dir, manifest written
last, rename), next to the RNG state of every rank, the scheduler and the data cursor::

    fsdp_shards/.metadata            DCP's index of every tensor
    fsdp_shards/__<rank>_0.distcp    written by rank <rank>: its shards of the TRAINED parameters
                                     (fp32 masters) and of their AdamW state, keyed by name
    adapter_config.json, adapter_model.safetensors   use_peft: the LoRA adapter, gathered, as today
    processor / tokenizer files

The frozen parameters are not written (they are the configured model's, loaded again on resume).
A resume loads the configured model, shards it, and reads the shards back (DCP reshards them:
any number of processes may resume). ``final_model/`` is gathered into a plain Hugging Face
checkpoint (safetensors, in the run's compute dtype).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

DCP_DIR = "fsdp_shards"
_OPTIMIZER_FILE = "optimizer.pt"  # trainer/checkpoint.py's name, written by DDP / one-process runs


def holds_shards(path: str | Path) -> bool:
    return (Path(path) / DCP_DIR / ".metadata").is_file()


def check_resume_layout(path: str | Path | None, fsdp: bool) -> None:
    """ValueError when the checkpoint was written by the other kind of run."""
    if path is None:
        return
    path = Path(path)
    if holds_shards(path) and not fsdp:
        raise ValueError(
            f"cannot resume {path} without fsdp: its weights and AdamW state are "
            f"torch.distributed.checkpoint shards ({DCP_DIR}/); set fsdp: full_shard (any number "
            "of processes), or train on from its final_model/"
        )
    if fsdp and not holds_shards(path) and (path / _OPTIMIZER_FILE).is_file():
        raise ValueError(
            f"cannot resume {path} with fsdp: full_shard: it was written by a DDP / one-process "
            f"run ({_OPTIMIZER_FILE}, no {DCP_DIR}/); resume it without fsdp, or start a new run "
            "from it (model_name_or_path)"
        )


def _bare(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer


def _sharded_state(objective: nn.Module, optimizer: Any) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    model_sd, optim_sd = get_state_dict(
        objective, _bare(optimizer), options=StateDictOptions(ignore_frozen_params=True)
    )
    return {"model": model_sd, "optim": optim_sd}


def write_shards(directory: str | Path, objective: nn.Module, optimizer: Any) -> None:
    """Every rank: its shards of the trained parameters and their AdamW state -> directory/fsdp_shards."""
    import torch.distributed.checkpoint as dcp

    dcp.save(_sharded_state(objective, optimizer), checkpoint_id=Path(directory) / DCP_DIR)


def read_shards(directory: str | Path, objective: nn.Module, optimizer: Any) -> None:
    """Every rank: the trained parameters and AdamW state from directory/fsdp_shards, resharded
    onto this run's processes (a missing tensor raises, naming it)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    if not holds_shards(directory):
        raise FileNotFoundError(f"checkpoint {directory} has no {DCP_DIR}/.metadata")
    state = _sharded_state(objective, optimizer)
    dcp.load(state, checkpoint_id=Path(directory) / DCP_DIR)
    set_state_dict(
        objective,
        _bare(optimizer),
        model_state_dict=state["model"],
        optim_state_dict=state["optim"],
        options=StateDictOptions(ignore_frozen_params=True, strict=False),
    )


def gathered_state(objective: nn.Module, *, trained_only: bool = False) -> dict[str, torch.Tensor]:
    """The policy's full state dict on CPU, keyed as ``objective.model.state_dict()``, on the
    main process (an empty dict elsewhere). Collective: every process calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(
        objective,
        options=StateDictOptions(
            full_state_dict=True, cpu_offload=True, ignore_frozen_params=trained_only
        ),
    )
    return {k.removeprefix("model."): v for k, v in full.items() if k.startswith("model.")}


def checkpoint_writers(
    objective: nn.Module, optimizer: Any, processor: Any, use_peft: bool
) -> tuple[Callable[[Path], None], Callable[[Path], None]]:
    """(save_model, write_shards) for trainer/checkpoint.save_checkpoint. Collective (a LoRA
    adapter is gathered here): every process calls it before the save."""
    adapter = gathered_state(objective, trained_only=True) if use_peft else None
    model = objective.model

    def save_model(directory: Path) -> None:  # main process
        if adapter is not None:
            model.save_pretrained(directory, state_dict=adapter)
        processor.save_pretrained(directory)

    return save_model, lambda directory: write_shards(directory, objective, optimizer)


# ------------------------------------------------------------- the run's hooks (trainer/run.py)
def run_writers(run: Any, save_model: Callable[[Path], None]):
    """(save_model, write_shards) for Run.save: (save_model, None) unchanged without fsdp."""
    if not run.config.fsdp:
        return save_model, None
    return checkpoint_writers(run.objective, run.optimizer, run.processor, run.config.use_peft)


def run_reader(config: Any, objective: nn.Module, optimizer: Any):
    """read_shards for load_checkpoint_state under fsdp; None without."""
    if not config.fsdp:
        return None
    return lambda path: read_shards(path, objective, optimizer)


def final_weights(run: Any) -> dict[str, torch.Tensor] | None:
    """fsdp without use_peft: the full weights for final_model/ on the main process (collective:
    every rank calls it); None otherwise (the checkpoint's files are copied as without fsdp)."""
    if not run.config.fsdp:
        return None
    from stepgrpo_fast.trainer.model.fsdp import peak_memory_mb

    if run.accelerator.is_main_process:
        print(f"[stepgrpo] fsdp: measured peak of the main process {peak_memory_mb(run.accelerator.device):.0f} MB")
    return None if run.config.use_peft else gathered_state(run.objective)
