"""The launch matrix (stepgrpo_fast.gpu.launches) and the tile tables it reads (ops/tiles.py:
FWD_TILES for the fused forward, ops/head_rows.py:ROW_TILES for the row passes of the gradient
path): the registry holds every kernel at every dtype and autotune configuration of each
architecture, the tables cover every (architecture, dot class), and the launcher picks the
tiles of its architecture. The compiled side of the same launches is test_gpu_aot.py (the
shared ``report`` is conftest.py's).
"""
from __future__ import annotations

from collections import Counter

import pytest
import torch

DOT_OF_DTYPE = {"bf16": "16bit", "fp16": "16bit", "fp32-tf32": "tf32", "fp32": "ieee"}


def test_registry_covers_every_kernel_dtype_and_autotune_config(report):
    """Each architecture compiles exactly its own autotune lists (whose first tile is also the
    fixed default), at all four flag sets, for every dtype; fp32 without TF32 included."""
    import stepgrpo_fast.ops.grpo_loss as grpo_ops
    import stepgrpo_fast.ops.head_rows as row_ops
    import stepgrpo_fast.ops.linear_grpo_loss as lin_grpo_ops
    import stepgrpo_fast.ops.linear_logprobs as lp_ops
    from stepgrpo_fast.gpu.launches import ARCH_OF_CLASS, _config_options, _label

    kernels = {name for mod in (lp_ops, lin_grpo_ops, row_ops, grpo_ops) for name in vars(mod)
               if name.startswith("_") and name.endswith("_kernel")}
    seen = {r["kernel"] for r in report["results"]}
    assert kernels == seen, f"kernels without a registry entry: {sorted(kernels - seen)}"
    for arch_class, sm in ARCH_OF_CLASS.items():
        for kind in ("fwd",):
            for dtype, dot in DOT_OF_DTYPE.items():
                tuner = lp_ops.TUNED_KERNELS[kind, arch_class, dot]
                want = {_label(*_config_options(c)) for c in tuner.configs}
                rows = [r for r in report["results"] if r["kernel"] == f"_{kind}_kernel"
                        and r["arch"] == sm and r["dtype"] == dtype]
                per_config = Counter(r["config"] for r in rows)
                assert set(per_config) == want, (kind, sm, dtype, sorted(per_config), sorted(want))
                assert set(per_config.values()) == {4}, (kind, sm, dtype, per_config)  # bias x ent
                assert all(r["autotuned"] == (len(want) > 1) for r in rows)
        # Every (dtype, bias, entropy flag) of both row passes. The stats pass without a bias
        # has no argument of the input dtype: its binaries are shared by all dtypes (deduped,
        # labelled with the first).
        for kernel, flag in (("_row_stats_kernel", "ENTROPY"), ("_row_grad_kernel", "HAS_GRAD_ENT")):
            rows = {(r["dtype"], r["flags"]["HAS_BIAS"], r["flags"][flag])
                    for r in report["results"] if r["kernel"] == kernel and r["arch"] == sm}
            dtypes = ("bf16", "fp16", "fp32")
            want = {(d, b, f) for d in dtypes for b in (False, True) for f in (False, True)}
            if kernel == "_row_stats_kernel":
                want = {(d, b, f) for d, b, f in want if b or d == "bf16"}
            assert rows == want, (kernel, sm, sorted(rows ^ want))


def test_tile_tables_cover_every_architecture_and_dot_class():
    triton = pytest.importorskip("triton")
    import stepgrpo_fast.ops.head_rows as row_ops
    import stepgrpo_fast.ops.linear_logprobs as lp_ops

    keys = {(a, d) for a in lp_ops.ARCH_CLASSES for d in lp_ops.DOT_CLASSES}
    assert set(lp_ops.FWD_TILES) == keys
    for shapes in lp_ops.FWD_TILES.values():
        assert shapes and len(set(shapes)) == len(shapes)
        for bn, bv, bh, warps, stages in shapes:
            assert all(triton.next_power_of_2(b) == b >= 16 for b in (bn, bv, bh))
            assert warps in (4, 8) and 1 <= stages <= 4
        assert all(lp_ops.AUTOTUNE_V_ALIGN % bv == 0 for _, bv, *_ in shapes)
    for (arch, dot), shapes in lp_ops.FWD_TILES.items():
        assert lp_ops.gpu_default_blocks("fwd", arch, dot) == lp_ops.tile_dict(shapes[0])
        assert len(lp_ops.TUNED_KERNELS["fwd", arch, dot].configs) == len(shapes)
        assert lp_ops.TUNED_KERNELS["fwd", arch, dot].keys == ["N_CLASS", "V", "H"]
    assert not any(kind == "bwd" for kind, *_ in lp_ops.TUNED_KERNELS)
    with pytest.raises(ValueError, match="fused forward"):
        lp_ops.gpu_default_blocks("bwd", "sm90", "16bit")
    assert [lp_ops.arch_class(c) for c in ((9, 0), (8, 0), (8, 6), (8, 9), (10, 0), (12, 0))] == \
        ["sm90", "sm80", "sm80", "sm80", "sm80", "sm80"]
    assert [lp_ops.dot_class(d, p) for d, p in ((torch.bfloat16, "ieee"), (torch.float16, "tf32"),
                                                (torch.float32, "tf32"), (torch.float32, "ieee"))] == \
        ["16bit", "16bit", "tf32", "ieee"]
    with pytest.raises(ValueError, match="input_precision"):
        lp_ops.dot_class(torch.float32, "bf16x3")
    for br, bv, warps in row_ops.ROW_TILES.values():
        assert triton.next_power_of_2(bv) == bv and warps in (4, 8) and br >= 1
    assert [lp_ops.n_size_class(n) for n in (1, 1024, 1025, 8192, 8193, 65537)] == \
        [0, 0, 1, 1, 2, 3]


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
    """target_of reads the device (capability, SMs); the tiles follow its architecture class."""
    pytest.importorskip("triton")
    from types import SimpleNamespace

    import stepgrpo_fast.ops.linear_logprobs as lp_ops
    from stepgrpo_fast.ops.launch_plan import target_of

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: SimpleNamespace(multi_processor_count=132))
    target = target_of(torch.device("cuda", 0))
    assert (target.on_gpu, target.capability, target.sms) == (True, capability, 132)
    for kind in ("fwd",):
        tuned, cfg = lp_ops._tile_options(_FakeHidden(dtype), kind, precision)
        assert tuned is lp_ops.TUNED_KERNELS[kind, arch, dot] and cfg == {}
        tuned, cfg = lp_ops._tile_options(_FakeHidden(dtype), kind, precision, num_warps=4)
        assert tuned is None
        assert cfg == {**lp_ops.gpu_default_blocks(kind, arch, dot), "num_warps": 4}
