"""The AOT launch registry (stepgrpo_fast/gpu/launches.py) is built from the launchers' own plan
functions (ops/launch_plan.py), so the spill / shared-memory / tensor-core checks compile the
launches the ops really make.

The real public launchers run with a recording ``launch_plan.launch`` and the machine forced to
the registry's GPU (``Target``: sm_80 / sm_90, H100 SM count); every plan they launch, turned
into Launch records the way the registry does (kernel, constexprs, options, argument dtypes and
pointer offsets, runtime ints), must be one of the registry's records. Tensors are "meta"
stand-ins at the registry's shapes where nothing is executed (the fused forward); the gradient
paths (GEMMs and torch maths between the row passes) execute in the interpreter at small shapes
against a registry built at those shapes.
"""
from __future__ import annotations

import functools

import pytest
import torch

pytest.importorskip("triton")

from stepgrpo_fast.gpu import launches
from stepgrpo_fast.ops import grpo_loss as grpo_ops
from stepgrpo_fast.ops import head_rows, launch_plan
from stepgrpo_fast.ops import linear_grpo_loss as lin_ops
from stepgrpo_fast.ops import linear_logprobs as lp_ops
from stepgrpo_fast.ops.tiles import H100_SMS

N, H, V = launches.TOKENS, launches.HIDDEN_SIZES[0], launches.VOCAB_SIZE


def _key(launch):
    return (launch.module, launch.kernel, repr(launch.args),
            tuple(sorted(launch.constexprs.items())), tuple(sorted(launch.options.items())),
            launch.arch)


@pytest.fixture(scope="module")
def registry():
    return {_key(x) for x in launches.all_launches()}


@pytest.fixture
def recorded(monkeypatch):
    """Plans launched from now on; launch_plan.launch records only (nothing runs)."""
    plans = []
    monkeypatch.setattr(launch_plan, "launch", plans.append)
    return plans


def _force_target(monkeypatch, sm: int, allow_tf32: bool = False):
    target = launch_plan.gpu_target(divmod(sm, 10), H100_SMS, allow_tf32)
    for mod in (lp_ops, lin_ops, head_rows):
        monkeypatch.setattr(mod, "target_of", lambda device: target)


def _records(plans, arch=None):
    return [x for p in plans for x in launches.plan_launches(p, {}, "", matmul=False, arch=arch)]


def _meta(*shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, device="meta")


@pytest.mark.parametrize("dtype,tf32,sm,bias,entropy", [
    (torch.bfloat16, False, 90, True, True), (torch.float16, False, 80, False, True),
    (torch.float32, True, 80, True, False), (torch.float32, False, 90, False, False)])
def test_fused_forward_launches_are_registry_records(monkeypatch, recorded, registry, dtype,
                                                    tf32, sm, bias, entropy):
    _force_target(monkeypatch, sm, tf32)
    hidden, weight = _meta(N, H, dtype=dtype), _meta(V, H, dtype=dtype)
    targets, b = _meta(N, dtype=torch.int64), _meta(V, dtype=dtype) if bias else None
    lp_ops.linear_logprobs_forward_triton(hidden, weight, targets, b, 0.7, entropy)
    assert [p.name[1] for p in recorded] == ["_fwd_kernel"]
    assert all(p.autotuned for p in recorded)          # the GPU path: this architecture's tuner
    got = _records(recorded, arch=sm)
    assert len(got) == sum(len(p.kernel.configs) for p in recorded)
    missing = [x for x in got if _key(x) not in registry]
    assert not missing, f"real launches missing from the registry: {missing[:2]}"
    fwd = recorded[0]                                   # the partials: views of one buffer
    offsets = [a.storage_offset() for a in fwd.args[4:8]]
    assert offsets == [k * fwd.outputs[0].numel() for k in range(4)] and offsets[1] > 0
    assert fwd.args[13] == lp_ops.n_size_class(N) == 1      # the autotune key's N class
    assert "N_CLASS" in fwd.kernel.keys


def test_grpo_loss_launches_are_registry_records(recorded, registry):
    vec = _meta(N)
    grpo_ops.grpo_token_loss_triton(vec, vec, vec, vec, None, 0.04, 0.2, 0.2)
    grpo_ops.group_advantages_triton(_meta(8 * 16), 16, "group")
    grpo_ops.group_advantages_triton(_meta(1021), 1021, "batch")  # batch std: BLOCK 1024
    assert [p.name[1] for p in recorded] == ["_grpo_token_kernel", "_group_advantages_kernel",
                                            "_batch_std_kernel", "_group_advantages_kernel"]
    missing = [x for x in _records(recorded[:3]) if _key(x) not in registry]
    assert not missing, f"real launches missing from the registry: {missing[:2]}"


def _small_registry(monkeypatch, m, h, v):
    monkeypatch.setattr(launches, "HIDDEN_SIZES", (h,))
    monkeypatch.setattr(launches, "VOCAB_SIZE", v)
    return {_key(x) for x in launches.row_pass_launches(m)}


def _executing_recorder(monkeypatch):
    plans, run = [], launch_plan.launch
    monkeypatch.setattr(launch_plan, "launch", lambda p: (plans.append(p), run(p)))
    return plans


@pytest.mark.parametrize("case", ["token", "entropy_bonus", "sequence_level"])
def test_grpo_gradient_path_runs_its_gpu_plans_and_they_are_registry_records(monkeypatch, case):
    """linear_grpo_loss's chunk loop at small shapes on the registry's GPU target (row tiles,
    H100 budget), executed in the interpreter: its row passes are registry records, and the
    result equals the interpreter tiles' run."""
    m, h, v = 70, 32, 300
    gen = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(m, h, generator=gen), torch.randn(v, h, generator=gen) * 0.3
    targets = torch.randint(0, v, (m,), generator=gen)
    adv = torch.randn(m, generator=gen)
    args = (hidden, weight, targets, torch.ones(m), adv, adv * 0 - 1.0, None)
    kw = {"beta": 0.0, "epsilon_low": 0.2, "epsilon_high": 0.2, "temperature": 0.7,
          "entropy_coef": 0.01 if case == "entropy_bonus" else 0.0}
    if case == "sequence_level":
        from stepgrpo_fast.formulas import PolicyOptions
        kw.update(opts=PolicyOptions(importance_sampling_level="sequence", beta=0.0), seq_len=10,
                  blocks={"BLOCK_N": 64})   # a fixed fused tile: no autotuning in the interpreter
    want = lin_ops.linear_grpo_loss_triton(*args, **kw)          # interpreter tiles
    plans = _executing_recorder(monkeypatch)
    _force_target(monkeypatch, 90)
    got = lin_ops.linear_grpo_loss_triton(*args, **kw)
    names = [p.name[1] for p in plans]
    rows = [p for p in plans if p.name[1].startswith("_row_")]
    if case == "sequence_level":      # two passes: the fused forward scores, then dZ per chunk
        assert names == ["_fwd_kernel", "_row_grad_kernel"]
    else:
        assert names == ["_row_stats_kernel", "_row_grad_kernel"]
        assert rows[0].constexprs["ENTROPY"] == (case == "entropy_bonus")
    assert rows[-1].constexprs["HAS_GRAD_ENT"] == (case == "entropy_bonus")
    assert rows[0].constexprs["BLOCK_R"] == head_rows.ROW_TILES["gpu"][0]   # GPU row tiles
    for a, b in zip(want[:4], got[:4]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    registry = _small_registry(monkeypatch, m, h, v)
    missing = [x for x in _records(rows) if _key(x) not in registry]
    assert not missing, f"real launches missing from the registry: {missing[:2]}"


@pytest.mark.parametrize("entropy", [False, True])
def test_logprobs_gradient_path_runs_its_gpu_plans_and_they_are_registry_records(monkeypatch,
                                                                                 entropy):
    from stepgrpo_fast.functional.logprobs import LinearLogprobsTriton

    m, h, v = 70, 32, 300
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(m, h, generator=gen).requires_grad_()
    weight = (torch.randn(v, h, generator=gen) * 0.3).requires_grad_()
    targets = torch.randint(0, v, (m,), generator=gen)
    plans = _executing_recorder(monkeypatch)
    _force_target(monkeypatch, 90)
    out = LinearLogprobsTriton.apply(hidden, weight, targets, None, 0.7, entropy, None)
    loss = sum(o.sum() for o in out) if entropy else out.sum()
    loss.backward()
    assert [p.name[1] for p in plans] == ["_row_stats_kernel", "_row_grad_kernel"]
    assert plans[1].constexprs["HAS_GRAD_ENT"] == entropy
    missing = [x for x in _records(plans) if _key(x) not in _small_registry(monkeypatch, m, h, v)]
    assert not missing, f"real launches missing from the registry: {missing[:2]}"


def test_the_registry_follows_the_plan_functions(monkeypatch):
    """Change a plan function or the tile policy it reads: the registry changes with it."""
    def row_warps():
        return {x.options["num_warps"] for x in launches.all_launches()
                if x.kernel.startswith("_row_")}

    assert row_warps() == {head_rows.ROW_TILES["gpu"][2]}
    monkeypatch.setitem(head_rows.ROW_TILES, "gpu", (1, 1024, 4))
    assert row_warps() == {4}
    monkeypatch.setattr(lp_ops, "group_tokens", lambda h, item: 512)
    groups = {x.args[12] for x in launches.logprobs_forward_launches()}
    assert groups == {512}
