"""Per-step metrics: means over micro-batches and reductions over processes."""

from __future__ import annotations

from typing import Any

import torch


def mean_over(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over micro-batches (min over *_min keys, max over *_max keys)."""
    out: dict[str, float] = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        out[key] = (
            min(values)
            if key.endswith("_min")
            else max(values)
            if key.endswith("_max")
            else sum(values) / len(values)
        )
    return out


def sum_across_processes(accelerator: Any, value: float) -> float:
    """``value`` summed over all processes (the value itself on one process)."""
    if accelerator.num_processes == 1:
        return value
    local = torch.tensor([float(value)], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.gather(local).sum().item())


def reduce_across_processes(accelerator: Any, metrics: dict[str, float]) -> dict[str, float]:
    """Mean over processes (min / max for *_min / *_max keys; sum for tokens_per_s)."""
    if accelerator.num_processes == 1:
        return metrics
    keys = sorted(metrics)
    local = torch.tensor(
        [[float(metrics[k]) for k in keys]], dtype=torch.float64, device=accelerator.device
    )
    table = accelerator.gather(local).cpu()  # [processes, K]
    out = {}
    for i, key in enumerate(keys):
        column = table[:, i]
        out[key] = (
            column.min()
            if key.endswith("_min")
            else column.max()
            if key.endswith("_max")
            else column.sum()
            if key == "tokens_per_s"
            else column.mean()
        ).item()
    return out
