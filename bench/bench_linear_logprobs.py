"""Benchmark: fused linear log-probs, forward + backward (grads of hidden and weight).

    python -m bench.bench_linear_logprobs [--quick] [--tokens 1024 4096] [--repeats 3]

Providers, all in one run, same inputs (hidden [N, H], weight [V, H], fp32, H=896, V=151,936):
  ours   stepgrpo_fast.linear_logprobs(impl="torch")  (chunked, recompute in backward)
  naive  materialise logits, log_softmax, gather; autograd backward
  liger  LigerFusedLinearCrossEntropyLoss(reduction="none"), logp = -CE  (needs a GPU driver
         for its Triton CE kernel; recorded as not applicable when it cannot run here)
  floor  the bare GEMMs: logits = H W^T, then logits @ W and logits^T @ H (the backward GEMMs)
Time: bench.common.time_fn (median wall) plus process CPU seconds per call (cpu_s, steadier on a
shared machine). Memory: bench.common.peak_memory_bytes in separate runs.
workspace = peak - bytes(dH) - bytes(dW): what the op needs beyond its own gradients.
Writes bench/results/linear_logprobs.{csv,json,png}.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.common import peak_memory_bytes, time_fn, write_results
from stepgrpo_fast.functional.logprobs import linear_logprobs
from stepgrpo_fast.reference.linear_logprobs import linear_logprobs_naive

H, V = 896, 151_936
OUT = Path(__file__).resolve().parent / "results" / "linear_logprobs"
MB = 2**20


def make_case(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, H, generator=g).requires_grad_()
    weight = (torch.randn(V, H, generator=g) * 0.02).requires_grad_()
    targets = torch.randint(0, V, (n,), generator=g)
    grad = torch.randn(n, generator=g)
    return hidden, weight, targets, grad


def provider_ours(hidden, weight, targets, grad):
    def run():
        logp = linear_logprobs(hidden, weight, targets, impl="torch")
        torch.autograd.grad(logp, (hidden, weight), grad)
    return run


def provider_naive(hidden, weight, targets, grad):
    def run():
        logp = linear_logprobs_naive(hidden, weight, targets)
        torch.autograd.grad(logp, (hidden, weight), grad)
    return run


def provider_floor(hidden, weight, targets, grad):
    h, w = hidden.detach(), weight.detach()

    def run():
        logits = h @ w.T
        logits @ w        # dH-shaped GEMM
        logits.T @ h      # dW-shaped GEMM
    return run


def provider_liger(hidden, weight, targets, grad):
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    loss_fn = LigerFusedLinearCrossEntropyLoss(reduction="none")

    def run():
        logp = -loss_fn(weight, hidden, targets)
        torch.autograd.grad(logp, (hidden, weight), grad)
    return run


PROVIDERS = {"ours": provider_ours, "naive": provider_naive, "liger": provider_liger,
             "floor": provider_floor}


def liger_unavailable_reason() -> str | None:
    """Run Liger once on a tiny case; return why it cannot run here, or None."""
    try:
        h = torch.randn(4, 8, requires_grad=True)
        w = torch.randn(16, 8, requires_grad=True)
        provider_liger(h, w, torch.randint(0, 16, (4,)), torch.ones(4))()
    except Exception as exc:  # noqa: BLE001 - any failure means "not applicable here"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    return None


def check_ours_matches_naive(n: int = 64) -> float:
    """Max |logp| and grad difference on a small slice of the benchmark case (sanity)."""
    hidden, weight, targets, grad = make_case(n, seed=1)
    outs = []
    for fn in (lambda: linear_logprobs(hidden, weight, targets, impl="torch"),
               lambda: linear_logprobs_naive(hidden, weight, targets)):
        logp = fn()
        outs.append([logp.detach(), *torch.autograd.grad(logp, (hidden, weight), grad)])
    return max((a - b).abs().max().item() for a, b in zip(*outs))


def bench(tokens: list[int], repeats: int, warmup: int, memory: bool) -> list[dict]:
    liger_reason = liger_unavailable_reason()
    rows = []
    for n in tokens:
        case = make_case(n)
        grad_bytes = case[0].numel() * 4 + case[1].numel() * 4   # dH + dW (fp32)
        for name, make in PROVIDERS.items():
            row = {"provider": name, "tokens": n, "hidden": H, "vocab": V, "dtype": "float32"}
            if name == "liger" and liger_reason is not None:
                row["status"] = f"not applicable on CPU: {liger_reason}"
                rows.append(row)
                print(row, flush=True)
                continue
            fn = make(*case)
            cpu0 = time.process_time()
            timing = time_fn(fn, warmup=warmup, repeats=repeats)
            cpu_s = (time.process_time() - cpu0) / (warmup + repeats)
            # cpu_s: process CPU seconds per call (all threads): robust when the machine is shared.
            row.update(status="ok", median_s=round(timing["median_s"], 3),
                       min_s=round(timing["min_s"], 3), cpu_s=round(cpu_s, 3), repeats=repeats)
            if memory:
                peak = peak_memory_bytes(fn)
                row.update(peak_mb=round(peak / MB, 1),
                           workspace_mb=round((peak - grad_bytes) / MB, 1))
            rows.append(row)
            print(row, flush=True)
    for n in tokens:
        base = {r["provider"]: r for r in rows if r["tokens"] == n and r.get("status") == "ok"}
        for r in rows:
            if r["tokens"] == n and r.get("status") == "ok":
                r["x_floor_time"] = round(r["median_s"] / base["floor"]["median_s"], 2)
                r["x_naive_time"] = round(r["median_s"] / base["naive"]["median_s"], 2)
                r["x_naive_cpu"] = round(r["cpu_s"] / base["naive"]["cpu_s"], 2)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("status") == "ok"]
    providers = [p for p in PROVIDERS if any(r["provider"] == p for r in ok)]
    tokens = sorted({r["tokens"] for r in ok})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / max(1, len(providers))
    for i, p in enumerate(providers):
        xs = [j + i * width for j in range(len(tokens))]
        get = {r["tokens"]: r for r in ok if r["provider"] == p}
        axes[0].bar(xs, [get[n]["median_s"] if n in get else 0 for n in tokens], width, label=p)
        if all("workspace_mb" in get.get(n, {}) for n in tokens):
            axes[1].bar(xs, [max(get[n]["workspace_mb"], 0.1) for n in tokens], width, label=p)
    for ax, title in zip(axes, ("fwd+bwd time (s, median)", "workspace MB (peak - dH - dW)")):
        ax.set_xticks([j + width * (len(providers) - 1) / 2 for j in range(len(tokens))])
        ax.set_xticklabels([f"N={n}" for n in tokens])
        ax.set_title(title)
        ax.legend()
    axes[1].set_yscale("log")
    fig.suptitle(f"linear_logprobs, H={H}, V={V}, fp32, CPU ({torch.get_num_threads()} threads)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=1024 only, one timed repeat")
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.tokens, args.repeats, args.warmup = [1024], 1, 0
    diff = check_ours_matches_naive()
    print(f"sanity: max |ours - naive| over logp, dH, dW at N=64: {diff:.3g}", flush=True)
    if diff > 1e-3:
        raise SystemExit("ours and naive disagree; not benchmarking")
    rows = bench(args.tokens, args.repeats, args.warmup, not args.no_memory)
    csv_path, json_path = write_results(rows, args.out)
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {csv_path}, {json_path}, {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
