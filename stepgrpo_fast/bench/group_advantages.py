"""Group advantages: stepgrpo_fast.group_advantages (impl="auto": torch on the CPU, a Triton kernel
on CUDA) vs the plain torch expression GRPO trainers inline, (r - mean_g) / (std_g + eps).

Rewards [R] float32 with groups of GROUP_SIZE consecutive items; ours also handles NaN rewards
(left out of the statistics), the plain version does not, so the inputs have none.
"""
from __future__ import annotations

import gc

import torch

from .timing import peak_memory_bytes, summarize, time_interleaved
from .rows import make_row

GROUP_SIZE = 8
EPS = 1e-4
BASELINE = "plain_torch"


def plain_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """[R] -> [R]: per-group mean and unbiased std, no NaN handling."""
    g = rewards.view(-1, group_size)
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + EPS)).view(-1)


def providers(rewards: torch.Tensor) -> dict:
    from stepgrpo_fast import group_advantages

    return {
        "ours": lambda: group_advantages(rewards, GROUP_SIZE, eps=EPS, impl="auto"),
        BASELINE: lambda: plain_advantages(rewards, GROUP_SIZE),
    }


def run_group(sizes: tuple[int, ...], rounds: int, device: str, log=print) -> list[dict]:
    rows = []
    for size in sizes:
        if size % GROUP_SIZE:
            raise ValueError(f"advantages: size {size} must be a multiple of {GROUP_SIZE}")
        g = torch.Generator().manual_seed(0)
        rewards = torch.rand(size, generator=g).to(device)
        fns = providers(rewards)
        want, got = fns[BASELINE](), fns["ours"]()
        diff = (want - got).abs().max().item()
        if not diff < 1e-4:
            raise RuntimeError(f"advantages: ours and plain torch disagree by {diff:.3g}")
        peaks = {name: peak_memory_bytes(fn, device) for name, fn in fns.items()}
        times, failed = time_interleaved({n: (fn, None) for n, fn in fns.items()},
                                         rounds=rounds, device=device)
        out_bytes = size * 4
        for name in fns:
            fields = {"group": "advantages", "op": "group_advantages", "provider": name,
                      "mode": "fwd", "N": size, "dtype": "float32",
                      "shape": f"rewards={size} group_size={GROUP_SIZE}"}
            if name in failed:
                rows.append(make_row(**fields, status=f"failed: {failed[name]}"))
                continue
            s = summarize(times[name])
            rows.append(make_row(**fields, status="ok", threads=torch.get_num_threads(),
                                 repeats=s["repeats"], p20_s=s["p20_s"], p50_s=s["p50_s"],
                                 p80_s=s["p80_s"], peak_bytes=int(peaks[name]),
                                 workspace_bytes=int(max(peaks[name] - out_bytes, 0)),
                                 items_per_s=size / s["p50_s"], items="rewards"))
            log(f"  advantages R={size:8d} {name:12s} p50 {s['p50_s'] * 1e3:9.3f} ms  "
                f"peak {peaks[name] / 2**20:8.2f} MB")
        del rewards, fns
        gc.collect()
    return rows
