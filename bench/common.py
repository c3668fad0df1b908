"""Shared benchmark helpers: timing (p20/p50/p80), peak memory, machine info, result files.

Timing: on the CPU ``time.perf_counter`` around each call; on CUDA a pair of CUDA events around
it (``elapsed_time``), after a synchronize so that earlier work is not billed to the call.
``setup`` (untimed, e.g. clearing gradients or running the forward pass before a backward-only
measurement) runs before every call.

Peak memory on the CPU: torch's allocator is invisible to tracemalloc, so we replay the
profiler's "[memory]" events (allocations positive, frees negative) in start order and keep
the running maximum above the starting point (see shared/docs/ENV_NOTES.md). On CUDA we use
torch.cuda.max_memory_allocated minus the bytes allocated when the call starts.
"""
from __future__ import annotations

import csv
import gc
import importlib.metadata
import json
import os
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

PERCENTILES = (20, 50, 80)
VERSION_PACKAGES = {"torch": "torch", "triton": "triton", "transformers": "transformers",
                    "trl": "trl", "liger": "liger-kernel"}


def is_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda"


def sync(device: str | torch.device = "cpu") -> None:
    if is_cuda(device):
        torch.cuda.synchronize()


def time_call(fn: Callable[..., object], *, setup: Callable[[], Any] | None = None,
              device: str = "cpu") -> float:
    """Seconds of one ``fn(setup())`` call (``fn()`` without setup); setup is not timed."""
    arg = setup() if setup is not None else None
    call = (lambda: fn(arg)) if setup is not None else fn
    if is_cuda(device):
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def summarize(times: list[float]) -> dict:
    """{"p20_s", "p50_s", "p80_s", "min_s", "repeats"} of a list of seconds (linear interpolation)."""
    if not times:
        raise ValueError("summarize: no timings")
    p20, p50, p80 = np.percentile(np.asarray(times, dtype=float), PERCENTILES)
    return {"p20_s": float(p20), "p50_s": float(p50), "p80_s": float(p80),
            "min_s": float(min(times)), "repeats": len(times)}


def time_fn(fn: Callable[..., object], *, warmup: int = 1, repeats: int = 5, device: str = "cpu",
            setup: Callable[[], Any] | None = None) -> dict:
    """p20/p50/p80 seconds of ``fn`` over ``repeats`` calls after ``warmup`` calls.

    Also returns "median_s" (= p50_s) for callers written against the first version."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    for _ in range(warmup):
        time_call(fn, setup=setup, device=device)
    out = summarize([time_call(fn, setup=setup, device=device) for _ in range(repeats)])
    out["median_s"] = out["p50_s"]
    return out


def time_interleaved(calls: dict[str, tuple[Callable, Callable | None]], *, rounds: int,
                     device: str = "cpu") -> tuple[dict[str, list[float]], dict[str, str]]:
    """One call per provider per round, providers in turn, so that load swings on a shared
    machine hit every provider alike. ``calls``: name -> (fn, setup or None).

    Returns (seconds per name, failure message per name); a provider that raises (e.g. runs out
    of memory) is dropped from later rounds and reported, never retried.
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    failed: dict[str, str] = {}
    for _ in range(rounds):
        for name, (fn, setup) in calls.items():
            if name in failed:
                continue
            gc.collect()
            try:
                times[name].append(time_call(fn, setup=setup, device=device))
            except (RuntimeError, MemoryError) as err:
                failed[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return times, failed


def peak_memory_bytes(fn: Callable[..., object], device: str = "cpu",
                      setup: Callable[[], Any] | None = None) -> int:
    """Peak bytes allocated above the starting point while ``fn(setup())`` runs (result dropped).

    ``setup`` runs before the measurement starts; what it allocates is the starting point."""
    arg = setup() if setup is not None else None
    call = (lambda: fn(arg)) if setup is not None else fn
    gc.collect()
    if is_cuda(device):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        call()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak


def versions() -> dict[str, str]:
    """Installed versions of the packages the benchmarks compare ("" when not installed)."""
    out = {}
    for key, dist in VERSION_PACKAGES.items():
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[key] = ""
    return out


def device_name(device: str | torch.device = "cpu") -> str:
    """'cuda:<GPU name>' or 'cpu:<processor>'."""
    if is_cuda(device):
        return f"cuda:{torch.cuda.get_device_name(torch.device(device))}"
    return f"cpu:{_cpu_model() or platform.machine()}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine_slug(device: str | torch.device = "cpu") -> str:
    """A file-name-safe machine tag: 'cpu-2c-amd-epyc' or 'cuda-nvidia-h100-80gb-hbm3'."""
    if is_cuda(device):
        raw = f"cuda-{torch.cuda.get_device_name(torch.device(device))}"
    else:
        raw = f"cpu-{os.cpu_count() or 1}c-{_cpu_model() or platform.machine()}"
    return re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")


def machine_info(device: str | torch.device = "cpu") -> dict:
    info = {
        "platform": platform.platform(),
        "processor": _cpu_model() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device_name(device),
        "versions": versions(),
    }
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_results(rows: list[dict], out_prefix: str | Path, *, columns: list[str] | None = None,
                  meta: dict | None = None) -> tuple[Path, Path]:
    """Write rows as ``<prefix>.csv`` and ``<prefix>.json`` (with machine info and ``meta``).

    CSV columns: ``columns`` first (when given), then every other key in first-seen order."""
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    keys: list[str] = list(columns or [])
    for r in rows:
        keys += [k for k in r if k not in keys]
    csv_path = out_prefix.with_name(out_prefix.name + ".csv")
    json_path = out_prefix.with_name(out_prefix.name + ".json")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    payload = {"machine": machine_info(), **(meta or {}), "rows": rows}
    json_path.write_text(json.dumps(payload, indent=2, default=str))
    return csv_path, json_path
