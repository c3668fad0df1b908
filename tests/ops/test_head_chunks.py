"""The gradient path of the Triton ops (ops/head_chunks.py, ops/head_rows.py): chunk budget,
-inf bias entries, bit-identical gradients, the work list the performance model prices, and the
no-grad fused forward -- on the CPU (interpreter for the row passes, torch GEMMs)."""
from __future__ import annotations

import pytest
import torch

from stepgrpo_fast.functional.logprobs import LinearLogprobsTriton
from stepgrpo_fast.ops import head_chunks, launch_plan
from stepgrpo_fast.ops import linear_grpo_loss as grpo_ops
from stepgrpo_fast.ops import linear_logprobs as lp_ops

TOL = {torch.float16: 2e-2, torch.float32: 1e-4}      # relative (max-norm), issue #30


def rel_err(a, b):
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def problem(n=40, h=32, v=700, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g)
    weight = torch.randn(v, h, generator=g) * 2 / h ** 0.5
    bias = torch.randn(v, generator=g)
    bias[[3, 100, v - 1]] = float("-inf")               # tokens the head can never emit
    targets = torch.randint(0, v, (n,), generator=g)
    targets[targets == 3] = 4
    targets[targets == 100] = 101
    targets[::9] = -100
    return hidden.to(dtype), weight.to(dtype), bias.to(dtype), targets


def oracle_logprobs(hidden, weight, bias, targets, temperature):
    """float64 log-probs and entropy with 0 log 0 = 0 (torch's own entropy is NaN at -inf)."""
    z = (hidden @ weight.T + bias) / temperature
    logp_all = torch.log_softmax(z, -1)
    p = logp_all.exp()
    ent = -(p * torch.where(p > 0, logp_all, 0.0)).sum(-1)
    valid = targets != -100
    logp = logp_all.gather(1, targets.clamp(min=0)[:, None])[:, 0]
    return torch.where(valid, logp, 0.0), torch.where(valid, ent, 0.0)


def logprobs_grads(fn, hidden, weight, bias, targets, cast):
    leaves = [cast(x).detach().clone().requires_grad_() for x in (hidden, weight, bias)]
    logp, ent = fn(*leaves, targets)
    g = torch.Generator().manual_seed(5)
    seeds = [torch.randn(logp.shape, generator=g).to(logp.dtype) for _ in range(2)]
    grads = torch.autograd.grad((logp * seeds[0]).sum() + (ent * seeds[1]).sum(), leaves)
    return [logp.detach(), ent.detach(), *grads]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_logprobs_with_minus_inf_bias_match_float64(dtype):
    hidden, weight, bias, targets = problem(dtype=dtype)
    opts = {"budget_bytes": 16 * 700 * 6}               # 16-row chunks: several of them
    ours = logprobs_grads(lambda h, w, b, t: LinearLogprobsTriton.apply(
        h, w, t, b, 0.7, True, opts), hidden, weight, bias, targets, lambda x: x)
    want = logprobs_grads(lambda h, w, b, t: oracle_logprobs(h, w, b, t, 0.7),
                          hidden, weight, bias, targets, lambda x: x.double())
    for name, a, b in zip(("logp", "entropy", "dH", "dW", "db"), ours, want):
        assert torch.isfinite(a).all(), name
        assert rel_err(a, b) < TOL[dtype], (name, rel_err(a, b))
    assert ours[4][[3, 100, 699]].abs().max() == 0          # no gradient into -inf entries
    with torch.no_grad():                                   # the fused forward, same answer
        logp, ent = LinearLogprobsTriton.apply(hidden, weight, targets, bias, 0.7, True, None)
    assert rel_err(logp, want[0]) < TOL[dtype] and rel_err(ent, want[1]) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("entropy_coef", [0.0, 0.05])
def test_grpo_loss_with_minus_inf_bias_matches_float64(dtype, entropy_coef):
    from stepgrpo_fast.functional.grpo import linear_grpo_loss
    from stepgrpo_fast.reference.grpo_loss import linear_grpo_loss_naive

    hidden, weight, bias, targets = problem(n=48, dtype=dtype, seed=1)
    b, t = 4, 12
    mask = (targets != -100).float().view(b, t)
    tg = targets.clamp(min=0).view(b, t)
    g = torch.Generator().manual_seed(2)
    adv = torch.randn(b, generator=g)
    old = -6.5 + 0.3 * torch.randn(b, t, generator=g)
    ref = old + 0.2 * torch.randn(b, t, generator=g)

    def run(h, w, bi, impl, cast):
        leaves = [cast(x).detach().clone().requires_grad_() for x in (h, w, bi)]
        kw = {"old_logp": old, "ref_logp": ref, "beta": 0.04, "temperature": 0.8, "bias": leaves[2]}
        if impl == "naive":
            loss, _ = linear_grpo_loss_naive(leaves[0].view(b, t, -1), leaves[1], tg, mask, adv,
                                             **kw)
        else:
            loss, _ = linear_grpo_loss(leaves[0].view(b, t, -1), leaves[1], tg, mask, adv,
                                       impl="triton", entropy_coef=entropy_coef, **kw)
        return [loss.detach(), *torch.autograd.grad(loss, leaves)]

    ours = run(hidden, weight, bias, "triton", lambda x: x)
    if entropy_coef:      # the naive oracle has no entropy bonus: the chunked fp64 path is exact
        from stepgrpo_fast.functional.grpo import linear_grpo_loss as lgl

        def want_fn(h, w, bi):
            leaves = [x.double().detach().clone().requires_grad_() for x in (h, w, bi)]
            loss, _ = lgl(leaves[0].view(b, t, -1), leaves[1], tg, mask, adv, old_logp=old.double(),
                          ref_logp=ref.double(), beta=0.04, temperature=0.8, bias=leaves[2],
                          impl="torch", entropy_coef=entropy_coef)
            return [loss.detach(), *torch.autograd.grad(loss, leaves)]
        want = want_fn(hidden, weight, bias)
    else:
        want = run(hidden, weight, bias, "naive", lambda x: x.double())
    for name, a, w in zip(("loss", "dH", "dW", "db"), ours, want):
        assert torch.isfinite(a).all(), name
        assert rel_err(a, w) < TOL[dtype], (name, rel_err(a, w))


def test_two_calls_give_bit_identical_gradients(monkeypatch):
    hidden, weight, bias, targets = problem()
    opts = {"budget_bytes": 8 * 700 * 8}

    def grads():
        return logprobs_grads(lambda h, w, b, t: LinearLogprobsTriton.apply(
            h, w, t, b, 1.3, True, opts), hidden, weight, bias, targets, lambda x: x)

    for a, b in zip(grads(), grads()):
        assert torch.equal(a, b)
    args = (hidden, weight, targets.clamp(min=0), (targets != -100).float(),
            torch.randn(40, generator=torch.Generator().manual_seed(0)), None, None)
    kw = {"beta": 0.0, "epsilon_low": 0.2, "epsilon_high": 0.2, "bias": bias,
          "budget_bytes": 8 * 700 * 8}
    first, second = grpo_ops.linear_grpo_loss_triton(*args, **kw), \
        grpo_ops.linear_grpo_loss_triton(*args, **kw)
    for a, b in zip(first[:4], second[:4]):
        assert torch.equal(a, b)


def test_chunk_rows_fit_the_budget():
    v = 151_936
    assert head_chunks.chunk_rows(8192, v, torch.bfloat16, 2 * 2**30) == 2304
    assert head_chunks.chunk_rows(8192, v, torch.bfloat16, 2**30) == 1152
    assert head_chunks.chunk_rows(100, v, torch.bfloat16, 2 * 2**30) == 100
    for budget in (v * 8, v * 8 * 77, v * 8 * 130 + 5, 2**30):
        for dtype, item in ((torch.bfloat16, 2), (torch.float32, 4)):
            rows = head_chunks.chunk_rows(10**6, v, dtype, budget)
            assert 1 <= rows and rows * v * (4 + item) <= budget
    with pytest.raises(ValueError, match="below one token row"):
        head_chunks.chunk_rows(8, v, torch.bfloat16, v * 6 - 1)
    assert head_chunks.default_budget("cpu") == 64 * 2**20
    assert head_chunks.default_budget("cuda", capability=(9, 0)) == 2 * 2**30
    assert head_chunks.default_budget("cuda", capability=(8, 0)) == 2**30


@pytest.mark.parametrize("op", ["linear_grpo_loss", "linear_logprobs"])
def test_the_model_work_list_is_what_the_launchers_run(monkeypatch, op):
    """head_chunks.steps (priced by gpu/perf_model.py) lists exactly the GEMMs a call runs,
    chunk by chunk, and one row pass per stats / dZ step; and the [C, V] buffers stay within
    the budget."""
    n, h, v, budget = 50, 16, 300, 12 * 300 * 8           # 12-row chunks: 5 of them
    gemms, rows, allocated = [], [], []
    real_gemm, real_launch, real_buffers = head_chunks.gemm, launch_plan.launch, head_chunks.Buffers

    def record_gemm(a, b, out, accumulate=False):
        gemms.append(2.0 * a.shape[0] * a.shape[1] * b.shape[1])
        real_gemm(a, b, out, accumulate)

    class Recorded(real_buffers):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            allocated.append(sum(t.numel() * t.element_size() for t in (self.logits, self.dz)
                                 if t is not None))

    for mod in (lp_ops, grpo_ops):
        monkeypatch.setattr(mod, "gemm", record_gemm)
        monkeypatch.setattr(mod, "Buffers", Recorded)
    monkeypatch.setattr(launch_plan, "launch", lambda p: (rows.append(p.name[1]), real_launch(p)))
    hidden, weight, _, targets = problem(n=n, h=h, v=v)
    targets = targets.clamp(min=0)
    if op == "linear_logprobs":
        leaves = [x.clone().requires_grad_() for x in (hidden, weight)]
        out = LinearLogprobsTriton.apply(*leaves, targets, None, 1.0, False,
                                         {"budget_bytes": budget})
        out.sum().backward()
    else:
        grpo_ops.linear_grpo_loss_triton(hidden, weight, targets, torch.ones(n), torch.ones(n),
                                         None, None, beta=0.0, epsilon_low=0.2,
                                         epsilon_high=0.2, budget_bytes=budget)
    work = head_chunks.steps(op, n, h, v, torch.float32, budget)
    assert gemms == [s.flops for s in work if s.kind == "gemm"]
    assert len(rows) == sum(s.kind == "rows" for s in work) == 10
    if op == "linear_grpo_loss":                            # gradients formed in the forward
        assert rows == ["_row_stats_kernel", "_row_grad_kernel"] * 5
    else:
        assert rows == ["_row_stats_kernel"] * 5 + ["_row_grad_kernel"] * 5
    assert sum(gemms) / (2.0 * n * h * v) == (3 if op == "linear_grpo_loss" else 4)
    assert allocated and max(allocated) <= budget


def test_no_grad_calls_use_the_fused_forward_only(monkeypatch):
    """No input needs a gradient: one fused forward launch, no [C, V] buffer, no GEMM."""
    from stepgrpo_fast.functional.grpo import linear_grpo_loss
    from stepgrpo_fast.functional.logprobs import linear_logprobs

    names = []
    real = launch_plan.launch
    monkeypatch.setattr(launch_plan, "launch", lambda p: (names.append(p.name[1]), real(p)))
    monkeypatch.setattr(head_chunks, "Buffers", None)       # any [C, V] buffer would fail
    for mod in (lp_ops, grpo_ops):
        monkeypatch.setattr(mod, "Buffers", None)
    hidden, weight, bias, targets = problem()
    with torch.no_grad():
        linear_logprobs(hidden, weight, targets, bias=bias, impl="triton", return_entropy=True)
        linear_grpo_loss(hidden.view(4, 10, -1), weight, targets.clamp(min=0).view(4, 10),
                         torch.ones(4, 10), torch.randn(4), bias=bias, beta=0.0, impl="triton")
    assert names == ["_fwd_kernel", "_fwd_kernel"]


def test_the_performance_model_meets_the_bars_on_an_h100():
    from stepgrpo_fast.gpu import perf_model

    rows = {r["op"]: r for r in perf_model.model_table("h100")}
    grpo, lp = rows["linear_grpo_loss"], rows["linear_logprobs (entropy)"]
    assert grpo["gemm_equivalents"] == 3 and lp["gemm_equivalents"] == 4
    assert grpo["chunk_rows"] == 2304 and grpo["chunks"] == 4
    assert 1.0 < grpo["ratio"] <= 1.2 and 1.0 < lp["ratio"] <= 1.6
    # the bare GEMMs: 6 N H V FLOPs at 70% of 989 TFLOP/s
    assert grpo["bare_ms"] == pytest.approx(6 * 8192 * 4096 * 151936 / (0.7 * 989e12) * 1e3,
                                            rel=1e-3)
