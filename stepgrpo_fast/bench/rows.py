"""Result rows: one schema for every group, and the ratios against each group's baseline.

A row is a dict with (at least) the COLUMNS below; empty string for "not applicable".
    group, op, provider, mode       what ran (mode: fwd | bwd | full | call | step)
    status                          "ok" or "unavailable: <why>" / "failed: <why>"
    sweep, N, H, V, B, T, shape     the case (shape: free text for non-linear groups)
    dtype, threads, repeats         how it ran
    p20_s, p50_s, p80_s             seconds per call (percentiles over the timed rounds)
    peak_bytes, workspace_bytes     peak memory above the start; peak minus the op's own outputs
    items_per_s, items              throughput and its unit (tokens, completions, rewards)
    baseline, x_baseline_p50, x_baseline_peak    ratios against the group's baseline provider
    device, torch, triton, transformers, trl, liger   where and with what
"""
from __future__ import annotations

from collections import defaultdict

COLUMNS = [
    "group", "op", "provider", "mode", "status", "sweep", "N", "H", "V", "B", "T", "shape",
    "dtype", "threads", "repeats", "p20_s", "p50_s", "p80_s", "peak_bytes", "workspace_bytes",
    "items_per_s", "items", "baseline", "x_baseline_p50", "x_baseline_peak", "note",
    "device", "torch", "triton", "transformers", "trl", "liger",
]
CASE_KEYS = ("group", "op", "mode", "sweep", "N", "H", "V", "B", "T", "shape")


def make_row(**fields) -> dict:
    """A row with every column present (missing ones empty); unknown keys are kept at the end."""
    row = {k: "" for k in COLUMNS}
    row.update(fields)
    return row


def ok(row: dict) -> bool:
    return row.get("status") == "ok"


def add_ratios(rows: list[dict], baselines: dict[str, str]) -> None:
    """Fill baseline / x_baseline_p50 / x_baseline_peak in place: each row's p50 and peak divided
    by those of the baseline provider (``baselines[group]``) on the same case."""
    by_case = defaultdict(dict)
    for r in rows:
        if ok(r):
            by_case[tuple(r.get(k, "") for k in CASE_KEYS)][r["provider"]] = r
    for r in rows:
        base_name = baselines.get(r["group"], "")
        r["baseline"] = base_name
        base = by_case[tuple(r.get(k, "") for k in CASE_KEYS)].get(base_name)
        if not ok(r) or base is None:
            continue
        if base.get("p50_s"):
            r["x_baseline_p50"] = _sig(r["p50_s"] / base["p50_s"])
        if isinstance(r.get("peak_bytes"), int) and base.get("peak_bytes"):
            r["x_baseline_peak"] = _sig(r["peak_bytes"] / base["peak_bytes"])


def _sig(x: float) -> float:
    """Four significant digits (a ratio of 0.0002 stays visible)."""
    return float(f"{x:.4g}")
