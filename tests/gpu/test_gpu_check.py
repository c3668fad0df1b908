"""`stepgrpo gpu-check` up to the point that needs a GPU, and its benchmark code (the harness's
cases and providers, stepgrpo_fast/bench/tflops.py) on the CPU."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from stepgrpo_fast.bench import linear_ops
from stepgrpo_fast.bench import tflops as bench
from stepgrpo_fast.bench.timing import time_fn
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
    assert bench.executed_flops("ours", 2, 3, 5) == 8 * 2 * 3 * 5
    assert bench.executed_flops("ours", 2, 3, 5, "linear_logprobs") == 8 * 2 * 3 * 5
    assert bench.executed_flops("ours", 2, 3, 5, "linear_grpo_loss") == 6 * 2 * 3 * 5


@pytest.mark.parametrize("op", linear_ops.OPS)
def test_providers_compute_the_same_gradients_on_cpu(op):
    """The timed closures are real: ours and naive give the same dH, dW (fp32, CPU)."""
    grads = {}
    case = linear_ops.LinearCase(op, 48, 16, 300)
    for provider in ("ours", "naive"):
        x = linear_ops.make_inputs(case)
        fn, setup = linear_ops.mode_call(linear_ops.build_provider(provider, case, x), "full")
        fn(setup())
        grads[provider] = (x["hidden"].grad, x["weight"].grad)
    for a, b in zip(grads["ours"], grads["naive"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_benchmark_rows_and_report_on_cpu(tmp_path):
    lines = []
    rows = bench.run_benchmarks("cpu", tokens=(64,), hiddens=(32,), vocab=257,
                                dtype=torch.float32, warmup=1, repeats=2, log=lines.append)
    assert [(r["op"], r["provider"]) for r in rows] == [
        (op, p) for op in linear_ops.OPS for p in bench.PROVIDERS]
    assert len(lines) == len(rows)
    for r in rows:
        if r["provider"] == "liger" and r["error"]:
            continue                                    # Liger's CE kernel may need a GPU
        assert r["error"] is None, r
        assert r["time_ms"] > 0 and r["min_ms"] <= r["time_ms"] and r["repeats"] == 2
        want = bench.model_flops(64, 32, 257) / (r["time_ms"] / 1e3) / 1e12
        assert math.isclose(r["model_tflops"], want, rel_tol=1e-9)
        assert r["pct_peak"] is None                    # no peak for a CPU
    ours = [r for r in rows if r["provider"] == "ours"]
    assert all(r["executed_tflops"] == pytest.approx(
        r["model_tflops"] * (8 if r["op"] == "linear_logprobs" else 6) / 6) for r in ours)

    write_report(tmp_path, device_info(torch, "cpu"), None, rows)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["benchmarks"] == json.loads(json.dumps(rows, default=str))
    text = (tmp_path / "report.md").read_text()
    assert "| op | provider | N | H | V | dtype | time (ms) |" in text
    assert text.count("\n| linear_") == len(rows)


def test_timer_rejects_bad_counts():
    with pytest.raises(ValueError, match="repeats"):
        time_fn(lambda: None, warmup=0, repeats=0, device="cpu")


def test_report_lists_the_failed_numerics_checks(tmp_path):
    checks = [{"name": "linear_grpo_loss-bf16", "ok": False, "seconds": 0.1,
               "error": "NumericsMismatch: bf16 dH: rel err 0.5\nmore"},
              {"name": "linear_grpo_loss-fp32", "ok": True, "seconds": 0.1, "error": None}]
    tests = {"ok": False, "summary": "1 passed, 1 failed", "checks": checks}
    write_report(tmp_path, device_info(torch, "cpu"), tests, None)
    text = (tmp_path / "report.md").read_text()
    assert "FAIL: 1 passed, 1 failed" in text
    assert "- FAIL `linear_grpo_loss-bf16`: NumericsMismatch: bf16 dH: rel err 0.5\n" in text
    assert "linear_grpo_loss-fp32" not in text
    assert json.loads((tmp_path / "report.json").read_text())["tests"]["checks"] == checks
