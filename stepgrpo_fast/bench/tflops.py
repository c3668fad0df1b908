"""Forward + backward TFLOP/s of linear_logprobs and linear_grpo_loss next to naive torch, Liger
and the bare matmuls, with % of the card's dense bf16 peak: ``stepgrpo gpu-check``'s timing
table. Runs on CUDA (gpu-check) and, on small shapes, on the CPU (its test).

Cases, inputs and providers are the harness's (linear_ops.py: the ones ``stepgrpo bench``
times), in mode "full" (forward + backward); times are timing.time_fn's p50 after warm-up, peak
memory timing.peak_memory_bytes (one untimed call, counted as the first warm-up call).

FLOPs counted (GEMMs only; softmax and elementwise work is not counted):
  model_flops = 6 N H V: the forward logits GEMM (2NHV) and the two gradient GEMMs
                dH = dZ W (2NHV) and dW = dZ^T H (2NHV). Every provider is credited with this
                same count, so TFLOP/s compare like for like;
  ours executes 6 N H V for linear_grpo_loss (gradients formed in the forward, one logits
                GEMM) and 8 N H V for linear_logprobs (its backward recomputes the logits,
                another 2NHV, instead of storing [N, V] logits); reported as executed_tflops.
% of peak = model TFLOP/s / the card's dense bf16 peak (PEAK_BF16_TFLOPS, by device name;
omitted for unknown cards and on the CPU).
"""
from __future__ import annotations

import gc

import torch

from .linear_ops import OPS, LinearCase, build_provider, make_inputs, mode_call
from .timing import peak_memory_bytes, time_fn

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, by a substring of the device name.
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 80GB HBM3", 989.0), ("H100 SXM", 989.0),
                    ("A100", 312.0))
PROVIDERS = ("ours", "naive", "liger", "bare_matmuls")
EXECUTED_NHV = {"ours": 8.0, "naive": 6.0, "bare_matmuls": 6.0}   # liger: not counted
EXECUTED_NHV_OF_OP = {("ours", "linear_grpo_loss"): 6.0}            # per-op exceptions


def peak_bf16_tflops(device_name: str) -> float | None:
    """The card's dense bf16 peak, or None when the name is not in PEAK_BF16_TFLOPS."""
    for key, peak in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def model_flops(n: int, h: int, v: int) -> float:
    """GEMM FLOPs of one forward + backward: logits 2NHV, dH 2NHV, dW 2NHV."""
    return 6.0 * n * h * v


def executed_flops(provider: str, n: int, h: int, v: int, op: str = "linear_logprobs"
                   ) -> float | None:
    """GEMM FLOPs a provider actually runs (ours: 8NHV for log-probs, which recompute the
    logits; 6NHV for the GRPO loss, whose gradients are formed in the forward)."""
    per_nhv = EXECUTED_NHV_OF_OP.get((provider, op), EXECUTED_NHV.get(provider))
    return None if per_nhv is None else per_nhv * n * h * v


def bench_case(op: str, provider: str, n: int, h: int, v: int, dtype: torch.dtype,
               device: torch.device, warmup: int = 2, repeats: int = 10,
               peak: float | None = None) -> dict:
    """One timed row (mode "full"); errors (Liger missing, out of memory, ...) land in "error"."""
    device = torch.device(device)
    row = {"op": op, "provider": provider, "N": n, "H": h, "V": v,
           "dtype": str(dtype).replace("torch.", ""), "device": str(device), "error": None}
    try:
        case = LinearCase(op, n, h, v, dtype, str(device))
        fn, setup = mode_call(build_provider(provider, case, make_inputs(case)), "full")
        peak_bytes = peak_memory_bytes(fn, str(device), setup=setup)     # = the first warm-up
        timing = time_fn(fn, setup=setup, warmup=max(warmup - 1, 0), repeats=repeats,
                         device=str(device))
    except Exception as exc:  # noqa: BLE001 - a provider that cannot run is a result
        row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        _release(device)
        return row
    secs = timing["p50_s"]
    flops = model_flops(n, h, v)
    done = executed_flops(provider, n, h, v, op)
    row.update(time_ms=secs * 1e3, min_ms=timing["min_s"] * 1e3, repeats=timing["repeats"],
               model_tflops=flops / secs / 1e12,
               executed_tflops=None if done is None else done / secs / 1e12,
               pct_peak=None if peak is None else 100.0 * flops / secs / 1e12 / peak,
               peak_mem_gb=peak_bytes / 2**30)
    del fn, setup
    _release(device)
    return row


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_benchmarks(device="cuda", tokens=(4096, 16384), hiddens=(3584, 4096), vocab=151_936,
                   dtype=torch.bfloat16, ops=OPS, providers=PROVIDERS, warmup=2, repeats=10,
                   log=print, on_row=None) -> list[dict]:
    """Every (op, N, H, provider) row; ``log`` gets one line per row, ``on_row`` (if given) the
    rows so far after each one (gpu-check rewrites its report, so a run cut short keeps them)."""
    device = torch.device(device)
    peak = peak_bf16_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    rows = []
    for op in ops:
        for n in tokens:
            for h in hiddens:
                for provider in providers:
                    row = bench_case(op, provider, n, h, vocab, dtype, device, warmup, repeats,
                                     peak)
                    rows.append(row)
                    log(format_row(row))
                    if on_row is not None:
                        on_row(rows)
    return rows


def format_row(row: dict) -> str:
    head = f"{row['op']:17s} {row['provider']:12s} N={row['N']:6d} H={row['H']:5d}"
    if row["error"]:
        return f"{head}  n/a ({row['error'][:120]})"
    pct = "" if row["pct_peak"] is None else f" {row['pct_peak']:5.1f}% of peak"
    return f"{head} {row['time_ms']:9.2f} ms {row['model_tflops']:8.2f} TFLOP/s{pct}"


def markdown_table(rows: list[dict]) -> str:
    head = ["op", "provider", "N", "H", "V", "dtype", "time (ms)", "TFLOP/s (6NHV)",
            "% bf16 peak", "executed TFLOP/s", "peak mem (GB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def fmt(r, key, spec):
        return "" if r.get(key) is None else format(r[key], spec)

    for r in rows:
        cells = [r["op"], r["provider"], str(r["N"]), str(r["H"]), str(r["V"]), r["dtype"]]
        if r["error"]:
            cells += [f"n/a: {r['error'][:80]}"] + [""] * 4
        else:
            cells += [fmt(r, "time_ms", ".2f"), fmt(r, "model_tflops", ".1f"),
                      fmt(r, "pct_peak", ".1f"), fmt(r, "executed_tflops", ".1f"),
                      fmt(r, "peak_mem_gb", ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
