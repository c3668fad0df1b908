"""Several seeds: one demo per seed into DIR/seed_S, then mean +- std over seeds (summary.json,
summary.md)."""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .pipeline import run_demo
from .report import summary_markdown
from .settings import METRICS, prepare_out_dir


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """{"mean", "std" (sample std, 0 for one value), "values"}."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std of no values")
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "values": values}


def summarize_seeds(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean +- std over seeds of SFT and StepGRPO metrics, the paired deltas, and whether
    StepGRPO beats SFT by more than the seed-to-seed spread (delta mean > both stds)."""
    if not reports:
        raise ValueError("summarize_seeds needs at least one report")
    summary: dict[str, Any] = {"seeds": [r["seed"] for r in reports]}
    for stage in ("sft", "stepgrpo"):
        summary[stage] = {k: mean_std([r[stage][k] for r in reports]) for k in METRICS}
    summary["delta"] = {k: mean_std([r["stepgrpo"][k] - r["sft"][k] for r in reports]) for k in METRICS}
    summary["beats_spread"] = {
        k: summary["delta"][k]["mean"] > max(summary["sft"][k]["std"], summary["stepgrpo"][k]["std"])
        for k in METRICS}
    summary["wall_s"] = mean_std([r["timings"]["total_s"] for r in reports])
    return summary


def run_seeds(out_dir: str | Path, seeds: Sequence[int], **kwargs) -> dict[str, Any]:
    """run_demo for each seed into DIR/seed_S, then DIR/summary.json and DIR/summary.md."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and non-empty, got {list(seeds)}")
    out = prepare_out_dir(out_dir)
    reports = [run_demo(out / f"seed_{s}", seed=s, **kwargs) for s in seeds]
    summary = summarize_seeds(reports)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(summary))
    return summary
