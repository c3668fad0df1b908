"""ops/target_shift.py: the CPU GRPO row block's softmax shifted by each token's target logit
(no max pass), and the max-shift fallback of a block whose target is too improbable."""
from __future__ import annotations

import math

import pytest
import torch

import stepgrpo_fast.ops.linear_grpo_loss_chunked as chunked
from stepgrpo_fast.ops import target_shift
from stepgrpo_fast.reference.grpo_loss import linear_grpo_loss_naive


def rel_err(a, b):
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [False, True])
def test_shifted_exp_is_the_softmax_numerator_over_uneven_slices(monkeypatch, dtype, with_bias):
    monkeypatch.setattr(target_shift, "SLICE_BYTES", 4 * 7 * 300)   # 300-row slices, short tail
    g = torch.Generator().manual_seed(0)
    v, h, c, inv_t = 1_001, 24, 7, 1 / 0.7
    hidden, weight = torch.randn(c, h, generator=g).to(dtype), torch.randn(v, h, generator=g).to(dtype)
    bias = torch.randn(v, generator=g)
    bias[[5, 600]] = float("-inf")
    y = torch.randint(0, v, (c,), generator=g)
    y[y == 5] = 6
    shift = target_shift.target_logits(hidden, weight, bias if with_bias else None, y, inv_t)
    e = torch.empty(v, c)
    sums = target_shift.shifted_exp_into(e, weight, hidden, bias[:, None] if with_bias else None,
                                         shift, inv_t, lowp=dtype != torch.float32)
    z = (weight.double() @ hidden.double().T + (bias.double()[:, None] if with_bias else 0)) * inv_t
    want = torch.exp(z - shift.double())
    assert rel_err(e, want) < (1e-5 if dtype == torch.float32 else 2e-2)
    assert rel_err(sums, want.sum(0)) < (1e-5 if dtype == torch.float32 else 2e-2)
    if dtype == torch.float32:     # the target's own term is exp(0) up to the dot's rounding
        assert torch.allclose(e.gather(0, y[None])[0], torch.ones(c), atol=1e-5)
    if with_bias:
        assert e[[5, 600]].abs().max() == 0


def test_target_logits_replace_a_non_finite_target_by_zero():
    weight, hidden = torch.ones(4, 2), torch.ones(3, 2)
    bias = torch.tensor([0.0, float("-inf"), 1.0, float("nan")])
    z_y = target_shift.target_logits(hidden, weight, bias, torch.tensor([0, 1, 3]), 2.0)
    assert z_y.tolist() == [4.0, 0.0, 0.0]


def test_in_range_refuses_overflow_inf_and_nan():
    assert target_shift.in_range(torch.tensor([1.0, 2.0 ** 40]))
    assert not target_shift.in_range(torch.tensor([1.0, 2.0 ** 41]))
    assert not target_shift.in_range(torch.tensor([1.0, float("inf")]))
    assert not target_shift.in_range(torch.tensor([float("nan"), 1.0]))
    assert not target_shift.in_range(torch.tensor([0.0, 1.0]))


def grpo_problem(seed, n_rows=4, t=8, h=16, v=257):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n_rows, t, h, generator=g, dtype=torch.float64)
    weight = torch.randn(v, h, generator=g, dtype=torch.float64) / h ** 0.5
    bias = torch.randn(v, generator=g, dtype=torch.float64)
    bias[[7, 8]] = float("-inf")                        # tokens the head never emits
    targets = torch.randint(9, v, (n_rows, t), generator=g)
    mask = torch.ones(n_rows, t)
    adv = torch.randn(n_rows, generator=g, dtype=torch.float64)
    old = -math.log(v) + 0.3 * torch.randn(n_rows, t, generator=g, dtype=torch.float64)
    return hidden, weight, bias, targets, mask, adv, old


def run_grpo(hidden, weight, bias, targets, mask, adv, old, dtype, chunk_rows=None):
    from stepgrpo_fast.functional.grpo import linear_grpo_loss

    leaves = [x.to(dtype).detach().clone().requires_grad_() for x in (hidden, weight, bias)]
    kw = {"old_logp": old.to(dtype) if dtype == torch.float64 else old.float(), "beta": 0.0,
          "temperature": 0.9, "bias": leaves[2]}
    a = adv.to(dtype) if dtype == torch.float64 else adv.float()
    if dtype == torch.float64 and chunk_rows is None:
        loss, _ = linear_grpo_loss_naive(leaves[0], leaves[1], targets, mask, a, **kw)
    else:
        loss, _ = linear_grpo_loss(leaves[0], leaves[1], targets, mask, a, impl="torch", **kw)
    return [loss.detach(), *torch.autograd.grad(loss, leaves)]


def test_a_block_with_an_improbable_target_falls_back_to_the_max_shift(monkeypatch):
    """Token (row 2, position 3) is given p_y ~ e^-60 < 2^-40: its 8-row block (the third of
    four) must be redone with the max shift, the other three must not, and every gradient must
    match the float64 oracle."""
    hidden, weight, bias, targets, mask, adv, old = grpo_problem(seed=3)
    bias[200] = 60.0                                  # one token dominates every softmax ...
    targets[:] = torch.where(targets == 200, 201, targets)
    targets[:, :] = 200                               # ... and is every target but one
    targets[2, 3] = 13
    calls = []
    original = chunked._logits_into
    monkeypatch.setattr(chunked, "_logits_into", lambda z_t, *a: calls.append(z_t.shape[1]) or
                        original(z_t, *a))
    monkeypatch.setattr(chunked, "logits_chunk_rows", lambda v: 8)
    got = run_grpo(hidden, weight, bias, targets, mask, adv, old, torch.float32)
    assert calls == [8], calls                        # only the block holding the improbable token
    want = run_grpo(hidden, weight, bias, targets, mask, adv, old, torch.float64)
    assert abs(float(got[0]) - float(want[0])) <= 1e-5 * max(1.0, abs(float(want[0])))
    for name, a, b in zip(("dH", "dW", "db"), got[1:], want[1:]):
        assert torch.isfinite(a).all(), name
        assert rel_err(a, b) < 2e-5, (name, rel_err(a, b))
    assert got[3][[7, 8]].abs().max() == 0           # no gradient into the -inf bias entries


def test_probable_targets_never_take_the_max_pass(monkeypatch):
    hidden, weight, bias, targets, mask, adv, old = grpo_problem(seed=4)
    calls = []
    monkeypatch.setattr(chunked, "_logits_into", lambda *a: calls.append(1))
    monkeypatch.setattr(chunked, "logits_chunk_rows", lambda v: 8)
    got = run_grpo(hidden, weight, bias, targets, mask, adv, old, torch.float32)
    assert calls == []
    want = run_grpo(hidden, weight, bias, targets, mask, adv, old, torch.float64)
    for a, b in zip(got, want):
        assert rel_err(a, b) < 2e-5


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_targets_of_large_logits_stay_on_the_fast_path(monkeypatch, temperature):
    """Logits as large as a real LM head's (max ~ 40-60 here, beyond exp's fp32 range once
    divided by T = 0.7 without a shift), targets sampled from the policy itself as in a
    rollout: no block needs the max pass, and the answer matches float64."""
    g = torch.Generator().manual_seed(11)
    n, h, v = 64, 32, 4096
    hidden = torch.randn(1, n, h, generator=g, dtype=torch.float64) * 3
    weight = torch.randn(v, h, generator=g, dtype=torch.float64) * (2.5 / h ** 0.5)
    bias = 25.0 + torch.randn(v, generator=g, dtype=torch.float64)
    with torch.no_grad():
        z = (hidden[0] @ weight.T + bias) / temperature
        assert float(z.max()) > 60
        targets = torch.multinomial(torch.softmax(z, -1), 1, generator=g).T
        old = torch.log_softmax(z, -1).gather(1, targets.T).T + 0.05
    calls = []
    original = chunked._logits_into
    monkeypatch.setattr(chunked, "_logits_into", lambda *a: calls.append(1) or original(*a))
    monkeypatch.setattr(chunked, "logits_chunk_rows", lambda v: 16)
    args = (hidden, weight, bias, targets, torch.ones(1, n), torch.randn(1, generator=g,
            dtype=torch.float64), old)

    def run(dtype, impl):
        from stepgrpo_fast.functional.grpo import linear_grpo_loss

        leaves = [x.to(dtype).detach().clone().requires_grad_() for x in args[:3]]
        cast = (lambda x: x.to(dtype) if dtype == torch.float64 else x.float())
        fn = linear_grpo_loss_naive if impl == "naive" else linear_grpo_loss
        loss, _ = fn(leaves[0], leaves[1], args[3], args[4], cast(args[5]), old_logp=cast(args[6]),
                     beta=0.0, temperature=temperature, bias=leaves[2],
                     **({} if impl == "naive" else {"impl": "torch"}))
        return [loss.detach(), *torch.autograd.grad(loss, leaves)]

    got = run(torch.float32, "torch")
    assert calls == []
    want = run(torch.float64, "naive")
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-4
