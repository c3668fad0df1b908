"""Groups linear_logprobs and linear_grpo_loss: the main case in fwd / bwd / full modes, then the
scaling sweeps (full mode) in tokens N at fixed H, V and in vocab V at fixed H, N.

Per case and mode: one memory run per provider first (it doubles as the warm-up), then
``rounds`` timed rounds with the providers interleaved. workspace = peak minus the bytes of
dH and dW (in fwd mode only for providers that compute their gradients in the forward pass).
"""
from __future__ import annotations

import gc
from dataclasses import dataclass

import torch

from .timing import peak_memory_bytes, summarize, time_interleaved
from .linear_ops import (
    PROVIDERS,
    LinearCase,
    build_provider,
    make_inputs,
    max_disagreement,
    mode_call,
    unavailable_reason,
)
from .rows import make_row

SWEEP_PROVIDERS = ("ours", "naive", "bare_matmuls")  # Liger's CPU path is ~5x slower: main case only
SANITY_TOL = 2e-3


@dataclass(frozen=True)
class LinearSettings:
    main: tuple[int, int, int]          # (N, H, V)
    modes: tuple[str, ...]
    sweep_n: tuple[int, ...]            # N values at (sweep_h, sweep_v)
    sweep_v: tuple[int, ...]            # V values at (sweep_h, sweep_n_fixed)
    sweep_h: int
    sweep_v_fixed: int
    sweep_n_fixed: int
    rounds: int
    dtype: torch.dtype = torch.float32


def cases(op: str, s: LinearSettings, device: str) -> list[tuple[LinearCase, tuple[str, ...]]]:
    """(case, modes) in run order: the main case, then the N sweep, then the V sweep."""
    n, h, v = s.main
    out = [(LinearCase(op, n, h, v, s.dtype, device), s.modes)]
    out += [(LinearCase(op, ni, s.sweep_h, s.sweep_v_fixed, s.dtype, device, "N"), ("full",))
            for ni in s.sweep_n]
    out += [(LinearCase(op, s.sweep_n_fixed, s.sweep_h, vi, s.dtype, device, "V"), ("full",))
            for vi in s.sweep_v]
    return out


def _case_fields(case: LinearCase) -> dict:
    b, t = case.bt
    return {"sweep": case.sweep, "N": case.n, "H": case.h, "V": case.v, "B": b, "T": t,
            "shape": f"N={case.n} H={case.h} V={case.v}",
            "dtype": str(case.dtype).replace("torch.", "")}


def run_case(case: LinearCase, modes, providers, unavailable: dict, rounds: int,
             log=print) -> list[dict]:
    """Rows for one case: every provider x mode (unavailable providers get a status row)."""
    rows = []
    fields = {"group": case.op, "op": case.op, **_case_fields(case)}
    x = make_inputs(case)
    built = {name: build_provider(name, case, x) for name in providers if name not in unavailable}
    for mode in modes:
        for name in providers:
            if name in unavailable:
                rows.append(make_row(**fields, provider=name, mode=mode,
                                     status=f"unavailable: {unavailable[name]}"))
        peaks, failed = {}, {}
        for name, p in built.items():   # memory run = warm-up
            fn, setup = mode_call(p, mode)
            try:
                peaks[name] = peak_memory_bytes(fn, case.device, setup=setup)
            except (RuntimeError, MemoryError) as err:
                failed[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            p.clear()
            gc.collect()
        calls = {name: mode_call(p, mode) for name, p in built.items() if name not in failed}
        times, failed_timing = time_interleaved(calls, rounds=rounds, device=case.device)
        failed.update(failed_timing)
        for name, p in built.items():
            if name in failed:
                rows.append(make_row(**fields, provider=name, mode=mode,
                                     status=f"failed: {failed[name]}"))
                continue
            own = case.grad_bytes() if (mode != "fwd" or p.grads_in_forward) else 0
            stats = summarize(times[name])
            row = make_row(**fields, provider=name, mode=mode, status="ok",
                           threads=torch.get_num_threads(), repeats=stats["repeats"],
                           p20_s=stats["p20_s"], p50_s=stats["p50_s"], p80_s=stats["p80_s"],
                           peak_bytes=int(peaks[name]),
                           workspace_bytes=int(max(peaks[name] - own, 0)),
                           items_per_s=case.n / stats["p50_s"], items="tokens")
            rows.append(row)
            log(f"  {case.op:16s} {mode:4s} N={case.n:5d} H={case.h:4d} V={case.v:6d} "
                f"{name:12s} p50 {stats['p50_s']:8.4f} s  peak {peaks[name] / 2**20:9.1f} MB  "
                f"workspace {row['workspace_bytes'] / 2**20:9.1f} MB")
    for p in built.values():
        p.clear()
    del built, x
    gc.collect()
    return rows


def run_group(op: str, s: LinearSettings, device: str, log=print) -> list[dict]:
    diff = max_disagreement(op, device)
    log(f"  sanity {op}: max |ours - naive| over output, dH, dW = {diff:.3g}")
    if not diff < SANITY_TOL:
        raise RuntimeError(f"{op}: ours and naive disagree by {diff:.3g} (> {SANITY_TOL}); "
                           "not benchmarking")
    unavailable = {}
    for name in PROVIDERS:
        if name in ("liger",):
            reason = unavailable_reason(name, op, device)
            if reason is not None:
                unavailable[name] = reason
                log(f"  {op}: {name} unavailable on {device}: {reason}")
    rows = []
    for case, modes in cases(op, s, device):
        providers = PROVIDERS if not case.sweep else SWEEP_PROVIDERS
        rows += run_case(case, modes, providers, unavailable, s.rounds, log)
    return rows
