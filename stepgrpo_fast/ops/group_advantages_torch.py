"""group_advantages on torch: the vectorised CPU (and CUDA-without-Triton) implementation, twin
of the Triton kernel in grpo_loss.py (the oracle: reference/grpo_loss.py,
group_advantages_reference, which loops over groups).

All statistics in float64 over [G, group_size], NaN rewards left out of each statistic.
"""
from __future__ import annotations

import torch


def group_advantages_torch(rewards: torch.Tensor, group_size: int, scale: str, eps: float) -> torch.Tensor:
    """rewards [G*group_size] (float, NaN = missing) -> float32 advantages, same shape.

    "group": (r - mean_g) / (std_g + eps), unbiased std of the group's finite rewards;
    "batch": the unbiased std of every finite reward instead; "none": r - mean_g.
    NaN rewards and groups with fewer than two finite rewards or equal rewards get 0.
    ``scale`` is assumed valid (functional.group_advantages checks it).
    """
    r = rewards.to(torch.float64).reshape(-1, group_size)  # [G, M]
    valid = ~torch.isnan(r)
    count = valid.sum(1, keepdim=True).to(torch.float64)  # [G, 1]
    mean = torch.where(valid, r, 0.0).sum(1, keepdim=True) / count.clamp(min=1)
    centred = torch.where(valid, r - mean, 0.0)  # [G, M]
    if scale == "none":
        return centred.reshape(-1).to(torch.float32)
    if scale == "group":
        std = ((centred ** 2).sum(1, keepdim=True) / (count - 1).clamp(min=1)).sqrt()
    else:  # "batch"
        n = count.sum()
        batch_mean = torch.where(valid, r, 0.0).sum() / n.clamp(min=1)
        batch_var = (torch.where(valid, r - batch_mean, 0.0) ** 2).sum() / (n - 1).clamp(min=1)
        std = batch_var.sqrt()
    return (centred / (std + eps)).reshape(-1).to(torch.float32)
