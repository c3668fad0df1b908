"""Ahead-of-time compile checks of every Triton kernel configuration, for sm_80 and sm_90, on a
CPU machine (stepgrpo_fast.gpu.aot): every launch the dispatcher or an autotuner can make
compiles with no register spills (cuobjdump LOCAL 0 and STACK 0), within the architecture's
shared memory (163 KB sm_80, 227 KB sm_90) -- autotune tiles included -- and with tensor cores
for 16-bit / TF32 inputs.

The "ci" tier (see stepgrpo_fast/gpu/launches.py: everything but the N % 16 == 0
specialisations, which `stepgrpo kernel-table --strict` checks) is compiled in ONE subprocess
with TRITON_INTERPRET unset (conftest turns the interpreter on for this process), 2 workers,
using Triton's on-disk cache (TRITON_CACHE_DIR if set). The tile lists themselves live in
ops/tiles.py (FWD_TILES / BWD_TILES for linear_logprobs, GPU_BLOCKS for linear_grpo_loss).
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
import torch

from stepgrpo_fast.gpu import aot
from stepgrpo_fast.gpu.kernel_table import render

HEAVY = ("_fwd_kernel", "_bwd_kernel", "_lse_partial_kernel", "_grad_tile_kernel")
DOT_OF_DTYPE = {"bf16": "16bit", "fp16": "16bit", "fp32-tf32": "tf32", "fp32": "ieee"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    pytest.importorskip("triton")
    out = tmp_path_factory.mktemp("aot") / "report.json"
    return aot.run_subprocess(out, tier="ci", workers=2)


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


def test_registry_covers_every_kernel_dtype_and_autotune_config(report):
    """Each architecture compiles exactly its own autotune lists (whose first tile is also the
    fixed default), at all four flag sets, for every dtype; fp32 without TF32 included."""
    import stepgrpo_fast.ops.grpo_loss as grpo_ops
    import stepgrpo_fast.ops.linear_grpo_loss as lin_grpo_ops
    import stepgrpo_fast.ops.linear_logprobs as lp_ops
    from stepgrpo_fast.gpu.launches import ARCH_OF_CLASS, _config_options, _label

    kernels = {name for mod in (lp_ops, lin_grpo_ops, grpo_ops) for name in vars(mod)
               if name.startswith("_") and name.endswith("_kernel")}
    seen = {r["kernel"] for r in report["results"]}
    assert kernels == seen, f"kernels without a registry entry: {sorted(kernels - seen)}"
    for arch_class, sm in ARCH_OF_CLASS.items():
        for kind in ("fwd", "bwd"):
            for dtype, dot in DOT_OF_DTYPE.items():
                tuner = lp_ops.TUNED_KERNELS[kind, arch_class, dot]
                want = {_label(*_config_options(c)) for c in tuner.configs}
                rows = [r for r in report["results"] if r["kernel"] == f"_{kind}_kernel"
                        and r["arch"] == sm and r["dtype"] == dtype]
                per_config = Counter(r["config"] for r in rows)
                assert set(per_config) == want, (kind, sm, dtype, sorted(per_config), sorted(want))
                assert set(per_config.values()) == {4}, (kind, sm, dtype, per_config)  # bias x ent
                assert all(r["autotuned"] == (len(want) > 1) for r in rows)
        for kernel in ("_lse_partial_kernel", "_grad_tile_kernel"):
            rows = {(r["dtype"], r["flags"]["HAS_BIAS"]) for r in report["results"]
                    if r["kernel"] == kernel and r["arch"] == sm}
            assert rows == {(d, b) for d in ("bf16", "fp16", "fp32") for b in (False, True)}


def test_tile_tables_cover_every_architecture_and_dot_class():
    triton = pytest.importorskip("triton")
    import stepgrpo_fast.ops.linear_grpo_loss as lin_grpo_ops
    import stepgrpo_fast.ops.linear_logprobs as lp_ops

    keys = {(a, d) for a in lp_ops.ARCH_CLASSES for d in lp_ops.DOT_CLASSES}
    for table in (lp_ops.FWD_TILES, lp_ops.BWD_TILES):
        assert set(table) == keys
        for shapes in table.values():
            assert shapes and len(set(shapes)) == len(shapes)
            for bn, bv, bh, warps, stages in shapes:
                assert all(triton.next_power_of_2(b) == b >= 16 for b in (bn, bv, bh))
                assert warps in (4, 8) and 1 <= stages <= 4
    for shapes in lp_ops.FWD_TILES.values():      # the vocab split is a multiple of the alignment
        assert all(lp_ops.AUTOTUNE_V_ALIGN % bv == 0 for _, bv, *_ in shapes)
    for kind, table in (("fwd", lp_ops.FWD_TILES), ("bwd", lp_ops.BWD_TILES)):
        for (arch, dot), shapes in table.items():
            assert lp_ops.gpu_default_blocks(kind, arch, dot) == lp_ops.tile_dict(shapes[0])
            assert len(lp_ops.TUNED_KERNELS[kind, arch, dot].configs) == len(shapes)
    assert [lp_ops.arch_class(c) for c in ((9, 0), (8, 0), (8, 6), (8, 9), (10, 0), (12, 0))] == \
        ["sm90", "sm80", "sm80", "sm80", "sm80", "sm80"]
    assert [lp_ops.dot_class(d, p) for d, p in ((torch.bfloat16, "ieee"), (torch.float16, "tf32"),
                                                (torch.float32, "tf32"), (torch.float32, "ieee"))] == \
        ["16bit", "16bit", "tf32", "ieee"]
    with pytest.raises(ValueError, match="input_precision"):
        lp_ops.dot_class(torch.float32, "bf16x3")
    assert lin_grpo_ops.gpu_blocks(torch.bfloat16) == lin_grpo_ops.GPU_BLOCKS["16bit"]
    assert lin_grpo_ops.gpu_blocks(torch.float32) == lin_grpo_ops.GPU_BLOCKS["ieee"]


class _FakeHidden:
    """What the linear_logprobs launcher reads of ``hidden`` to pick tiles (no CUDA needed)."""

    def __init__(self, dtype):
        self.device, self.dtype, self.shape = torch.device("cuda", 0), dtype, (4097, 1536)


@pytest.mark.parametrize("capability,arch", [((9, 0), "sm90"), ((8, 0), "sm80"), ((10, 0), "sm80")])
@pytest.mark.parametrize("dtype,precision,dot", [(torch.bfloat16, "ieee", "16bit"),
                                                 (torch.float32, "tf32", "tf32"),
                                                 (torch.float32, "ieee", "ieee")])
def test_launcher_picks_the_tiles_of_its_architecture(monkeypatch, capability, arch, dtype,
                                                      precision, dot):
    pytest.importorskip("triton")
    import stepgrpo_fast.ops.linear_logprobs as lp_ops

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    for kind in ("fwd", "bwd"):
        tuned, cfg = lp_ops._tile_options(_FakeHidden(dtype), kind, precision)
        assert tuned is lp_ops.TUNED_KERNELS[kind, arch, dot] and cfg == {}
        tuned, cfg = lp_ops._tile_options(_FakeHidden(dtype), kind, precision, num_warps=4)
        assert tuned is None
        assert cfg == {**lp_ops.gpu_default_blocks(kind, arch, dot), "num_warps": 4}


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
    bf16_tiles = {(r["kernel"], r["arch"], r["config"]) for r in report["results"]
                  if r["dtype"] == "bf16"}
    assert text.count("\n| bf16 |") == len(bf16_tiles)               # one row per tile
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
    tuned = {**base, "autotuned": True, "fits": False, "shared": 300000}   # no skipping misfits
    assert ["shared memory" in f for f in aot.problems({"results": [tuned]})] == [True]
    assert aot.problems({"results": [{**base, "stack": 8}]}) == [
        f"{aot.binary_key(base)}: spills (LOCAL 0 B, STACK 8 B)"]


def test_build_jobs_refuses_the_interpreter():
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        aot.build_jobs()
