"""The AOT launch registry (stepgrpo_fast/gpu/launches.py) is built from the launchers' own plan
functions (ops/launch_plan.py), so the spill / shared-memory / tensor-core checks compile the
launches the ops really make.

The real public launchers run with a recording ``launch_plan.launch`` and the machine forced to
the registry's GPU (``Target``: sm_80 / sm_90, H100 SM count); every plan they launch, turned
into Launch records the way the registry does (kernel, constexprs, options, argument dtypes and
pointer offsets, runtime ints), must be one of the registry's records. Tensors are "meta"
stand-ins at the registry's shapes where nothing is executed; the entropy path of
linear_grpo_loss (torch glue between its kernels) executes in the interpreter at small shapes.
"""
from __future__ import annotations

import functools

import pytest
import torch

pytest.importorskip("triton")

from stepgrpo_fast.gpu import launches
from stepgrpo_fast.ops import grpo_loss as grpo_ops
from stepgrpo_fast.ops import launch_plan
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
    for mod in (lp_ops, lin_ops):
        monkeypatch.setattr(mod, "target_of", lambda device: target)


def _records(plans, arch=None):
    return [x for p in plans for x in launches.plan_launches(p, {}, "", matmul=False, arch=arch)]


def _meta(*shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, device="meta")


@pytest.mark.parametrize("dtype,tf32,sm,bias,entropy", [
    (torch.bfloat16, False, 90, True, True), (torch.float16, False, 80, False, True),
    (torch.float32, True, 80, True, False), (torch.float32, False, 90, False, False)])
def test_linear_logprobs_launches_are_registry_records(monkeypatch, recorded, registry, dtype,
                                                      tf32, sm, bias, entropy):
    _force_target(monkeypatch, sm, tf32)
    hidden, weight = _meta(N, H, dtype=dtype), _meta(V, H, dtype=dtype)
    targets, b = _meta(N, dtype=torch.int64), _meta(V, dtype=dtype) if bias else None
    lp_ops.linear_logprobs_forward_triton(hidden, weight, targets, b, 0.7, entropy)
    ent = _meta(N) if entropy else None
    lp_ops.linear_logprobs_backward_triton(hidden, weight, targets, b, 0.7, _meta(N), ent,
                                           _meta(N), ent)
    assert [p.name[1] for p in recorded] == ["_fwd_kernel", "_bwd_kernel"]
    assert all(p.autotuned for p in recorded)          # the GPU path: this architecture's tuner
    got = _records(recorded, arch=sm)
    assert len(got) == sum(len(p.kernel.configs) for p in recorded)
    missing = [x for x in got if _key(x) not in registry]
    assert not missing, f"real launches missing from the registry: {missing[:2]}"
    fwd = recorded[0]                                   # the partials: views of one buffer
    offsets = [a.storage_offset() for a in fwd.args[4:8]]
    assert offsets == [k * fwd.outputs[0].numel() for k in range(4)] and offsets[1] > 0


@pytest.mark.parametrize("dtype,bias,old,ref", [(torch.bfloat16, True, True, True),
                                                (torch.float32, False, False, True)])
def test_linear_grpo_loss_kernel_path_launches_are_registry_records(
        monkeypatch, recorded, registry, dtype, bias, old, ref):
    _force_target(monkeypatch, 90)
    vec = torch.zeros(N)
    lin_ops.linear_grpo_loss_triton(
        _meta(N, H, dtype=dtype), _meta(V, H, dtype=dtype), torch.zeros(N, dtype=torch.int64),
        torch.ones(N), vec, vec if old else None, vec if ref else None, beta=0.04,
        epsilon_low=0.2, epsilon_high=0.2, temperature=1.0,
        bias=_meta(V, dtype=dtype) if bias else None)
    assert [p.name[1] for p in recorded] == ["_lse_partial_kernel", "_token_coef_kernel",
                                            "_grad_tile_kernel"]
    missing = [x for x in _records(recorded) if _key(x) not in registry]
    assert not missing, f"real launches missing from the registry: {missing[:2]}"


def test_grpo_loss_launches_are_registry_records(recorded, registry):
    vec = _meta(N)
    grpo_ops.grpo_token_loss_triton(vec, vec, vec, vec, None, 0.04, 0.2, 0.2)
    grpo_ops.group_advantages_triton(_meta(8 * 16), 16, "group")
    grpo_ops.group_advantages_triton(_meta(1021), 1021, "batch")  # batch std: BLOCK 1024
    assert [p.name[1] for p in recorded] == ["_grpo_token_kernel", "_group_advantages_kernel",
                                            "_batch_std_kernel", "_group_advantages_kernel"]
    missing = [x for x in _records(recorded[:3]) if _key(x) not in registry]
    assert not missing, f"real launches missing from the registry: {missing[:2]}"


# GPU tiles past V = 300 (3 x 128 columns): the interpreter warns on 0 * -inf in masked columns
@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")
def test_entropy_path_runs_its_gpu_plans_and_they_are_registry_records(monkeypatch):
    """The glue path (entropy bonus) at small shapes: the real launcher, GPU tiles, executed in
    the interpreter through the recording hook; same loss as the interpreter tiles."""
    m, h, v = 70, 32, 300
    gen = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(m, h, generator=gen), torch.randn(v, h, generator=gen) * 0.3
    targets = torch.randint(0, v, (m,), generator=gen)
    adv = torch.randn(m, generator=gen)
    args = (hidden, weight, targets, torch.ones(m), adv, adv * 0 - 1.0, None)
    kw = {"beta": 0.0, "epsilon_low": 0.2, "epsilon_high": 0.2, "temperature": 0.7,
          "entropy_coef": 0.01}
    want = lin_ops.linear_grpo_loss_triton(*args, **kw)          # interpreter tiles
    plans, run = [], launch_plan.launch
    monkeypatch.setattr(launch_plan, "launch", lambda p: (plans.append(p), run(p)))
    _force_target(monkeypatch, 90)
    got = lin_ops.linear_grpo_loss_triton(*args, **kw)
    assert [p.name[1] for p in plans] == ["_lse_partial_kernel", "_grad_tile_kernel"]
    assert plans[0].constexprs["HAS_ENT"] and plans[1].constexprs["HAS_ENT"]
    assert plans[0].constexprs["BLOCK_H"] == lin_ops.GPU_BLOCKS["ieee"]["BLOCK_H"] != \
        lin_ops.DEFAULT_BLOCKS["BLOCK_H"]                         # GPU tiles, not the interpreter's
    for a, b in zip(want[:4], got[:4]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    monkeypatch.setattr(launches, "HIDDEN_SIZES", (h,))
    monkeypatch.setattr(launches, "VOCAB_SIZE", v)
    registry = {_key(x) for x in launches.grpo_linear_launches(m)}
    missing = [x for x in _records(plans) if _key(x) not in registry]
    assert not missing, f"real launches missing from the registry: {missing[:2]}"


def test_the_registry_follows_the_plan_functions(monkeypatch):
    """Change a plan function or the tile policy it reads: the registry changes with it."""
    def kernel_values(name, field):
        return {getattr(x, field).get(k) for x in launches.all_launches() if x.kernel == name
                for k in (("GROUP_N",) if field == "constexprs" else ("num_warps",))}

    assert kernel_values("_bwd_kernel", "constexprs") == {8}
    monkeypatch.setattr(lp_ops, "backward_plan", functools.partial(lp_ops.backward_plan, GROUP_N=4))
    assert kernel_values("_bwd_kernel", "constexprs") == {4}
    monkeypatch.setattr(lin_ops, "token_coef_warps", lambda block: 2)
    assert kernel_values("_token_coef_kernel", "options") == {2}
    monkeypatch.setitem(lin_ops.GPU_BLOCKS, "ieee", {**lin_ops.GPU_BLOCKS["ieee"], "BLOCK_H": 32})
    lse_fp32 = {x.constexprs["BLOCK_H"] for x in launches.grpo_linear_launches()
                if x.kernel == "_lse_partial_kernel" and x.dtype == "fp32"}
    assert lse_fp32 == {32}
