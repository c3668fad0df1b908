"""Timers and peak memory: p20/p50/p80 seconds of a call, interleaved rounds, peak bytes.

Timing: on the CPU ``time.perf_counter`` around each call; on CUDA a pair of CUDA events around
it (``elapsed_time``), after a synchronize so that earlier work is not billed to the call.
``setup`` (untimed, e.g. clearing gradients or running the forward pass before a backward-only
measurement) runs before every call.

Peak memory on the CPU: torch's allocator is invisible to tracemalloc, so we replay the
profiler's "[memory]" events (allocations positive, frees negative) in start order and keep
the running maximum above the starting point (docs/METHOD.md section 7). On CUDA we use
torch.cuda.max_memory_allocated minus the bytes allocated when the call starts.
"""
from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

PERCENTILES = (20, 50, 80)


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


def interleaved_wall_and_cpu(calls: dict[str, tuple[Callable, Callable | None]], *, rounds: int,
                             device: str = "cpu") -> dict[str, dict[str, float]]:
    """p50 wall seconds and p50 CPU seconds of this process (user + system, all threads: less
    sensitive to other processes on a shared machine than wall time) of ``fn(setup())`` per name,
    one call per name per round, names in turn. ``calls``: name -> (fn, setup or None; setup is
    not timed). -> {name: {"wall": p50 s, "cpu": p50 s}}."""
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, (fn, setup) in calls.items():
            arg = setup() if setup is not None else None
            gc.collect()
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn(arg)
            sync(device)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {name: {"wall": float(np.median(wall[name])), "cpu": float(np.median(cpu[name]))}
            for name in calls}


def peak_memory_bytes(fn: Callable[..., object], device: str = "cpu",
                      setup: Callable[[], Any] | None = None) -> int:
    """Peak bytes allocated above the starting point while ``fn(setup())`` runs (result dropped).

    ``setup`` runs before the measurement starts; what it allocates is the starting point. The
    CPU workspace that linear_grpo_loss keeps between calls is freed first, so that its block is
    allocated (and counted) inside the measurement."""
    from ..ops import workspace

    workspace.release()
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
