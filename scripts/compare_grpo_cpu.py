"""The CPU linear_grpo_loss of a git revision against the working tree's and against its 3 bare
GEMMs, interleaved in one process (CPU-time and wall p50), plus the two versions' disagreement.

    python scripts/compare_grpo_cpu.py --rev 66ba072 --n 1024 --h 896 --v 151936 --rounds 5
    python scripts/compare_grpo_cpu.py --rev HEAD~1 --n 1024 --h 256 --v 32768 --rounds 11 --t 0.7

The bare GEMMs run in two forms: the LM-head form the issue-#30 bar is defined by (h W^T, z W,
z^T h on whole matrices) and the transposed form the chunked path uses (W h^T, z^T W, z h).
The revision's ops/linear_grpo_loss_chunked.py is loaded from ``git show`` with its relative
imports pointed at the installed package (so only that file is the old one).
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from stepgrpo_fast.bench.timing import interleaved_wall_and_cpu
from stepgrpo_fast.ops.linear_grpo_loss_chunked import linear_grpo_loss_chunked

FILE = "stepgrpo_fast/ops/linear_grpo_loss_chunked.py"


def load_revision(rev: str):
    root = Path(__file__).resolve().parents[1]
    text = subprocess.run(["git", "show", f"{rev}:{FILE}"], cwd=root, check=True,
                          capture_output=True, text=True).stdout
    text = text.replace("from ..", "from stepgrpo_fast.").replace("from . import",
                                                                  "from stepgrpo_fast.ops import")
    text = text.replace("from .", "from stepgrpo_fast.ops.")
    path = Path(tempfile.mkdtemp()) / "chunked_at_revision.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("chunked_at_revision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.linear_grpo_loss_chunked


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", required=True)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--h", type=int, default=896)
    ap.add_argument("--v", type=int, default=151_936)
    ap.add_argument("--t", type=float, default=1.0, help="temperature")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    a = ap.parse_args(argv)
    old_fn = load_revision(a.rev)
    n, h, v = a.n, a.h, a.v
    g = torch.Generator().manual_seed(0)
    dt = getattr(torch, a.dtype)
    hid = torch.randn(n, h, generator=g).to(dt)
    w = (torch.randn(v, h, generator=g) / h ** 0.5).to(dt)
    y = torch.randint(0, v, (n,), generator=g)
    weights, adv = torch.full((n,), 1 / n), torch.randn(n, generator=g)
    old = -math.log(v) + 0.5 * torch.randn(n, generator=g)
    ref = old + 0.1 * torch.randn(n, generator=g)
    kw = {"beta": 0.04, "epsilon_low": 0.2, "epsilon_high": 0.2, "temperature": a.t}

    def bare():
        z = hid @ w.T
        z @ w
        z.T @ hid

    def bare_transposed():
        z_t = w @ hid.T
        z_t.T @ w
        z_t @ hid

    calls = {"revision": lambda: old_fn(hid, w, y, weights, adv, old, ref, **kw),
             "working tree": lambda: linear_grpo_loss_chunked(hid, w, y, weights, adv, old, ref, **kw),
             "bare GEMMs": bare, "bare, transposed": bare_transposed}
    a_out, b_out = calls["revision"](), calls["working tree"]()
    diffs = [float((x - r).abs().max() / r.abs().max().clamp(min=1e-30)) for x, r in zip(b_out[:3], a_out[:3])]
    print(f"working tree vs {a.rev}, max relative difference: loss {diffs[0]:.1e}, dH {diffs[1]:.1e}, "
          f"dW {diffs[2]:.1e}")
    for f in calls.values():
        f()                                                  # warm-up
    p50 = interleaved_wall_and_cpu({k: (lambda _, f=f: f(), None) for k, f in calls.items()},
                                   rounds=a.rounds)
    c = {k: r["cpu"] for k, r in p50.items()}
    wl = {k: r["wall"] for k, r in p50.items()}
    print(f"N={n} H={h} V={v} T={a.t} {a.dtype}, {a.rounds} rounds, CPU-time p50 (wall p50):")
    for name in calls:
        print(f"  {name:16s} {c[name]:7.3f} s ({wl[name]:.3f} s)  "
              f"x{c[name] / c['bare GEMMs']:.3f} of the bare GEMMs, "
              f"x{c[name] / c['bare, transposed']:.3f} of the transposed ones")
    print(f"  working tree / {a.rev}: x{c['working tree'] / c['revision']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
