"""Forward + backward timings of linear_logprobs and linear_grpo_loss next to naive torch and
Liger, with achieved TFLOP/s and % of the card's dense bf16 peak. Runs on CUDA (gpu-check) and,
on small shapes, on the CPU (its test), so the code is exercised without a GPU.

Providers (same inputs: hidden [N, H], weight [V, H], targets [N]; grads of hidden and weight):
  linear_logprobs   stepgrpo: functional.linear_logprobs (impl="auto": Triton on CUDA,
                    chunked torch on the CPU), logp.backward(g) with a random g [N];
                    naive: logits = h @ W^T in the input dtype, log_softmax in fp32, gather;
                    liger: LigerFusedLinearCrossEntropyLoss(reduction="sum"), loss.backward().
  linear_grpo_loss  hidden [B, T, H] with T = 512 (B = N / 512; fewer tokens: B = 1), all tokens
                    counted, old and ref log-probs given, beta 0.04, loss_type "grpo";
                    stepgrpo: functional.linear_grpo_loss; naive: the same logits as above, then
                    functional.grpo_loss(impl="torch"); liger: LigerFusedLinearGRPOLoss
                    (torch.compile'd on CUDA, falling back to eager if compiling fails).

FLOPs counted (GEMMs only; softmax and elementwise work is not counted):
  model_flops = 6 N H V: the forward logits GEMM (2NHV) and the two gradient GEMMs
                dH = dZ W (2NHV) and dW = dZ^T H (2NHV). Every provider is credited with this
                same count, so TFLOP/s compare like for like;
  stepgrpo executes 8 N H V: its backward recomputes the logits tile (another 2NHV) instead of
                storing [N, V] logits; reported as executed_tflops.
% of peak = model TFLOP/s / the card's dense bf16 peak (PEAK_BF16_TFLOPS, by device name;
omitted for unknown cards and on the CPU).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, by a substring of the device name.
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 80GB HBM3", 989.0), ("H100 SXM", 989.0),
                    ("A100", 312.0))
SEQ_LEN = 512
OPS = ("linear_logprobs", "linear_grpo_loss")
PROVIDERS = ("stepgrpo", "naive", "liger")


def peak_bf16_tflops(device_name: str) -> float | None:
    """The card's dense bf16 peak, or None when the name is not in PEAK_BF16_TFLOPS."""
    for key, peak in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def model_flops(n: int, h: int, v: int) -> float:
    """GEMM FLOPs of one forward + backward: logits 2NHV, dH 2NHV, dW 2NHV."""
    return 6.0 * n * h * v


def executed_flops(provider: str, n: int, h: int, v: int) -> float | None:
    """GEMM FLOPs a provider actually runs (stepgrpo recomputes the logits: 8NHV)."""
    if provider == "stepgrpo":
        return 8.0 * n * h * v
    if provider == "naive":
        return 6.0 * n * h * v
    return None                                        # liger: not counted independently


def time_median(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> dict:
    """Median / min seconds of ``fn()`` (CUDA events on CUDA, perf_counter on the CPU)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"median_s": times[len(times) // 2], "min_s": times[0], "repeats": repeats}


def make_inputs(n: int, h: int, v: int, dtype: torch.dtype, device: torch.device, seed: int = 0):
    """hidden [N, H], weight [V, H] (both requiring grad, ~unit logits), targets [N], g [N]."""
    g = torch.Generator(device=device).manual_seed(seed)      # generated where they are used
    hidden = torch.randn(n, h, generator=g, device=device).to(dtype).requires_grad_()
    weight = (torch.randn(v, h, generator=g, device=device) / math.sqrt(h)).to(dtype)
    targets = torch.randint(0, v, (n,), generator=g, device=device)
    grad = torch.randn(n, generator=g, device=device)
    return hidden, weight.requires_grad_(), targets, grad


def _naive_logp(hidden, weight, targets):
    logits = (hidden @ weight.T).float()
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)


def _logprobs_provider(name: str, hidden, weight, targets, grad):
    """A closure running one forward + backward, or raises if the provider cannot run."""
    from ..functional.logprobs import linear_logprobs

    if name == "stepgrpo":
        return lambda: torch.autograd.grad(linear_logprobs(hidden, weight, targets),
                                           (hidden, weight), grad)
    if name == "naive":
        return lambda: torch.autograd.grad(_naive_logp(hidden, weight, targets),
                                           (hidden, weight), grad)
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    module = LigerFusedLinearCrossEntropyLoss(reduction="sum")
    return lambda: torch.autograd.grad(module(weight, hidden, targets), (hidden, weight))


def _grpo_batch(hidden, targets, seed: int = 1):
    n = hidden.shape[0]
    b = max(1, n // SEQ_LEN)
    t = n // b
    dev = hidden.device
    g = torch.Generator(device=dev).manual_seed(seed)
    old = -4 * torch.rand(b, t, generator=g, device=dev)
    ref = old + 0.05 * torch.randn(b, t, generator=g, device=dev)
    adv = torch.randn(b, generator=g, device=dev)
    mask = torch.ones(b, t, device=dev)
    return b, t, targets[: b * t].view(b, t), mask, adv, old, ref


def _grpo_provider(name: str, hidden, weight, targets, _grad):
    from ..functional.grpo import grpo_loss, linear_grpo_loss

    b, t, tgt, mask, adv, old, ref = _grpo_batch(hidden, targets)
    h3 = hidden[: b * t].view(b, t, -1)
    kw = {"beta": 0.04, "loss_type": "grpo"}
    if name == "stepgrpo":
        return lambda: torch.autograd.grad(linear_grpo_loss(h3, weight, tgt, mask, adv, old_logp=old,
                                                            ref_logp=ref, **kw)[0], (hidden, weight))
    if name == "naive":
        def naive():
            logp = _naive_logp(h3.reshape(b * t, -1), weight, tgt.reshape(-1)).view(b, t)
            loss = grpo_loss(logp, adv, mask, old_logp=old, ref_logp=ref, impl="torch", **kw)[0]
            return torch.autograd.grad(loss, (hidden, weight))
        return naive
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

    def make(compiled):
        module = LigerFusedLinearGRPOLoss(beta=0.04, compiled=compiled, use_ref_model=True,
                                          loss_type="grpo")
        return lambda: torch.autograd.grad(
            module(h3, weight, tgt, mask, adv, ref_per_token_logps=ref,
                   old_per_token_logps=old)[0], (hidden, weight))

    if hidden.device.type != "cuda":
        return make(False)
    fn = make(True)
    try:
        fn()
    except Exception:  # noqa: BLE001 - torch.compile unavailable: measure eager Liger instead
        return make(False)
    return fn


def bench_case(op: str, provider: str, n: int, h: int, v: int, dtype: torch.dtype,
               device: torch.device, warmup: int = 2, repeats: int = 10,
               peak: float | None = None) -> dict:
    """One timed row; errors (Liger missing, out of memory, ...) land in "error"."""
    row = {"op": op, "provider": provider, "N": n, "H": h, "V": v,
           "dtype": str(dtype).replace("torch.", ""), "device": str(device), "error": None}
    make = _logprobs_provider if op == "linear_logprobs" else _grpo_provider
    try:
        inputs = make_inputs(n, h, v, dtype, device)
        fn = make(provider, *inputs)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        timing = time_median(fn, device, warmup, repeats)
    except Exception as exc:  # noqa: BLE001 - a provider that cannot run is a result
        row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return row
    secs = timing["median_s"]
    flops = model_flops(n, h, v)
    done = executed_flops(provider, n, h, v)
    row.update(time_ms=secs * 1e3, min_ms=timing["min_s"] * 1e3, repeats=timing["repeats"],
               model_tflops=flops / secs / 1e12,
               executed_tflops=None if done is None else done / secs / 1e12,
               pct_peak=None if peak is None else 100.0 * flops / secs / 1e12 / peak)
    if device.type == "cuda":
        row["peak_mem_gb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**30
    del inputs, fn
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


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
    head = f"{row['op']:17s} {row['provider']:9s} N={row['N']:6d} H={row['H']:5d}"
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
