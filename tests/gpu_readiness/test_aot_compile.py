"""Ahead-of-time compile checks of every Triton kernel configuration, for sm_80 and sm_90, on a
CPU machine (stepgrpo_fast.gpu.aot): compiles, LOCAL 0, spills, shared memory within the
architecture's limit, tensor cores for 16-bit / TF32 inputs.

The "ci" tier (see stepgrpo_fast/gpu/launches.py) is compiled in ONE subprocess with
TRITON_INTERPRET unset (conftest turns the interpreter on for this process), 2 workers, using
Triton's on-disk cache (TRITON_CACHE_DIR if set). `stepgrpo kernel-table` compiles the full tier.

Spills: cuobjdump's LOCAL is 0 for every binary, but many configurations spill registers to the
stack (STACK > 0, with STL / LDL in the SASS): fp32 without TF32 everywhere, and the larger
autotune tiles in bf16 / fp16. Those are recorded in spill_baseline.json, a ratchet: a new spill,
a bigger one, or a listed binary that stopped spilling fails the test. Regenerate it, after
fixing configurations, with
    python -m stepgrpo_fast.gpu.aot --tier ci --out /tmp/aot.json \
        --write-spill-baseline tests/gpu_readiness/spill_baseline.json
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from stepgrpo_fast.gpu import aot
from stepgrpo_fast.gpu.kernel_table import render

HEAVY = ("_fwd_kernel", "_bwd_kernel", "_lse_partial_kernel", "_grad_tile_kernel")
SPILL_BASELINE = Path(__file__).with_name("spill_baseline.json")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    pytest.importorskip("triton")
    out = tmp_path_factory.mktemp("aot") / "report.json"
    return aot.run_subprocess(out, tier="ci", workers=2)


def test_every_configuration_compiles_fits_and_uses_tensor_cores(report):
    """aot.problems: compiles, shared memory, tensor cores, spills beyond the baseline."""
    known = json.loads(SPILL_BASELINE.read_text())
    found = aot.problems(report, known_spills=known)
    assert not found, "\n".join(found)
    assert {r["arch"] for r in report["results"]} == {80, 90}
    for r in report["results"]:
        assert r["local"] == 0, f"{aot.binary_key(r)}: LOCAL {r['local']} B"
        assert r["reg"] <= 255 and r["num_warps"] in (4, 8), r


def test_spill_baseline_lists_only_compiled_binaries(report):
    known = json.loads(SPILL_BASELINE.read_text())
    compiled = {aot.binary_key(r) for r in report["results"]}
    stale = sorted(set(known) - compiled)
    assert not stale, f"baseline entries for binaries the registry no longer builds: {stale}"
    assert all(isinstance(v, int) and v > 0 for v in known.values())


def test_tensor_core_instructions_match_the_architecture(report):
    for r in report["results"]:
        if r["kernel"] in HEAVY and r["dtype"] in ("bf16", "fp16"):
            if r["arch"] == 90:
                assert r["wgmma"], f"{r['kernel']} {r['dtype']} {r['config']}: no wgmma on sm_90"
            else:
                assert r["mma_sync"] and not r["wgmma"], r
        if r["kernel"] in HEAVY and r["dtype"] == "fp32":       # IEEE fp32: no tensor cores
            assert not r["tensor_cores"], r


def test_autotuned_configs_that_do_not_fit_leave_a_fitting_one(report):
    """The autotuner drops configs that raise OutOfResources; every launch keeps one that fits
    (checked where the tier compiled all of the launch's configs)."""
    groups = defaultdict(list)
    for r in report["results"]:
        if r["autotuned"]:
            groups[(r["kernel"], r["arch"], r["dtype"], json.dumps(r["flags"], sort_keys=True))].append(r)
    complete = {k: rows for k, rows in groups.items() if len(rows) == rows[0]["n_configs"]}
    assert len(complete) == 2 * 2 * 3                   # fwd/bwd x sm_80/90 x bf16/fp16/tf32
    for key, rows in complete.items():
        assert any(r["fits"] for r in rows), key
    fixed = [r for r in report["results"] if not r["autotuned"]]
    assert fixed and all(r["fits"] for r in fixed)


def test_registry_covers_every_kernel_dtype_and_autotune_config(report):
    import stepgrpo_fast.ops.grpo_loss as grpo_ops
    import stepgrpo_fast.ops.linear_grpo_loss as lin_grpo_ops
    import stepgrpo_fast.ops.linear_logprobs as lp_ops

    kernels = {name for mod in (lp_ops, lin_grpo_ops, grpo_ops) for name in vars(mod)
               if name.startswith("_") and name.endswith("_kernel")}
    seen = {r["kernel"] for r in report["results"]}
    assert kernels == seen, f"kernels without a registry entry: {sorted(kernels - seen)}"
    n_fwd, n_bwd = len(lp_ops._fwd_configs()), len(lp_ops._bwd_configs())
    for arch in (80, 90):
        for kernel, n_configs in (("_fwd_kernel", n_fwd), ("_bwd_kernel", n_bwd)):
            rows = [r for r in report["results"] if r["kernel"] == kernel and r["arch"] == arch]
            for dtype in ("bf16", "fp16", "fp32", "fp32-tf32"):
                configs = {r["config"] for r in rows if r["dtype"] == dtype}
                want = 1 if dtype == "fp32" else n_configs       # fp32 IEEE: default tiles in CI
                assert len(configs) == want, (kernel, arch, dtype, configs)
                flags = {json.dumps(r["flags"], sort_keys=True) for r in rows if r["dtype"] == dtype}
                assert len(flags) == 4, (kernel, dtype, flags)      # bias x entropy
        for kernel in ("_lse_partial_kernel", "_grad_tile_kernel"):
            rows = {(r["dtype"], r["flags"]["HAS_BIAS"]) for r in report["results"]
                    if r["kernel"] == kernel and r["arch"] == arch}
            assert rows == {(d, b) for d in ("bf16", "fp16", "fp32") for b in (False, True)}


def test_hidden_sizes_and_temperatures_share_one_binary(report):
    """H in {896, 1536, 3584, 4096} are all multiples of 16 and 1/T is an unspecialised fp32,
    so the 4 x 2 matrix rows of one configuration map onto a single compile."""
    from stepgrpo_fast.gpu.launches import HIDDEN_SIZES, TEMPERATURES

    for r in report["results"]:
        if r["kernel"] in HEAVY:
            assert r["variants"] % (len(HIDDEN_SIZES) * len(TEMPERATURES)) == 0, r
    assert report["matrix_rows"] > 4 * report["unique_binaries"]


def test_kernel_table_renders_every_kernel_and_arch(report, tmp_path):
    text = render(report)
    for kernel in {r["kernel"] for r in report["results"]}:
        for arch in (80, 90):
            assert f"::{kernel}` on sm_{arch}" in text
    assert "| dtype | tiles w(arps) s(tages) | binaries | REG |" in text
    assert text.count("\n| bf16 |") >= 2 * 6 * 2                    # fwd/bwd x 6 configs x 2 archs
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    done = subprocess.run([sys.executable, "-m", "stepgrpo_fast.cli", "kernel-table", "--from-json",
                           str(path), "--full"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| dtype | tiles w(arps) s(tages) | flags | REG |" in done.stdout
    assert done.stdout.count("\n| ") > len(report["results"])       # one row per binary + heads


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
            "shared": 1000, "shared_limit": 232448, "fits": True, "tensor_cores": True}
    assert aot.problems({"results": [base]}) == []
    bad = [{**base, "local": 8}, {**base, "shared": 300000, "fits": False},
           {**base, "tensor_cores": False}, {**base, "error": "PTXASError: boom"}]
    found = aot.problems({"results": bad})
    assert [("spills" in f, "shared memory" in f, "wgmma" in f, "did not compile" in f)
            for f in found] == [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)]
    tuned = [{**base, "autotuned": True, "fits": False, "shared": 300000}]
    assert aot.problems({"results": tuned}) == [aot.problems({"results": tuned})[0]]
    assert "no config fits" in aot.problems({"results": tuned})[0]
    assert aot.problems({"results": tuned + [{**tuned[0], "config": "d", "fits": True}]}) == []


def test_build_jobs_refuses_the_interpreter():
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        aot.build_jobs()
