"""Atomic training checkpoints: write to a temp dir, fsync, then rename into place.

Layout of ``<output_dir>/checkpoint-<step>/``::

    config.json, model.safetensors, ...   save_pretrained(): the dir loads like any HF checkpoint
                                          (use_peft: adapter_config.json + adapter_model.safetensors,
                                          the LoRA adapter only; the base is read from
                                          model_name_or_path, trainer_state.json names it)
    tokenizer / processor files           processor.save_pretrained()
    optimizer.pt, scheduler.pt            state_dicts (grad_scaler.pt too for fp16 compute)
    rng_state_<rank>.pth                  python / numpy / torch (/ cuda) RNG of every process
    trainer_state.json                    step, data cursor, anything the loop needs to continue
    training_config.yaml                  the run's config
    manifest.json                         written last: sha256 + size of every file above

A directory without a valid manifest is never picked up as finished: ``.tmp-checkpoint-*``
directories left by a kill mid-save are ignored (and cleaned by the next save). A finished
checkpoint whose files do not match the manifest raises :class:`CorruptCheckpointError`
naming it; older checkpoints are never touched by that check. Only after a new checkpoint is
renamed into place are checkpoints beyond ``keep_last`` deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-checkpoint-"
MANIFEST = "manifest.json"
TRAINER_STATE = "trainer_state.json"
TRAINING_CONFIG = "training_config.yaml"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
GRAD_SCALER = "grad_scaler.pt"
MANIFEST_VERSION = 1
_CKPT_RE = re.compile(rf"^{re.escape(PREFIX)}(\d+)$")


class CorruptCheckpointError(RuntimeError):
    """A finished checkpoint whose files are missing or do not match its manifest."""


# ----------------------------------------------------------------------------------------
# RNG state


def capture_rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------
# files


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def checkpoint_step(path: str | Path) -> int:
    m = _CKPT_RE.match(Path(path).name)
    if not m:
        raise ValueError(
            f"{path}: not a checkpoint directory (expected a name like {PREFIX}<step>)"
        )
    return int(m.group(1))


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Finished-looking checkpoint dirs (name checkpoint-<step>), oldest first. Not verified."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _CKPT_RE.match(p.name)]
    return sorted(found, key=checkpoint_step)


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Return the manifest, or raise CorruptCheckpointError naming ``path`` and the bad file."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CorruptCheckpointError(f"checkpoint {path} is corrupt: {MANIFEST} is missing")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CorruptCheckpointError(
            f"checkpoint {path} is corrupt: unreadable {MANIFEST} ({exc})"
        ) from None
    for rel, meta in files.items():
        f = path / rel
        if not f.is_file():
            raise CorruptCheckpointError(f"checkpoint {path} is corrupt: file {rel} is missing")
        if f.stat().st_size != meta["size"]:
            raise CorruptCheckpointError(
                f"checkpoint {path} is corrupt: {rel} has {f.stat().st_size} bytes, "
                f"manifest says {meta['size']}"
            )
        if _sha256(f) != meta["sha256"]:
            raise CorruptCheckpointError(
                f"checkpoint {path} is corrupt: sha256 of {rel} does not match the manifest"
            )
    return manifest


def find_resume_checkpoint(output_dir: str | Path) -> Path | None:
    """The latest finished checkpoint under ``output_dir``, verified; None when there is none.

    A corrupt latest checkpoint raises CorruptCheckpointError that names it and the previous
    one (which is left exactly as it was), so the user decides what to do.
    """
    ckpts = list_checkpoints(output_dir)
    if not ckpts:
        return None
    latest = ckpts[-1]
    try:
        verify_checkpoint(latest)
    except CorruptCheckpointError as exc:
        previous = ckpts[-2] if len(ckpts) > 1 else None
        hint = (
            f" The previous checkpoint {previous} was not touched: delete {latest} or pass "
            f"--resume {previous} to continue from it."
            if previous is not None
            else " No earlier checkpoint exists; delete it to start over."
        )
        raise CorruptCheckpointError(f"{exc}.{hint}") from None
    return latest


# ----------------------------------------------------------------------------------------
# save / load


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    *,
    save_model: Callable[[Path], None],
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    trainer_state: dict[str, Any],
    config_yaml: str,
    grad_scaler: Any | None = None,
    keep_last: int = 0,
    rank: int = 0,
    is_main: bool = True,
    barrier: Callable[[], None] = lambda: None,
    write_shards: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``<output_dir>/checkpoint-<step>`` atomically; every process must call this.

    save_model(dir) writes the weights and processor (main process only; under ZeRO-3 the
    caller gathers the state dict before). Each rank writes its own RNG state file.
    keep_last > 0 deletes older checkpoints beyond the last ``keep_last`` afterwards.
    write_shards(dir): FSDP2 (model/sharded_checkpoint.py): every rank writes its model and
    optimizer shards there, in place of optimizer.pt.
    """
    root = Path(output_dir)
    final = root / f"{PREFIX}{step}"
    tmp = root / f"{TMP_PREFIX}{step}"
    if is_main:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    barrier()
    torch.save(capture_rng_state(), tmp / f"rng_state_{rank}.pth")
    if write_shards is not None:
        write_shards(tmp)
        optimizer = None
    if is_main:
        save_model(tmp)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER)
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / SCHEDULER)
        if grad_scaler is not None:
            torch.save(grad_scaler.state_dict(), tmp / GRAD_SCALER)
        (tmp / TRAINER_STATE).write_text(json.dumps({**trainer_state, "step": step}, indent=2))
        (tmp / TRAINING_CONFIG).write_text(config_yaml)
    barrier()
    if is_main:
        files = {}
        for f in _files_under(tmp):
            _fsync_file(f)
            files[str(f.relative_to(tmp))] = {"size": f.stat().st_size, "sha256": _sha256(f)}
        manifest = {
            "version": MANIFEST_VERSION,
            "step": step,
            "created": time.time(),
            "files": files,
        }
        manifest_path = tmp / MANIFEST
        manifest_path.write_text(json.dumps(manifest, indent=2))
        _fsync_file(manifest_path)
        for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
            _fsync_dir(d)
        if final.exists():  # same step written again (e.g. a rerun): swap, then drop the old one
            trash = root / f"{TMP_PREFIX}{step}.old"
            if trash.exists():
                shutil.rmtree(trash)
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
        if keep_last > 0:
            prune_checkpoints(root, keep_last, keep=final)
        for stale in root.glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
    barrier()
    return final


def prune_checkpoints(
    output_dir: str | Path, keep_last: int, *, keep: Path | None = None
) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints (never ``keep``); return the deleted."""
    ckpts = list_checkpoints(output_dir)
    doomed = [p for p in ckpts[:-keep_last] if keep is None or p.resolve() != keep.resolve()]
    for p in doomed:
        shutil.rmtree(p)
    return doomed


def load_checkpoint_state(
    path: str | Path,
    *,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    grad_scaler: Any | None = None,
    rank: int = 0,
    map_location: str | torch.device = "cpu",
    read_shards: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    """Verify ``path``, load optimizer / scheduler / this rank's RNG; return trainer_state.

    The weights are loaded by the caller through from_pretrained(path); under FSDP2
    ``read_shards(path)`` reads the model and optimizer shards (in place of optimizer.pt).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {path}")
    verify_checkpoint(path)
    if read_shards is not None:
        read_shards(path)
    elif optimizer is not None:
        if not (path / OPTIMIZER).is_file():
            raise CorruptCheckpointError(f"checkpoint {path} has no {OPTIMIZER}")
        optimizer.load_state_dict(
            torch.load(path / OPTIMIZER, map_location=map_location, weights_only=True)
        )
    if scheduler is not None and (path / SCHEDULER).is_file():
        scheduler.load_state_dict(torch.load(path / SCHEDULER, weights_only=True))
    if grad_scaler is not None and (path / GRAD_SCALER).is_file():
        grad_scaler.load_state_dict(torch.load(path / GRAD_SCALER, weights_only=True))
    rng_file = path / f"rng_state_{rank}.pth"
    if rng_file.is_file():
        restore_rng_state(torch.load(rng_file, weights_only=True))
    state = json.loads((path / TRAINER_STATE).read_text())
    state["restored_rng"] = rng_file.is_file()
    return state
