"""Ahead-of-time compile checks of every Triton kernel configuration, for sm_80 and sm_90, on a
CPU machine (stepgrpo_fast.gpu.aot): every launch the dispatcher or an autotuner can make
compiles with no register spills (cuobjdump LOCAL 0 and STACK 0), within the architecture's
shared memory (163 KB sm_80, 227 KB sm_90) -- autotune tiles included -- with tensor cores
for 16-bit / TF32 inputs, and with no atomic instruction in its PTX.

The "ci" tier (see stepgrpo_fast/gpu/launches.py: everything but the N % 16 == 0
specialisations, which `stepgrpo kernel-table --strict` checks) is compiled in ONE subprocess
with TRITON_INTERPRET unset (conftest turns the interpreter on for this process), 2 workers,
using Triton's on-disk cache (TRITON_CACHE_DIR if set). The tile lists themselves live in
ops/tiles.py (FWD_TILES, the fused forward) and ops/head_rows.py (ROW_TILES, the row passes).
"""
from __future__ import annotations

import pytest

from stepgrpo_fast.gpu import aot

HEAVY = ("_fwd_kernel",)                       # the tl.dot kernels (the GEMMs are cuBLAS)
ROW_PASSES = ("_row_stats_kernel", "_row_grad_kernel")


def test_every_configuration_compiles_without_spills_and_fits(report):
    """aot.problems: compiles, no spills, shared memory within the limit, tensor cores."""
    found = aot.problems(report)
    assert not found, f"{len(found)} problem(s):\n" + "\n".join(found)
    assert {r["arch"] for r in report["results"]} == {80, 90}
    for r in report["results"]:
        name = aot.binary_key(r)
        assert (r["local"], r["stack"]) == (0, 0), f"{name}: LOCAL {r['local']} B, STACK {r['stack']} B"
        assert r["shared"] <= aot.SHARED_LIMIT[r["arch"]] and r["fits"], f"{name}: {r['shared']} B"
        assert r["reg"] <= 255 and r["num_warps"] in (4, 8), r


def test_tensor_core_instructions_match_the_architecture(report):
    for r in report["results"]:
        if r["kernel"] in HEAVY and r["dtype"] in ("bf16", "fp16"):
            if r["arch"] == 90:
                assert r["wgmma"], f"{r['kernel']} {r['dtype']} {r['config']}: no wgmma on sm_90"
            else:
                assert r["mma_sync"] and not r["wgmma"], r
        if r["kernel"] in HEAVY and r["dtype"] == "fp32":       # IEEE fp32: no tensor cores
            assert not r["tensor_cores"], r


def test_hidden_sizes_and_temperatures_share_one_binary(report):
    """H in {896, 1536, 3584, 4096} are all multiples of 16 and 1/T is an unspecialised fp32,
    so the 4 x 2 matrix rows of one configuration map onto a single compile."""
    from stepgrpo_fast.gpu.launches import HIDDEN_SIZES, TEMPERATURES

    for r in report["results"]:
        if r["kernel"] in HEAVY:
            assert r["variants"] % (len(HIDDEN_SIZES) * len(TEMPERATURES)) == 0, r
        if r["kernel"] in ROW_PASSES:                 # no H; both temperatures share a binary
            assert r["variants"] % len(TEMPERATURES) == 0, r
    assert report["matrix_rows"] > 4 * report["unique_binaries"]


def test_no_kernel_has_atomics_and_the_gradient_path_is_row_passes(report):
    """Issue #30: no atomic read-modify-write anywhere -- every compiled binary's PTX counts 0
    atom.* / red.* instructions (aot.count_atomics), and the gradient path compiles only row
    passes (no tl.dot: its GEMMs are cuBLAS)."""
    for r in report["results"]:
        assert (r["atomics"], r["fenced_atomics"]) == (0, 0), aot.binary_key(r)
        if r["kernel"] in ROW_PASSES:
            assert not r["matmul"] and not r["wgmma"] and not r["mma_sync"], r
    kernels = {r["kernel"] for r in report["results"]}
    assert set(ROW_PASSES) <= kernels and "_bwd_kernel" not in kernels


ATOMIC_PROBE = """
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from stepgrpo_fast.gpu.aot import count_atomics

@triton.jit
def probe(x_ptr, y_ptr, N, BLOCK: tl.constexpr, RELAXED: tl.constexpr):
    o = tl.arange(0, BLOCK)
    v = tl.load(x_ptr + o, mask=o < N)
    if RELAXED:
        tl.atomic_add(y_ptr + o, v, mask=o < N, sem="relaxed")
    else:
        tl.atomic_add(y_ptr + o, v, mask=o < N)
        tl.atomic_xchg(y_ptr + BLOCK + o, v, mask=o < N)

for relaxed in (0, 1):
    src = ASTSource(fn=probe, signature={"x_ptr": "*fp32", "y_ptr": "*fp32", "N": "i32",
                    "BLOCK": "constexpr", "RELAXED": "constexpr"},
                    constexprs={"BLOCK": 128, "RELAXED": relaxed})
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm["ptx"]
    print(relaxed, *count_atomics(ptx))
"""


def test_atomics_are_counted_in_real_ptx(tmp_path):
    """Triton's default atomics (sem="acq_rel") are fenced, relaxed ones are not: compiled for
    sm_90 in a subprocess (TRITON_INTERPRET unset), counted by aot.count_atomics."""
    import os
    import subprocess
    import sys

    path = tmp_path / "probe.py"
    path.write_text(ATOMIC_PROBE)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0", "2", "2", "1", "1", "0"], done.stdout


def test_count_atomics_reads_atom_and_red_with_their_order():
    ptx = ("\t@%p1 atom.global.gpu.acq_rel.add.f32 %r1, [ %rd2 + 0 ], %r2;\n"
           "\tred.global.gpu.relaxed.add.f32 [ %rd2 + 0 ], %r1;\n"
           "\t@!%p3 atom.global.release.gpu.max.s32 %r4, [%rd5], %r6;\n"
           "\tld.global.b32 %r7, [%rd2]; // atom.global in a comment\n"
           "\t.loc 1 5 0 // red.\n")
    assert aot.count_atomics(ptx) == (3, 2)
    assert aot.count_atomics("mov.u32 %r1, 0;") == (0, 0)


def test_parse_resource_usage():
    text = ("Resource usage:\n Common:\n  GLOBAL:0\n Function _fwd_kernel:\n"
            "  REG:255 STACK:8 SHARED:1024 LOCAL:16 CONSTANT[0]:640 TEXTURE:0 SURFACE:0 SAMPLER:0\n")
    usage = aot.parse_resource_usage(text)
    assert (usage["REG"], usage["STACK"], usage["SHARED"], usage["LOCAL"]) == (255, 8, 1024, 16)
    assert usage["CONSTANT[0]"] == 640
    with pytest.raises(ValueError, match="REG"):
        aot.parse_resource_usage("cuobjdump fatal : Could not open input file")


def test_problems_flags_spills_shared_and_missing_tensor_cores():
    base = {"module": "m", "kernel": "_k", "arch": 90, "dtype": "bf16", "config": "c", "flags": {},
            "tags": [], "matmul": True, "autotuned": False, "error": None, "local": 0, "stack": 0,
            "shared": 1000, "shared_limit": 232448, "fits": True, "tensor_cores": True,
            "atomics": 0, "fenced_atomics": 0}
    assert aot.problems({"results": [base]}) == []
    bad = [{**base, "local": 8}, {**base, "shared": 300000, "fits": False},
           {**base, "tensor_cores": False}, {**base, "error": "PTXASError: boom"}]
    found = aot.problems({"results": bad})
    assert [("spills" in f, "shared memory" in f, "wgmma" in f, "did not compile" in f)
            for f in found] == [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)]
    tuned = {**base, "autotuned": True, "fits": False, "shared": 300000}   # no skipping misfits
    assert ["shared memory" in f for f in aot.problems({"results": [tuned]})] == [True]
    assert aot.problems({"results": [{**base, "stack": 8}]}) == [
        f"{aot.binary_key(base)}: spills (LOCAL 0 B, STACK 8 B)"]
    # atomics in a tensor-core kernel fail; in a kernel without tl.dot they are allowed
    assert aot.problems({"results": [{**base, "atomics": 3, "fenced_atomics": 2}]}) == [
        f"{aot.binary_key(base)}: 3 atomic instruction(s) in a tensor-core kernel (2 fenced)"]
    assert aot.problems({"results": [{**base, "matmul": False, "atomics": 3}]}) == []
    old = {k: v for k, v in base.items() if k not in ("atomics", "fenced_atomics")}
    assert ["no atomics count" in f for f in aot.problems({"results": [old]})] == [True]


def test_build_jobs_refuses_the_interpreter():
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        aot.build_jobs()
