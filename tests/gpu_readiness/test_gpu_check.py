"""`stepgrpo gpu-check` up to the point that needs a GPU, and its benchmark code on the CPU."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from stepgrpo_fast.gpu import bench
from stepgrpo_fast.gpu.check import NO_CUDA_EXIT, device_info, write_report


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_gpu_check_without_cuda_says_so_and_exits_2(tmp_path):
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "stepgrpo_fast.cli", "gpu-check", "--out",
                           str(out)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == NO_CUDA_EXIT == 2
    assert "no CUDA device is present" in done.stderr
    assert "Nothing was run" in done.stderr
    assert not out.exists()                               # nothing written, nothing run


def test_peak_table_by_device_name():
    assert bench.peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.peak_bf16_tflops("NVIDIA H100 SXM5 80GB") == 989.0
    assert bench.peak_bf16_tflops("NVIDIA H200") == 989.0
    assert bench.peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.peak_bf16_tflops("NVIDIA GeForce RTX 4090") is None
    assert bench.model_flops(2, 3, 5) == 6 * 2 * 3 * 5
    assert bench.executed_flops("stepgrpo", 2, 3, 5) == 8 * 2 * 3 * 5


@pytest.mark.parametrize("op", bench.OPS)
def test_providers_compute_the_same_gradients_on_cpu(op):
    """The timed closures are real: stepgrpo and naive give the same dH, dW (fp32, CPU)."""
    make = bench._logprobs_provider if op == "linear_logprobs" else bench._grpo_provider
    grads = {}
    for provider in ("stepgrpo", "naive"):
        inputs = bench.make_inputs(48, 16, 300, torch.float32, torch.device("cpu"))
        grads[provider] = make(provider, *inputs)()
    for a, b in zip(grads["stepgrpo"], grads["naive"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_benchmark_rows_and_report_on_cpu(tmp_path):
    lines = []
    rows = bench.run_benchmarks("cpu", tokens=(64,), hiddens=(32,), vocab=257,
                                dtype=torch.float32, warmup=1, repeats=2, log=lines.append)
    assert [(r["op"], r["provider"]) for r in rows] == [
        (op, p) for op in bench.OPS for p in bench.PROVIDERS]
    assert len(lines) == len(rows)
    for r in rows:
        if r["provider"] == "liger" and r["error"]:
            continue                                    # Liger's CE kernel may need a GPU
        assert r["error"] is None, r
        assert r["time_ms"] > 0 and r["min_ms"] <= r["time_ms"] and r["repeats"] == 2
        want = bench.model_flops(64, 32, 257) / (r["time_ms"] / 1e3) / 1e12
        assert math.isclose(r["model_tflops"], want, rel_tol=1e-9)
        assert r["pct_peak"] is None                    # no peak for a CPU
    ours = [r for r in rows if r["provider"] == "stepgrpo"]
    assert all(r["executed_tflops"] == pytest.approx(r["model_tflops"] * 8 / 6) for r in ours)

    write_report(tmp_path, device_info(torch, "cpu"), None, rows)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["benchmarks"] == json.loads(json.dumps(rows, default=str))
    text = (tmp_path / "report.md").read_text()
    assert "| op | provider | N | H | V | dtype | time (ms) |" in text
    assert text.count("\n| linear_") == len(rows)


def test_time_median_rejects_bad_counts():
    with pytest.raises(ValueError, match="repeats"):
        bench.time_median(lambda: None, torch.device("cpu"), warmup=0, repeats=0)
