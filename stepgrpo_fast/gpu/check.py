"""`stepgrpo gpu-check`: validate the Triton kernels on a CUDA machine in one command.

    stepgrpo gpu-check [--out DIR] [--tokens 4096 16384] [--hidden 3584 4096]
                       [--skip-tests] [--skip-bench] [--repeats 10]

1. runs the GPU numerics checks (numerics.GPU_CHECKS, the list tests/gpu/test_gpu_numerics.py
   runs under pytest) in a subprocess with TRITON_INTERPRET=0, so the kernels are compiled for
   the card, not interpreted: Triton vs float64 references in bf16 / fp16 / fp32 (TF32 on and
   off). Nothing of a source checkout is needed: the checks are package functions;
2. times linear_logprobs and linear_grpo_loss forward + backward in bf16 (V = 151,936) next to
   naive torch, Liger and the bare matmuls, with the benchmark harness's cases and providers
   (stepgrpo_fast/bench/tflops.py: what is timed and which FLOPs are counted);
3. writes DIR/report.md, DIR/report.json (and DIR/numerics.log).

Without a CUDA device it prints that no CUDA device is present and exits 2, running nothing.
Exit 1 when a check fails or an "ours" benchmark row errors; 0 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

NO_CUDA_EXIT = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="gpu_check", help="report directory (default ./gpu_check)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--hidden", type=int, nargs="+", default=[3584, 4096])
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip-tests", action="store_true",
                        help="only the benchmarks (skip the numerics checks)")
    parser.add_argument("--skip-bench", action="store_true", help="only the numerics checks")


def no_cuda_message(torch) -> str:
    return (f"stepgrpo gpu-check: no CUDA device is present (torch {torch.__version__}, built for "
            f"CUDA {torch.version.cuda or 'none'}: torch.cuda.is_available() is False). Nothing "
            "was run. Run this command on a machine with an NVIDIA GPU; without one, "
            "`stepgrpo kernel-table` checks that the kernels compile for sm_80 / sm_90.")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def device_info(torch, device: str = "cuda") -> dict:
    """Name, compute capability, SMs, memory and library versions of ``device`` (cuda | cpu)."""
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "triton": _version("triton"),
            "liger_kernel": _version("liger-kernel"), "python": platform.python_version(),
            "tf32_matmul_default": torch.backends.cuda.matmul.allow_tf32}
    if device == "cpu":
        return {**info, "name": platform.processor() or platform.machine(), "capability": "cpu",
                "sms": None, "memory_gb": None}
    props = torch.cuda.get_device_properties(0)
    return {**info, "name": props.name, "capability": f"sm_{props.major}{props.minor}",
            "sms": props.multi_processor_count, "memory_gb": round(props.total_memory / 2**30, 1)}


def run_gpu_checks(out: Path) -> dict:
    """numerics.GPU_CHECKS in a subprocess (``python -m stepgrpo_fast.gpu.numerics``) with
    TRITON_INTERPRET=0; a crashing kernel cannot take the report down. Summary + log path."""
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    results_path, log = out / "numerics.json", out / "numerics.log"
    results_path.unlink(missing_ok=True)           # never report an earlier run's results
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "stepgrpo_fast.gpu.numerics", "--json",
                           str(results_path)], env=env, capture_output=True, text=True,
                          check=False)
    log.write_text(done.stdout + done.stderr)
    results = json.loads(results_path.read_text()) if results_path.is_file() else []
    failed = [r["name"] for r in results if not r["ok"]]
    if results:
        summary = f"{len(results) - len(failed)} passed, {len(failed)} failed"
    else:
        summary = f"no results (exit {done.returncode}): {(done.stdout + done.stderr)[-300:]}"
    return {"ok": done.returncode == 0 and bool(results) and not failed,
            "returncode": done.returncode, "summary": summary, "failed": failed,
            "seconds": time.perf_counter() - start, "log": str(log), "checks": results}


def write_report(out: Path, info: dict, tests: dict | None, rows: list[dict] | None) -> None:
    from ..bench.tflops import PEAK_BF16_TFLOPS, markdown_table

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(
        {"device": info, "tests": tests, "benchmarks": rows}, indent=1, default=str))
    lines = ["# stepgrpo gpu-check", "",
             (f"Device: **{info.get('name')}** ({info.get('capability')}, {info.get('sms')} SMs, "
             f"{info.get('memory_gb')} GB); torch {info.get('torch')} (CUDA {info.get('cuda')}), "
             f"triton {info.get('triton')}, liger-kernel {info.get('liger_kernel')}."), ""]
    if tests is not None:
        lines += ["## GPU numerics checks (`stepgrpo_fast.gpu.numerics`, TRITON_INTERPRET=0)",
                  "", f"{'PASS' if tests['ok'] else 'FAIL'}: {tests['summary']}", ""]
        failed = [r for r in tests.get("checks", []) if not r["ok"]]
        lines += [f"- FAIL `{r['name']}`: {(r['error'] or '').splitlines()[0]}" for r in failed]
        lines += [""] if failed else []
    if rows is not None:
        peaks = ", ".join(f"{k} {v:.0f}" for k, v in PEAK_BF16_TFLOPS)
        lines += ["## Forward + backward timings", "",
                  ("TFLOP/s count the GEMM FLOPs 6NHV (logits 2NHV + dH 2NHV + dW 2NHV) for every "
                  "provider; `executed` counts what `ours` runs: 8NHV for linear_logprobs (it "
                  "recomputes the logits in backward), 6NHV for linear_grpo_loss (gradients "
                  f"formed in the forward). % of the dense bf16 peak ({peaks} TFLOP/s). Cases and "
                  "providers: the benchmark harness's (`stepgrpo bench`)."), "",
                  markdown_table(rows), ""]
    (out / "report.md").write_text("\n".join(lines))


def run(args) -> int:
    import torch

    if not torch.cuda.is_available():
        print(no_cuda_message(torch), file=sys.stderr)
        return NO_CUDA_EXIT
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = device_info(torch)
    print(f"gpu-check on {info['name']} ({info['capability']}), report in {out}", flush=True)
    tests = None if args.skip_tests else run_gpu_checks(out)
    if tests is not None:
        print(f"GPU numerics checks: {'PASS' if tests['ok'] else 'FAIL'}: {tests['summary']}",
              flush=True)
        write_report(out, info, tests, None)
    rows = None
    if not args.skip_bench:
        from ..bench.tflops import run_benchmarks

        rows = run_benchmarks("cuda", tuple(args.tokens), tuple(args.hidden), args.vocab,
                              torch.bfloat16, warmup=args.warmup, repeats=args.repeats,
                              log=lambda line: print(line, flush=True),
                              on_row=lambda so_far: write_report(out, info, tests, so_far))
    write_report(out, info, tests, rows)
    print(f"wrote {out / 'report.md'} and {out / 'report.json'}")
    bad_bench = any(r["error"] and r["provider"] == "ours" for r in rows or [])
    return 1 if (tests is not None and not tests["ok"]) or bad_bench else 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m stepgrpo_fast.gpu.check",
                                      description=__doc__.splitlines()[0])
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
