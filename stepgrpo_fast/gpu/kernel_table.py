"""`stepgrpo kernel-table`: compile every Triton kernel configuration for sm_80 / sm_90 (no GPU
needed) and print a markdown table per kernel and architecture: registers, spills, shared
memory, warps, tensor cores.

    stepgrpo kernel-table [--out report.json] [--full] [--arch 80 90] [--workers 2]
                          [--cache-dir DIR] [--tier full|ci] [--from-json report.json]
                          [--strict]

Rows group the binaries of one (dtype, tiles, warps, stages) over their flag variants (bias,
entropy, ... -- the "binaries" column counts them) and show the worst case: max registers, max
spill bytes, max shared memory, max atomics; ``--full`` prints one row per binary instead.
Columns ``atomics`` / ``fenced atomics``: atom.* / red.* instructions in the PTX, and those with
an acquire / release memory order (aot.count_atomics; "?" for a report made before they were
counted). Lists every failed check of aot.problems (spills, shared memory, tensor cores, atomics
in a tensor-core kernel) after the tables; exit status 1 for them only with --strict.
Then the performance model of both ops at the GRPO shape (gpu/perf_model.py).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

KERNEL_ORDER = ("_fwd_kernel", "_row_stats_kernel", "_row_grad_kernel", "_grpo_token_kernel",
                "_group_advantages_kernel", "_batch_std_kernel")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, help="also write the JSON report here")
    parser.add_argument("--full", action="store_true", help="one row per binary")
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], choices=[80, 90])
    parser.add_argument("--workers", type=int, default=2, help="compile processes (default 2)")
    parser.add_argument("--cache-dir", default=None,
                        help="TRITON_CACHE_DIR for the compiles (default: Triton's own)")
    parser.add_argument("--tier", default="full", choices=("ci", "full"),
                        help="full (default): the whole launch matrix; ci: the CI subset")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a check fails (spills, shared memory, tensor cores)")
    parser.add_argument("--from-json", default=None,
                        help="render an existing report instead of compiling")


def _kb(nbytes: int) -> str:
    return f"{nbytes / 1024:.1f}"


def _tensor_cores(rows: list[dict]) -> str:
    """yes / no / mixed for tl.dot kernels; "-" for kernels without a matmul."""
    return _yes_no(r["tensor_cores"] for r in rows) if rows[0]["matmul"] else "-"


def _yes_no(values) -> str:
    values = set(values)
    return "yes" if values == {True} else "no" if values == {False} else "mixed"


def _atomics(rows: list[dict], key: str) -> str:
    values = [r.get(key) for r in rows]
    return "?" if any(v is None for v in values) else str(max(values))


def _fits(rows: list[dict]) -> str:
    if all(r["fits"] for r in rows):
        return "yes"
    if all(r["autotuned"] for r in rows):
        return "no: autotuner skips it"
    return "**NO**"


def _flag_text(flags: dict) -> str:
    short = {True: "1", False: "0"}
    return " ".join(f"{k}={short.get(v, v)}" for k, v in flags.items())


def _row(rows: list[dict], full: bool) -> list[str]:
    r0 = rows[0]
    tiles = r0["config"] + (" " + ",".join(r0["tags"]) if r0["tags"] else "")
    cells = [r0["dtype"], tiles]
    cells.append(_flag_text(r0["flags"]) if full else str(len(rows)))
    regs = [r["reg"] for r in rows]
    cells += [str(max(regs)) if full or min(regs) == max(regs) else f"{min(regs)}-{max(regs)}",
              f"{max(r['local'] for r in rows)} / {max(r['stack'] for r in rows)}",
              _kb(max(r["shared"] for r in rows)), str(r0["num_warps"]),
              _tensor_cores(rows), _atomics(rows, "atomics"), _atomics(rows, "fenced_atomics"),
              _fits(rows)]
    return cells


def summary(rows: list[dict]) -> list[str]:
    """One row per (kernel, architecture, dtype): the worst case over its binaries."""
    head = ["kernel", "arch", "dtype", "binaries", "REG", "spills LOCAL / STACK (B)",
            "max shared (KB)", "warps", "tensor cores", "atomics", "fenced atomics", "fits"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    groups = defaultdict(list)
    for r in rows:
        groups[(r["kernel"], r["arch"], r["dtype"])].append(r)
    order = {k: i for i, k in enumerate(KERNEL_ORDER)}
    for (kernel, arch, dtype), rs in sorted(groups.items(), key=lambda kv: (
            order.get(kv[0][0], 99), kv[0][1], kv[0][2])):
        regs = [r["reg"] for r in rs]
        warps = sorted({r["num_warps"] for r in rs})
        misfits = sum(not r["fits"] for r in rs)
        fits = "yes" if not misfits else (f"{len(rs) - misfits}/{len(rs)} (autotuner skips the rest)"
                                          if all(r["autotuned"] for r in rs if not r["fits"])
                                          else f"**{misfits} do not fit**")
        lines.append("| " + " | ".join([
            f"`{kernel}`", f"sm_{arch}", dtype, str(len(rs)),
            f"{min(regs)}-{max(regs)}" if min(regs) != max(regs) else str(max(regs)),
            f"{max(r['local'] for r in rs)} / {max(r['stack'] for r in rs)}",
            _kb(max(r["shared"] for r in rs)), "/".join(map(str, warps)),
            _tensor_cores(rs), _atomics(rs, "atomics"), _atomics(rs, "fenced_atomics"),
            fits]) + " |")
    return lines


def render(report: dict, full: bool = False) -> str:
    """Markdown: a header, then one table per (kernel, architecture)."""
    ok = [r for r in report["results"] if not r["error"]]
    failed = [r for r in report["results"] if r["error"]]
    lines = [(f"Triton {report['triton']}, tier {report.get('tier', 'full')}: "
             f"{report['unique_binaries']} unique binaries for "
             f"{report['matrix_rows']} launch-matrix rows; compiled in {report['total_s']:.0f} s "
             f"with {report['workers']} worker(s). Shared-memory limit: 163 KB (sm_80), "
             "227 KB (sm_90), dynamic + static. Spills: cuobjdump LOCAL / STACK bytes per thread. "
             "Tensor cores: `mma.sync` (sm_80) / `wgmma` (sm_90) in the PTX. Atomics: "
             "`atom.*` / `red.*` instructions in the PTX (fenced: acquire / release order); "
             "--strict fails a tensor-core kernel with any."), ""]
    if failed:
        lines += [f"**{len(failed)} configuration(s) did not compile:**", ""]
        lines += [f"- {r['kernel']} sm_{r['arch']} {r['dtype']} {r['config']}: {r['error'][:200]}"
                  for r in failed] + [""]
    lines += ["#### Summary: worst case per kernel, architecture and dtype", ""]
    lines += summary(ok) + [""]
    by_table = defaultdict(list)
    for r in ok:
        by_table[(r["kernel"], r["arch"])].append(r)
    order = {k: i for i, k in enumerate(KERNEL_ORDER)}
    for (kernel, arch), rows in sorted(by_table.items(),
                                       key=lambda kv: (order.get(kv[0][0], 99), kv[0][1])):
        module = rows[0]["module"].rsplit(".", 1)[-1]
        lines += [f"#### `ops/{module}.py::{kernel}` on sm_{arch}", ""]
        head = ["dtype", "tiles w(arps) s(tages)", "flags" if full else "binaries", "REG",
                "spills LOCAL / STACK (B)", "shared (KB)", "warps", "tensor cores", "atomics",
                "fenced atomics", "fits"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        groups = defaultdict(list)
        for i, r in enumerate(rows):     # --full: one row per binary (its index keeps binaries
            key = (r["dtype"], r["config"], tuple(r["tags"]))   # that differ only in Triton's
            key += (json.dumps(r["flags"], sort_keys=True), i) if full else ()   # int hints apart)
            groups[key].append(r)
        for key in sorted(groups, key=lambda k: (k[0], k[2], k[1])):
            lines.append("| " + " | ".join(_row(groups[key], full)) + " |")
        lines.append("")
    return "\n".join(lines)


def run(args) -> int:
    from ..utils import require_triton, triton_interpret
    from . import aot

    if not args.from_json:
        require_triton("`stepgrpo kernel-table` (compiling the kernels for sm_80 / sm_90)")
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
    elif triton_interpret():          # compile in a fresh interpreter with TRITON_INTERPRET unset
        with tempfile.TemporaryDirectory() as tmp:
            report = aot.run_subprocess(os.path.join(tmp, "report.json"), tuple(args.arch),
                                        args.workers, args.cache_dir, args.tier)
    else:
        os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
        report = aot.compile_registry(tuple(args.arch), args.workers, args.cache_dir, args.tier)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(render(report, args.full))
    found = aot.problems(report)
    print(f"\n{len(found)} check(s) failed" + (":" if found else "."))
    for line in found:
        print("- " + line)
    from . import perf_model

    print("\n#### Performance model at the GRPO shape (gpu/perf_model.py)\n")
    print(perf_model.render(perf_model.model_table("h100") + perf_model.model_table("a100")))
    print("\nAssumptions: " + perf_model.describe_assumptions())
    return 1 if found and args.strict else 0


if __name__ == "__main__":
    import sys

    parser = argparse.ArgumentParser(prog="python -m stepgrpo_fast.gpu.kernel_table",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
