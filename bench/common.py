"""Shared benchmark helpers: median wall time and CPU peak memory from profiler events.

Peak memory on the CPU: torch's allocator is invisible to tracemalloc, so we replay the
profiler's "[memory]" events (allocations positive, frees negative) in start order and keep
the running maximum above the starting point (see shared/docs/ENV_NOTES.md). On CUDA we use
torch.cuda.max_memory_allocated.
"""
from __future__ import annotations

import gc
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch


def sync(device: torch.device | str | None = None) -> None:
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], object], *, warmup: int = 1, repeats: int = 5,
            device: str = "cpu") -> dict:
    """Median/min seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def peak_memory_bytes(fn: Callable[[], object], device: str = "cpu") -> int:
    """Peak bytes allocated above the starting point while ``fn()`` runs (result dropped)."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_results(rows: list[dict], out_prefix: str | Path) -> tuple[Path, Path]:
    """Write rows as ``<prefix>.csv`` and ``<prefix>.json`` (with machine info)."""
    import csv

    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    csv_path, json_path = out_prefix.with_suffix(".csv"), out_prefix.with_suffix(".json")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    json_path.write_text(json.dumps({"machine": machine_info(), "rows": rows}, indent=2))
    return csv_path, json_path
