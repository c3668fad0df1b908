"""Benchmark: linear_grpo_loss forward+backward on CPU, side by side in one run.

    python -m bench.bench_grpo_loss [--quick] [--out bench/results/linear_grpo_loss]

Providers, all computing the same GRPO loss (beta 0.04 with ref log-probs, old log-probs given,
loss_type "grpo") and the gradients w.r.t. hidden and weight, fp32:
    ours          stepgrpo_fast.linear_grpo_loss (chunked single pass, three GEMMs)
    naive         materialised logits + log_softmax + autograd (reference.linear_grpo_loss_naive)
    liger         LigerFusedLinearGRPOLoss(compiled=False), Liger-Kernel's chunked loss
    bare_matmuls  the floor: z = h W^T, dH = z W, dW = z^T h and nothing else
Time: bench.common.time_fn, one call per provider per round, rounds interleaved (the machine is
shared: load swings hit all providers alike), median over rounds; process CPU seconds alongside.
Memory, in a separate run: peak bytes above the start (profiler memory events); workspace = peak
minus the bytes of dH and dW themselves.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time
from pathlib import Path

import torch

from bench.common import machine_info, peak_memory_bytes, time_fn, write_results

H, V = 896, 151_936
SHAPES = [(8, 128), (16, 256)]  # N = 1024 and 4096 tokens
MB = 2 ** 20


def make_inputs(b: int, t: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, H, generator=g)
    weight = torch.randn(V, H, generator=g) * 0.02
    targets = torch.randint(0, V, (b, t), generator=g)
    mask = torch.ones(b, t)  # every token counts: all providers do the same work as the bare matmuls
    adv = torch.randn(b, generator=g)
    old = -torch.rand(b, t, generator=g) * 5 - 10
    ref = old + 0.1 * torch.randn(b, t, generator=g)
    return {"hidden": hidden, "weight": weight, "targets": targets, "mask": mask, "adv": adv, "old": old, "ref": ref}


def provider_fns(x: dict) -> dict:
    from stepgrpo_fast.functional.grpo import linear_grpo_loss
    from stepgrpo_fast.reference.grpo_loss import linear_grpo_loss_naive

    h = x["hidden"].requires_grad_()
    w = x["weight"].requires_grad_()
    kw = {"old_logp": x["old"], "ref_logp": x["ref"], "beta": 0.04, "loss_type": "grpo"}

    def clear():
        h.grad = None
        w.grad = None

    def ours():
        clear()
        loss, _ = linear_grpo_loss(h, w, x["targets"], x["mask"], x["adv"], impl="torch", **kw)
        loss.backward()

    def naive():
        clear()
        loss, _ = linear_grpo_loss_naive(h, w, x["targets"], x["mask"], x["adv"], **kw)
        loss.backward()

    def bare():
        hh, ww = h.detach().reshape(-1, H), w.detach()
        z = hh @ ww.t()
        d_h = z @ ww
        d_w = z.t() @ hh
        return d_h, d_w

    fns = {"ours": ours, "naive": naive}
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

        module = LigerFusedLinearGRPOLoss(beta=0.04, compiled=False, use_ref_model=True, loss_type="grpo")

        def liger():
            clear()
            loss, _ = module(h, w, x["targets"], x["mask"], x["adv"], ref_per_token_logps=x["ref"],
                             old_per_token_logps=x["old"])
            loss.backward()

        fns["liger"] = liger
    except ImportError:
        pass
    fns["bare_matmuls"] = bare
    return fns


def run(quick: bool, out: Path, repeats: int) -> list[dict]:
    shapes = SHAPES[:1] if quick else SHAPES
    rows = []
    for b, t in shapes:
        n = b * t
        x = make_inputs(b, t)
        grads_bytes = (n * H + V * H) * 4
        fns = provider_fns(x)
        # Interleaved rounds (one timed call per provider per round) so that load changes on a shared
        # machine hit every provider alike; CPU seconds of this process are recorded next to wall time.
        wall = {name: [] for name in fns}
        cpu = {name: [] for name in fns}
        failed = set()
        for rnd in range(repeats + 1):  # round 0 is the warm-up
            for name, fn in fns.items():
                if name in failed:
                    continue
                gc.collect()
                c0 = time.process_time()
                try:
                    timing = time_fn(fn, warmup=0, repeats=1)
                except (RuntimeError, MemoryError) as err:  # e.g. naive running out of memory
                    print(f"N={n} {name}: failed: {err}")
                    failed.add(name)
                    continue
                if rnd:
                    wall[name].append(timing["median_s"])
                    cpu[name].append(time.process_time() - c0)
        timed = [name for name in fns if name not in failed]
        floor_wall = statistics.median(wall["bare_matmuls"]) if "bare_matmuls" in timed else None
        floor_cpu = statistics.median(cpu["bare_matmuls"]) if "bare_matmuls" in timed else None
        for name in timed:
            gc.collect()
            peak = peak_memory_bytes(fns[name])
            med, med_cpu = statistics.median(wall[name]), statistics.median(cpu[name])
            row = {
                "op": "linear_grpo_loss fwd+bwd", "provider": name, "B": b, "T": t, "N": n, "H": H, "V": V,
                "dtype": "float32", "median_s": round(med, 3), "min_s": round(min(wall[name]), 3),
                "repeats": repeats, "x_bare_matmuls": round(med / floor_wall, 3) if floor_wall else None,
                "cpu_s": round(med_cpu, 3), "cpu_x_bare_matmuls": round(med_cpu / floor_cpu, 3) if floor_cpu else None,
                "peak_mb": round(peak / MB, 1), "workspace_mb": round((peak - grads_bytes) / MB, 1),
            }
            rows.append(row)
            print(f"N={n:5d} {name:13s} {med:8.2f} s ({row['x_bare_matmuls']}x)  cpu {med_cpu:8.2f} s "
                  f"({row['cpu_x_bare_matmuls']}x)  peak {peak / MB:9.1f} MB  workspace {row['workspace_mb']:9.1f} MB",
                  flush=True)
        del x, fns
    write_results(rows, out)
    plot(rows, out.with_suffix(".png"))
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    providers = list(dict.fromkeys(r["provider"] for r in rows))
    sizes = sorted({r["N"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(len(providers), 1)
    for i, p in enumerate(providers):
        xs = [j + i * width for j in range(len(sizes))]
        by_n = {r["N"]: r for r in rows if r["provider"] == p}
        axes[0].bar(xs, [by_n.get(n, {}).get("x_bare_matmuls") or 0 for n in sizes], width, label=p)
        axes[1].bar(xs, [max(by_n.get(n, {}).get("workspace_mb") or 0, 1) for n in sizes], width, label=p)
    for ax, title in zip(axes, ["time / bare three matmuls", "workspace MB (peak - dH - dW), log"]):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(sizes))], [f"N={n}" for n in sizes])
        ax.set_title(title)
    axes[0].axhline(1.15, color="k", linestyle="--", linewidth=0.8)
    axes[1].set_yscale("log")
    axes[1].axhline(64, color="k", linestyle="--", linewidth=0.8)
    axes[0].legend()
    info = machine_info()
    fig.suptitle(f"linear_grpo_loss fwd+bwd, H={H}, V={V}, fp32 -- {info['processor']}, "
                 f"{info['threads']} threads, torch {info['torch']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=1024 only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "linear_grpo_loss"))
    args = parser.parse_args(argv)
    run(args.quick, Path(args.out), args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
