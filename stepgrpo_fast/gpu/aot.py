"""Ahead-of-time compilation of every Triton kernel configuration for sm_80 and sm_90, no GPU.

    python -m stepgrpo_fast.gpu.aot --out results.json [--arch 80 90] [--workers 2]
                                    [--cache-dir DIR] [--tier ci|full]
                                    [--from-json report.json]

1. Registry: launches.all_launches() lists every launch the dispatcher or an autotuner can make
   (see launches.py for the matrix and what is held fixed).
2. Binding: each launch goes through Triton's own argument specialiser for a CUDA target
   (create_function_from_signature + JITFunction._pack_args, as a real launch does), giving the
   exact (signature, constexprs, divisibility attrs, options) the GPU would compile.
3. Deduplication by binary identity: launches with the same bound specialisation compile to the
   same binary (Triton's cache key is built from the same fields), so each is compiled once and
   counts its matrix rows in ``variants``. E.g. the four H sizes and the two temperatures of one
   configuration are one binary.
4. Compile for GPUTarget("cuda", arch, 32) in a process pool (2 workers; Triton's on-disk cache,
   TRITON_CACHE_DIR, makes re-runs fast), then read the cubin with Triton's bundled cuobjdump
   (REG, LOCAL and STACK = spills, static SHARED), the metadata (dynamic shared bytes, warps,
   stages) and the PTX (tensor cores: "wgmma.mma_async" on sm_90, "mma.sync.aligned" on sm_80;
   atomics: atom.* / red.* instructions, fenced = with an acquire / release order).

Must run with TRITON_INTERPRET unset (interpreted kernels cannot be compiled); tests run it in a
subprocess (``run_subprocess``) since tests/conftest.py turns the interpreter on.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

from ..utils import triton_interpret

ARCHS = (80, 90)
# Max shared memory per block (opt-in), bytes: A100 163 KB, H100/H200 227 KB.
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
TENSOR_CORE_PTX = {90: "wgmma.mma_async", 80: "mma.sync.aligned"}
HALF_OR_TF32 = ("bf16", "fp16", "fp32-tf32")     # inputs whose tl.dot must use tensor cores


@dataclass
class CompileJob:
    """One unique binary for one architecture (picklable: sent to the workers)."""
    module: str
    kernel: str
    arch: int
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict
    # descriptive fields (not part of the binary identity)
    dtype: str = ""
    config: str = ""
    flags: dict = field(default_factory=dict)
    tags: tuple = ()
    matmul: bool = False
    autotuned: bool = False
    n_configs: int = 1
    variants: int = 0


def bind(launch, arch: int) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) a real launch of ``launch`` would compile for ``arch``."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = getattr(importlib.import_module(launch.module), launch.kernel)
    backend = make_backend(GPUTarget("cuda", arch, 32))
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = {**launch.constexprs, **launch.options}
    bound, specialization, options = binder(*launch.args, **kwargs)
    _, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization,
                                                    options)
    return signature, constexprs, attrs


def _identity(job: CompileJob) -> str:
    def items(d):
        return sorted((repr(k), repr(v)) for k, v in d.items())
    return json.dumps([job.module, job.kernel, job.arch, items(job.signature),
                       items(job.constexprs), items(job.attrs), items(job.options)])


def build_jobs(archs=ARCHS, tier: str = "full", launches=None) -> tuple[list[CompileJob], int]:
    """Unique compile jobs for ``archs`` and the number of (launch, arch) rows they stand for.

    tier: "ci" keeps the launches tagged "ci", "full" all of them (launches.TIERS)."""
    if triton_interpret():
        raise RuntimeError("AOT compilation needs TRITON_INTERPRET unset (kernels are interpreted)")
    from .launches import TIERS, all_launches

    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
    launches = list(all_launches() if launches is None else launches)
    launches = [x for x in launches if tier == "full" or x.tier == "ci"]
    jobs: dict[str, CompileJob] = {}
    rows = 0
    for arch in archs:
        for launch in launches:
            if launch.arch is not None and launch.arch != arch:
                continue                  # tiles of another architecture's list
            rows += 1
            signature, constexprs, attrs = bind(launch, arch)
            job = CompileJob(launch.module, launch.kernel, arch, signature, constexprs, attrs,
                             dict(launch.options), launch.dtype, launch.case["config"],
                             {k: v for k, v in launch.constexprs.items() if not k.startswith("BLOCK")},
                             tuple(launch.tags), launch.matmul, launch.autotuned,
                             launch.n_configs)
            key = _identity(job)
            kept = jobs.setdefault(key, job)
            kept.variants += 1
            if launch.tags and not set(launch.tags) <= set(kept.tags):
                kept.tags = tuple(sorted(set(kept.tags) | set(launch.tags)))
    return list(jobs.values()), rows


# ------------------------------------------------------------------------------- compilation
def cubin_resource_usage(compiled) -> str:
    """``cuobjdump --dump-resource-usage`` of a compiled kernel (REG, LOCAL = spills, SHARED)."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(compiled.asm["cubin"])
        done = subprocess.run([str(tool), "--dump-resource-usage", str(path)],
                              capture_output=True, text=True, check=True)
    return done.stdout


def parse_resource_usage(text: str) -> dict:
    """cuobjdump resource lines -> {"REG": int, "STACK": int, "SHARED": int, "LOCAL": int, ...}.

    Raises ValueError when no "REG:" line is present (not a resource dump)."""
    lines = [line for line in text.splitlines() if "REG:" in line]
    if not lines:
        raise ValueError(f"no 'REG:' line in cuobjdump output: {text[:300]!r}")
    fields = re.findall(r"([A-Z_]+(?:\[\d+\])?):(\d+)", lines[0])
    return {name: int(value) for name, value in fields}


ATOMIC_PTX = re.compile(r"^\s*(?:@!?%p\d+\s+)?(atom|red)\.([\w.]+)", re.MULTILINE)
FENCED_ORDERS = ("acq_rel", "acquire", "release", "sc")


def count_atomics(ptx: str) -> tuple[int, int]:
    """(atomic instructions, fenced ones) in a PTX listing: ``atom.*`` / ``red.*`` instructions
    (predicated or not), and those of them carrying an acquire / release / acq_rel / sc memory
    order (Triton's default ``sem="acq_rel"`` emits e.g. ``atom.global.gpu.acq_rel.add.f32``;
    ``sem="relaxed"`` a ``red.global.gpu.relaxed.add.f32``)."""
    found = ATOMIC_PTX.findall(ptx)
    fenced = sum(any(order in qual.split(".") for order in FENCED_ORDERS) for _, qual in found)
    return len(found), fenced


def compile_job(job: CompileJob) -> dict:
    """Compile one job and measure it; never raises (errors land in the "error" field)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    out = {**asdict(job), "error": None}
    for name in ("signature", "constexprs", "attrs"):
        out.pop(name)
    start = time.perf_counter()
    try:
        fn = getattr(importlib.import_module(job.module), job.kernel)
        src = ASTSource(fn=fn, signature=job.signature, constexprs=job.constexprs,
                        attrs=job.attrs)
        kernel = triton.compile(src, target=GPUTarget("cuda", job.arch, 32), options=job.options)
        usage = parse_resource_usage(cubin_resource_usage(kernel))
    except Exception as exc:  # noqa: BLE001 - a failed compile is a result to report
        out.update(error=f"{type(exc).__name__}: {str(exc)[-1500:]}",
                   compile_s=time.perf_counter() - start)
        return out
    ptx = kernel.asm["ptx"]
    shared = int(kernel.metadata.shared) + usage.get("SHARED", 0)
    out.update(
        compile_s=time.perf_counter() - start,
        reg=usage["REG"], local=usage.get("LOCAL", 0), stack=usage.get("STACK", 0),
        static_shared=usage.get("SHARED", 0), dynamic_shared=int(kernel.metadata.shared),
        shared=shared, shared_limit=SHARED_LIMIT[job.arch], fits=shared <= SHARED_LIMIT[job.arch],
        num_warps=int(kernel.metadata.num_warps), num_stages=int(kernel.metadata.num_stages),
        wgmma="wgmma.mma_async" in ptx, mma_sync="mma.sync.aligned" in ptx,
        tensor_cores=TENSOR_CORE_PTX[job.arch] in ptx)
    out["atomics"], out["fenced_atomics"] = count_atomics(ptx)
    return out


def compile_all(jobs: list[CompileJob], workers: int = 2) -> list[dict]:
    """Compile ``jobs`` in a fork-based process pool (1 worker: in this process)."""
    order = sorted(range(len(jobs)), key=lambda i: not jobs[i].matmul)   # heavy jobs first
    if workers <= 1:
        results = {i: compile_job(jobs[i]) for i in order}
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            results = dict(zip(order, pool.map(compile_job, [jobs[i] for i in order])))
    return [results[i] for i in range(len(jobs))]


def compile_registry(archs=ARCHS, workers: int = 2, cache_dir: str | None = None,
                     tier: str = "full") -> dict:
    """Build, dedupe and compile the whole registry; returns the JSON-ready report."""
    import triton

    if cache_dir:
        os.environ["TRITON_CACHE_DIR"] = str(cache_dir)
    start = time.perf_counter()
    jobs, rows = build_jobs(archs, tier)
    bound_s = time.perf_counter() - start
    results = compile_all(jobs, workers)
    return {"triton": triton.__version__, "archs": list(archs), "tier": tier, "matrix_rows": rows,
            "unique_binaries": len(jobs), "bind_s": bound_s,
            "total_s": time.perf_counter() - start, "workers": workers,
            "cache_dir": os.environ.get("TRITON_CACHE_DIR", "~/.triton/cache (default)"),
            "results": results}


# ------------------------------------------------------------------------------------ checks
def binary_key(r: dict) -> str:
    """A readable identity of one result row (kernel, arch, dtype, tiles, flags, tags)."""
    flags = " ".join(f"{k}={int(v) if isinstance(v, bool) else v}"
                     for k, v in sorted(r["flags"].items()))
    tags = (" " + ",".join(r["tags"])) if r["tags"] else ""
    return f"{r['kernel']} sm_{r['arch']} {r['dtype']} {r['config']} [{flags}]{tags}"


def spill_bytes(r: dict) -> int:
    """Per-thread spill bytes: cuobjdump's LOCAL plus STACK. Triton kernels make no calls and
    hold no local arrays, so a stack frame is spilled registers (checked: STACK > 0 exactly
    when the SASS has STL / LDL instructions); LOCAL stays 0 even then."""
    return int(r["local"]) + int(r["stack"])


def problems(report: dict) -> list[str]:
    """Every violation, per compiled binary, of: it compiles; no register spills (cuobjdump LOCAL
    0 and STACK 0); shared memory within the architecture's limit -- autotune tiles included,
    so no GPU ever has to skip one; tl.dot-heavy kernels use tensor cores for bf16 / fp16 / TF32
    inputs; a tensor-core (tl.dot) kernel has no atomic instruction in its PTX (a report
    without the atomics count -- made before it existed -- is flagged too)."""
    out = []
    for r in report["results"]:
        name = binary_key(r)
        if r["error"]:
            out.append(f"{name}: did not compile: {r['error'][:300]}")
            continue
        if spill_bytes(r):
            out.append(f"{name}: spills (LOCAL {r['local']} B, STACK {r['stack']} B)")
        if not r["fits"]:
            out.append(f"{name}: shared memory {r['shared']} B > {r['shared_limit']} B")
        if r["matmul"] and r["dtype"] in HALF_OR_TF32 and not r["tensor_cores"]:
            out.append(f"{name}: no {TENSOR_CORE_PTX[r['arch']]} in the PTX")
        if r["matmul"] and r.get("atomics") is None:
            out.append(f"{name}: no atomics count in the report (rebuild it)")
        elif r["matmul"] and r["atomics"]:
            out.append(f"{name}: {r['atomics']} atomic instruction(s) in a tensor-core kernel "
                       f"({r.get('fenced_atomics', '?')} fenced)")
    return out


def run_subprocess(out_json: str | Path, archs=ARCHS, workers: int = 2,
                   cache_dir: str | None = None, tier: str = "full", timeout: float = 3600) -> dict:
    """Run this module in a fresh interpreter with TRITON_INTERPRET unset; returns the report."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    cmd = [sys.executable, "-m", "stepgrpo_fast.gpu.aot", "--out", str(out_json),
           "--workers", str(workers), "--tier", tier, "--arch", *map(str, archs)]
    if cache_dir:
        cmd += ["--cache-dir", str(cache_dir)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"AOT compile subprocess failed ({done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return json.loads(Path(out_json).read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stepgrpo_fast.gpu.aot",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON report path")
    parser.add_argument("--arch", type=int, nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache-dir", default=None, help="TRITON_CACHE_DIR for the compiles")
    parser.add_argument("--tier", default="full", choices=("ci", "full"))
    parser.add_argument("--from-json", default=None, help="reuse a report instead of compiling")
    args = parser.parse_args(argv)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
    else:
        report = compile_registry(tuple(args.arch), args.workers, args.cache_dir, args.tier)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    found = problems(report)
    print(f"{report['unique_binaries']} binaries for {report['matrix_rows']} launch rows, "
          f"{report['total_s']:.1f} s, {len(found)} problem(s)")
    for line in found:
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
