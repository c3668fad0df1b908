"""One H100 run that validates the LM-head ops: ``scripts/gpu_validate.sh`` runs this module.

    python -m stepgrpo_fast.gpu.validate [--out DIR] [--budget-s 480] [--dry-run]

1. numerics: the gpu-check list (numerics.GPU_CHECKS: both ops vs float64, bf16 / fp16 / fp32 /
   TF32) in a subprocess with TRITON_INTERPRET=0;
2. determinism: two calls of each op at a mid shape give bit-identical gradients;
3. timings: forward and backward (mode "fwd" and "bwd", timing.time_fn p50) of both ops at
   SHAPES, providers ours / naive / liger / cce (when installed) / bare_matmuls, plus the peak
   memory of one forward + backward (torch.cuda.max_memory_allocated above the start);
4. the performance model's prediction (gpu/perf_model.py) next to the measured ratio of ours to
   the bare GEMMs;
5. DIR/validate.json and DIR/validate.md (rewritten after every row, so a run cut short still
   leaves a report).
Rows past ``--budget-s`` (default 480 s: 8 minutes) are skipped and listed as skipped. With
``--dry-run`` nothing touches a GPU: the plan (checks, shapes, providers, model predictions) is
printed -- what CI runs. Exit: 0 ok, 1 a check / determinism / "ours" row failed, 2 no CUDA.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SHAPES = ((4096, 3584, 151_936), (8192, 4096, 151_936), (16384, 4096, 151_936))
PROVIDERS = ("ours", "naive", "liger", "cce", "bare_matmuls")
MODES = ("fwd", "bwd")
OPS = ("linear_logprobs", "linear_grpo_loss")
NO_CUDA_EXIT = 2


def plan(shapes=SHAPES, providers=PROVIDERS) -> dict:
    """What a run does, without running it (the --dry-run output)."""
    from . import perf_model
    from .numerics import GPU_CHECKS

    model = [{**r, "shape": [n, h, v]} for n, h, v in shapes
             for r in perf_model.model_table("h100", n, h, v)]
    rows = [{"op": op, "shape": [n, h, v], "provider": p, "modes": list(MODES)}
            for n, h, v in shapes for op in OPS for p in providers
            if not (p == "cce" and op == "linear_grpo_loss")]
    return {"numerics_checks": [c.name for c in GPU_CHECKS], "determinism": list(OPS),
            "timing_rows": rows, "model_h100": model}


def render_plan(p: dict) -> str:
    from . import perf_model

    lines = [f"gpu_validate plan: {len(p['numerics_checks'])} numerics checks (bf16, fp16, fp32, "
             f"TF32; both ops vs float64), bit-identical gradients of {', '.join(p['determinism'])},",
             f"{len(p['timing_rows'])} timing rows x modes {'/'.join(MODES)} (+ peak memory):"]
    for r in p["timing_rows"]:
        lines.append(f"  {r['op']:17s} N={r['shape'][0]:<6d} H={r['shape'][1]:<5d} "
                     f"V={r['shape'][2]} {r['provider']}")
    lines += ["", "Performance model (H100 SXM, bf16):", perf_model.render(p["model_h100"]),
              "Assumptions: " + perf_model.describe_assumptions()]
    return "\n".join(lines)


def _bit_identical(op: str, device: str) -> dict:
    import torch

    from ..bench.linear_ops import LinearCase, build_provider, make_inputs

    case = LinearCase(op, 2048, 2048, 151_936, torch.bfloat16, device)
    grads = []
    for _ in range(2):
        x = make_inputs(case, seed=7)
        p = build_provider("ours", case, x)
        p.backward(p.forward())
        grads.append((x["hidden"].grad.clone(), x["weight"].grad.clone()))
        del x, p
    same = all(torch.equal(a, b) for a, b in zip(*grads))
    return {"op": op, "ok": same}


def _time_row(op, provider, n, h, v, device, warmup, repeats) -> dict:
    import torch

    from ..bench.linear_ops import LinearCase, build_provider, make_inputs, mode_call
    from ..bench.timing import peak_memory_bytes, time_fn

    row = {"op": op, "provider": provider, "N": n, "H": h, "V": v, "error": None}
    try:
        case = LinearCase(op, n, h, v, torch.bfloat16, device)
        p = build_provider(provider, case, make_inputs(case))
        fn, setup = mode_call(p, "full")
        row["peak_mem_gb"] = peak_memory_bytes(fn, device, setup=setup) / 2**30
        for mode in MODES:
            fn, setup = mode_call(p, mode)
            t = time_fn(fn, setup=setup, warmup=warmup, repeats=repeats, device=device)
            row[f"{mode}_ms"] = t["p50_s"] * 1e3
        if p.grads_in_forward:
            row["note"] = "gradients formed in forward"
    except Exception as exc:  # noqa: BLE001 - a provider that cannot run is a result
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    torch.cuda.empty_cache()
    return row


def render_report(report: dict) -> str:
    lines = ["# gpu_validate", "", f"Device: {report.get('device')}", ""]
    num = report.get("numerics")
    if num:
        lines += [f"## Numerics: {'PASS' if num['ok'] else 'FAIL'} ({num['summary']})", ""]
        lines += [f"- FAIL `{name}`" for name in num.get("failed", [])]
    det = report.get("determinism", [])
    if det:
        lines += ["## Bit-identical gradients (two calls)", ""]
        lines += [f"- {d['op']}: {'yes' if d['ok'] else '**NO**'}" for d in det] + [""]
    lines += ["## Forward / backward times (bf16, p50 ms), peak memory", "",
              "| op | N | H | V | provider | fwd (ms) | bwd (ms) | fwd+bwd (ms) | x bare | "
              "peak mem (GB) | note |", "|" + "---|" * 11]
    bare = {(r["op"], r["N"]): r for r in report["rows"] if r["provider"] == "bare_matmuls"
            and not r["error"]}
    for r in report["rows"]:
        if r["error"]:
            lines.append(f"| {r['op']} | {r['N']} | {r['H']} | {r['V']} | {r['provider']} | - | - "
                         f"| - | - | - | {r['error']} |")
            continue
        total = r["fwd_ms"] + r["bwd_ms"]
        b = bare.get((r["op"], r["N"]))
        ratio = f"{total / (b['fwd_ms'] + b['bwd_ms']):.2f}" if b else "-"
        lines.append(f"| {r['op']} | {r['N']} | {r['H']} | {r['V']} | {r['provider']} | "
                     f"{r['fwd_ms']:.2f} | {r['bwd_ms']:.2f} | {total:.2f} | {ratio} | "
                     f"{r['peak_mem_gb']:.2f} | {r.get('note', '')} |")
    if report.get("skipped"):
        lines += ["", f"Skipped (time budget): {len(report['skipped'])} rows: "
                  + "; ".join(report["skipped"])]
    from . import perf_model

    lines += ["", "## Model (H100 SXM) vs measured", "", perf_model.render(report["model"])]
    return "\n".join(lines) + "\n"


def run(args) -> int:
    if args.dry_run:
        print(render_plan(plan()))
        return 0
    import torch

    if not torch.cuda.is_available():
        print("gpu_validate: no CUDA device is present; nothing was run (use --dry-run).",
              file=sys.stderr)
        return NO_CUDA_EXIT
    from . import check as gpu_check

    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = gpu_check.device_info(torch)
    p = plan()
    report = {"device": f"{info['name']} ({info['capability']}), torch {info['torch']}, "
                        f"triton {info['triton']}", "info": info, "rows": [], "skipped": [],
              "model": p["model_h100"], "determinism": []}

    def save():
        (out / "validate.json").write_text(json.dumps(report, indent=1, default=str))
        (out / "validate.md").write_text(render_report(report))

    report["numerics"] = None if args.skip_numerics else gpu_check.run_gpu_checks(out)
    save()
    report["determinism"] = [_bit_identical(op, "cuda") for op in OPS]
    save()
    for r in p["timing_rows"]:
        n, h, v = r["shape"]
        if time.perf_counter() - start > args.budget_s:
            report["skipped"].append(f"{r['op']} N={n} {r['provider']}")
            continue
        row = _time_row(r["op"], r["provider"], n, h, v, "cuda", args.warmup, args.repeats)
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
        save()
    report["seconds"] = time.perf_counter() - start
    save()
    print(f"wrote {out / 'validate.md'} and {out / 'validate.json'} "
          f"({report['seconds']:.0f} s)")
    failed = ((report["numerics"] is not None and not report["numerics"]["ok"])
              or not all(d["ok"] for d in report["determinism"])
              or any(r["error"] for r in report["rows"] if r["provider"] == "ours"))
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stepgrpo_fast.gpu.validate",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_validate")
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="skip timing rows after this many seconds (default 480)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-numerics", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; touch no GPU")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
