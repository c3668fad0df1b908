"""linear_logprobs: CPU (chunked torch) and Triton (interpreter) paths vs a float64 reference.

Tolerances are error budgets: |ours - fp64 truth| <= K * |torch in the input dtype - truth| + floor,
i.e. the fused op may not be much worse than what plain torch gets at the same precision.
"""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

import stepgrpo_fast.ops.chunking as chunking
from stepgrpo_fast.functional.logprobs import (
    LinearLogprobsTriton,
    check_linear_inputs,
    linear_logprobs,
)
from stepgrpo_fast.reference.linear_logprobs import linear_logprobs_naive

K = 4.0
# Interpreter tiles: several token blocks, several vocab blocks and splits, few iterations.
SMALL_TILES = {"BLOCK_N": 16, "BLOCK_V": 256, "BLOCK_H": 16, "V_SPLIT": 512}


def make_inputs(n, h, v, dtype, *, bias=True, scale=1.0, ignore=(), seed=0, shape=None):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, h, generator=g) * scale).to(dtype)
    weight = (torch.randn(v, h, generator=g) / h ** 0.5 * 4).to(dtype)
    b = (torch.randn(v, generator=g)).to(dtype) if bias else None
    targets = torch.randint(0, v, (n,), generator=g)
    for i in ignore:
        targets[i] = -100
    if shape is not None:
        hidden, targets = hidden.reshape(*shape, h), targets.reshape(shape)
    return hidden, weight, b, targets


def run(fn, hidden, weight, bias, targets, *, entropy, seed=1, **kw):
    """Forward + backward with fixed random upstream grads -> [logp, (entropy), dH, dW, (db)]."""
    leaves = [t.detach().clone().requires_grad_() for t in (hidden, weight)]
    if bias is not None:
        leaves.append(bias.detach().clone().requires_grad_())
    out = fn(leaves[0], leaves[1], targets, bias=leaves[2] if bias is not None else None,
             return_entropy=entropy, **kw)
    outs = list(out) if entropy else [out]
    g = torch.Generator().manual_seed(seed)
    grads = [torch.randn(o.shape, generator=g).to(o.dtype) for o in outs]  # same values per dtype
    dgrads = torch.autograd.grad(outs, leaves, grads)
    return [o.detach() for o in outs] + list(dgrads)


def truth(hidden, weight, bias, targets, *, temperature, entropy):
    to64 = (lambda t: None if t is None else t.detach().double())
    return run(lambda h, w, t, bias, return_entropy: linear_logprobs_naive(
        h, w, t, bias=bias, temperature=temperature, return_entropy=return_entropy,
        compute_dtype=torch.float64), to64(hidden), to64(weight), to64(bias), targets,
        entropy=entropy)


def lowp_torch(hidden, weight, bias, targets, *, temperature, entropy):
    return run(lambda h, w, t, bias, return_entropy: linear_logprobs_naive(
        h, w, t, bias=bias, temperature=temperature, return_entropy=return_entropy,
        compute_dtype=hidden.dtype), hidden, weight, bias, targets, entropy=entropy)


def assert_budget(ours, lowp, exact, names, floor=1e-5):
    for name, a, b, c in zip(names, ours, lowp, exact):
        assert a.shape == c.shape, (name, a.shape, c.shape)
        assert torch.isfinite(a).all(), f"{name}: non-finite values"
        scale = c.abs().max().item() + 1e-30
        err = (a.double() - c).abs().max().item() / scale
        budget = (b.double() - c).abs().max().item() / scale
        if not math.isfinite(budget):  # torch itself overflowed (fp16, huge logits)
            budget = torch.finfo(b.dtype).eps
        assert err <= K * budget + floor, f"{name}: rel err {err:.3g} > {K} x torch {budget:.3g} + {floor}"


def names_for(entropy, bias):
    return ["logp"] + (["entropy"] if entropy else []) + ["dH", "dW"] + (["db"] if bias else [])


def check_against_reference(fn, hidden, weight, bias, targets, *, temperature, entropy,
                            floor=1e-5):
    ours = run(fn, hidden, weight, bias, targets, entropy=entropy, temperature=temperature)
    exact = truth(hidden, weight, bias, targets, temperature=temperature, entropy=entropy)
    lowp = lowp_torch(hidden, weight, bias, targets, temperature=temperature, entropy=entropy)
    assert ours[0].dtype == torch.float32
    assert_budget(ours, lowp, exact, names_for(entropy, bias is not None), floor=floor)
    return ours


def torch_impl(h, w, t, **kw):
    return linear_logprobs(h, w, t, impl="torch", **kw)


def triton_impl(tiles):
    def fn(h, w, t, *, bias=None, temperature=1.0, return_entropy=False):
        shape = t.shape
        out = LinearLogprobsTriton.apply(h.reshape(-1, h.shape[-1]), w, t.reshape(-1), bias,
                                         temperature, return_entropy, tiles)
        return tuple(o.view(shape) for o in out) if return_entropy else out.view(shape)
    return fn


@pytest.fixture
def small_chunks(monkeypatch):
    """Force many token chunks and vocab chunks in the CPU path."""
    monkeypatch.setattr(chunking, "DEFAULT_TOKEN_CHUNK", 8)
    monkeypatch.setattr(chunking, "DEFAULT_WORKSPACE_BYTES", 8 * 300 * 4)


# ----------------------------------------------------------------------------- CPU path
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("temperature,bias,entropy", [(0.7, True, True), (1.0, False, False),
                                                      (1.3, True, False), (1.3, False, True)])
def test_torch_matches_fp64(dtype, temperature, bias, entropy, small_chunks):
    hidden, weight, b, targets = make_inputs(37, 24, 1000, dtype, bias=bias, ignore=(0, 5, 6))
    check_against_reference(torch_impl, hidden, weight, b, targets, temperature=temperature,
                            entropy=entropy)


def test_torch_default_chunks_and_3d_input():
    hidden, weight, b, targets = make_inputs(6, 16, 700, torch.float32, shape=(2, 3), ignore=(4,))
    ours = check_against_reference(torch_impl, hidden, weight, b, targets, temperature=1.0,
                                   entropy=True)
    assert ours[0].shape == (2, 3) and ours[1].shape == (2, 3) and ours[2].shape == (2, 3, 16)
    assert ours[0][1, 1] == 0 and ours[1][1, 1] == 0 and (ours[2][1, 1] == 0).all()


def test_torch_single_row_and_tiny_vocab():
    hidden, weight, b, targets = make_inputs(1, 3, 3, torch.float32)
    check_against_reference(torch_impl, hidden, weight, b, targets, temperature=1.0, entropy=True)


def test_torch_qwen_vocab_few_rows(small_chunks, monkeypatch):
    monkeypatch.setattr(chunking, "DEFAULT_WORKSPACE_BYTES", 4 * 40000 * 4)  # 4 vocab chunks
    hidden, weight, b, targets = make_inputs(3, 32, 151_936, torch.float32, ignore=(1,))
    check_against_reference(torch_impl, hidden, weight, b, targets, temperature=0.7, entropy=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_torch_huge_logits_stay_finite(dtype, small_chunks):
    # |logits| ~ 1e4: a plain exp would overflow; the online logsumexp must not.
    hidden, weight, _, targets = make_inputs(20, 16, 600, dtype, scale=2000.0, bias=False)
    z = hidden.double() @ weight.double().T
    assert z.abs().max() > 5e3
    check_against_reference(torch_impl, hidden, weight, None, targets, temperature=1.3,
                            entropy=True)


def test_torch_all_ignored_gives_zeros():
    hidden, weight, b, targets = make_inputs(5, 8, 50, torch.float32, ignore=range(5))
    logp, ent, dh, dw, db = run(torch_impl, hidden, weight, b, targets, entropy=True)
    for t in (logp, ent, dh, dw, db):
        assert torch.count_nonzero(t) == 0


def test_torch_gradcheck_float64(small_chunks):
    hidden, weight, b, targets = make_inputs(9, 4, 19, torch.float64, ignore=(2, 3))
    leaves = [t.clone().requires_grad_() for t in (hidden, weight, b)]

    def f(h, w, bias):
        return linear_logprobs(h, w, targets, bias=bias, temperature=0.7, return_entropy=True,
                               impl="torch")

    assert torch.autograd.gradcheck(f, leaves)


def test_torch_noncontiguous_views_match_contiguous():
    hidden, weight, b, targets = make_inputs(9, 12, 77, torch.float32)
    h_t = hidden.T.contiguous().T          # same values, column-major strides
    w_big = torch.zeros(77, 30)
    w_big[:, 5:17] = weight
    w_view = w_big[:, 5:17]                # row stride 30 != 12
    assert not h_t.is_contiguous() and not w_view.is_contiguous()
    a = run(torch_impl, hidden, weight, b, targets, entropy=True)
    c = run(torch_impl, h_t, w_view, b, targets, entropy=True)
    for x, y in zip(a, c):
        torch.testing.assert_close(x, y)


def test_torch_requires_grad_subsets():
    """Only hidden requires grad: weight/bias grads are skipped, dH still exact."""
    hidden, weight, b, targets = make_inputs(4, 8, 40, torch.float32)
    h = hidden.clone().requires_grad_()
    logp = linear_logprobs(h, weight, targets, bias=b, impl="torch", temperature=1.3)
    (dh,) = torch.autograd.grad(logp.sum(), [h])
    h64 = hidden.double().requires_grad_()
    ref = linear_logprobs_naive(h64, weight.double(), targets, bias=b.double(), temperature=1.3,
                                compute_dtype=torch.float64)
    (dh64,) = torch.autograd.grad(ref.sum(), [h64])
    torch.testing.assert_close(dh.double(), dh64, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("use", ["logp", "entropy"])
def test_only_one_output_used(impl, use, small_chunks):
    """return_entropy=True but the loss uses one output: the other's grad arrives as None."""
    hidden, weight, b, targets = make_inputs(19, 12, 300, torch.float32, ignore=(4,))
    fn = torch_impl if impl == "torch" else triton_impl(SMALL_TILES)
    leaves = [t.clone().requires_grad_() for t in (hidden, weight, b)]
    logp, ent = fn(*leaves[:2], targets, bias=leaves[2], temperature=0.7, return_entropy=True)
    got = torch.autograd.grad((logp if use == "logp" else ent).sum(), leaves)
    ref_leaves = [t.double().requires_grad_() for t in (hidden, weight, b)]
    ref = linear_logprobs_naive(*ref_leaves[:2], targets, bias=ref_leaves[2], temperature=0.7,
                                return_entropy=True, compute_dtype=torch.float64)
    want = torch.autograd.grad(ref[0 if use == "logp" else 1].sum(), ref_leaves)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double(), w, rtol=2e-4, atol=2e-5)


# ----------------------------------------------------------------------------- Triton path
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("temperature,bias,entropy", [(0.7, True, True), (1.3, False, True),
                                                      (1.0, True, False)])
def test_triton_matches_fp64(dtype, temperature, bias, entropy):
    # Rows 0..15 (the whole first token block) are ignored; V=1000 is not a block multiple.
    hidden, weight, b, targets = make_inputs(37, 24, 1000, dtype, bias=bias,
                                             ignore=(*range(16), 20, 36))
    ours = check_against_reference(triton_impl(SMALL_TILES), hidden, weight, b, targets,
                                   temperature=temperature, entropy=entropy)
    assert torch.count_nonzero(ours[2 if entropy else 1][:16]) == 0   # no dH for ignored rows


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_huge_logits_stay_finite(dtype):
    hidden, weight, _, targets = make_inputs(20, 16, 600, dtype, scale=2000.0, bias=False)
    check_against_reference(triton_impl(SMALL_TILES), hidden, weight, None, targets,
                            temperature=1.0, entropy=True)


def test_triton_qwen_vocab_few_rows():
    hidden, weight, b, targets = make_inputs(3, 32, 151_936, torch.float32, ignore=(2,))
    tiles = {"BLOCK_N": 16, "BLOCK_V": 8192, "BLOCK_H": 32}
    check_against_reference(triton_impl(tiles), hidden, weight, b, targets, temperature=1.3,
                            entropy=True)


def test_triton_public_api_default_tiles_3d_and_n1():
    hidden, weight, b, targets = make_inputs(6, 20, 300, torch.float32, shape=(2, 3), ignore=(1,))
    check_against_reference(lambda *a, **k: linear_logprobs(*a, impl="triton", **k),
                            hidden, weight, b, targets, temperature=0.7, entropy=True)
    hidden, weight, b, targets = make_inputs(1, 20, 300, torch.float16)
    check_against_reference(lambda *a, **k: linear_logprobs(*a, impl="triton", **k),
                            hidden, weight, b, targets, temperature=1.0, entropy=False)


def test_triton_and_torch_agree():
    hidden, weight, b, targets = make_inputs(37, 24, 1000, torch.float32, ignore=(3,))
    a = run(triton_impl(SMALL_TILES), hidden, weight, b, targets, entropy=True, temperature=1.3)
    c = run(torch_impl, hidden, weight, b, targets, entropy=True, temperature=1.3)
    for x, y in zip(a, c):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    hidden, weight, _, targets = make_inputs(2, 4, 5, torch.float32)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        linear_logprobs(hidden, weight, targets, impl="triton")
    with pytest.raises(ValueError, match="fp64"):
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        linear_logprobs(hidden.double(), weight.double(), targets, impl="triton")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_triton_gpu_matches_torch(dtype):
    hidden, weight, b, targets = make_inputs(300, 256, 5000, dtype, ignore=range(0, 300, 7))
    cuda = [t.cuda() for t in (hidden, weight, b, targets)]
    ours = run(lambda *a, **k: linear_logprobs(*a, impl="triton", **k), *cuda[:3], cuda[3],
               entropy=True, temperature=0.7)
    exact = truth(hidden, weight, b, targets, temperature=0.7, entropy=True)
    lowp = lowp_torch(*cuda[:3], cuda[3], temperature=0.7, entropy=True)
    # fp32 runs TF32 tensor cores when torch allows it: the floor covers TF32 rounding.
    assert_budget([o.cpu() for o in ours], [o.cpu() for o in lowp], exact,
                  names_for(True, True), floor=2e-3 if dtype == torch.float32 else 1e-5)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("make,match", [
    (lambda h, w, t: (h[:, :-1], w, t, None), "disagree on H"),
    (lambda h, w, t: (h, w, torch.where(t == t[0], 10, t), None), r"targets must be in \[0, 10\)"),
    (lambda h, w, t: (h, w, torch.full_like(t, -5), None), "found -5"),
    (lambda h, w, t: (h, w, t.float(), None), "integer"),
    (lambda h, w, t: (h, w, t[:-1], None), "targets must have shape"),
    (lambda h, w, t: (h[:0], w, t[:0], None), "empty"),
    (lambda h, w, t: (h, w, t, torch.zeros(3)), "bias must be"),
    (lambda h, w, t: (h.half(), w, t, None), "same dtype"),
    (lambda h, w, t: (h.long(), w.long(), t, None), "floating"),
    (lambda h, w, t: (h[0], w, t[0], None), r"\[N, H\]"),
    (lambda h, w, t: (h.to("meta"), w, t, None), "one device"),
])
def test_bad_inputs_raise_value_error(make, match):
    hidden, weight, _, targets = make_inputs(4, 6, 10, torch.float32, bias=False)
    args = make(hidden, weight, targets)
    with pytest.raises(ValueError, match=match):
        check_linear_inputs(*args)
    with pytest.raises(ValueError, match=match):
        linear_logprobs(args[0], args[1], args[2], bias=args[3])


def test_bad_options_and_types():
    hidden, weight, _, targets = make_inputs(4, 6, 10, torch.float32, bias=False)
    with pytest.raises(ValueError, match="temperature"):
        linear_logprobs(hidden, weight, targets, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        linear_logprobs(hidden, weight, targets, temperature=float("nan"))
    with pytest.raises(ValueError, match="impl"):
        linear_logprobs(hidden, weight, targets, impl="cuda")
    with pytest.raises(TypeError, match="hidden"):
        linear_logprobs(hidden.numpy(), weight, targets)
    with pytest.raises(ValueError, match="meta"):
        linear_logprobs(hidden.to("meta"), weight.to("meta"), targets.to("meta"))


def test_ops_module_imports_without_triton():
    code = ("import sys; sys.modules['triton'] = None; "
            "import stepgrpo_fast.ops.linear_logprobs as m; assert m.triton is None; "
            "import stepgrpo_fast.functional.logprobs")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_naive_oracle_entropy_with_minus_inf_bias_is_finite_and_matches_torch():
    """0 log 0 = 0 in the oracle too: a -inf bias entry (a token the head never emits) used to
    give a NaN entropy (0 * -inf) and its gradient."""
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(6, 8, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(40, 8, generator=g, dtype=torch.float64)
    bias = torch.randn(40, generator=g, dtype=torch.float64)
    bias[[0, 17]] = float("-inf")
    targets = torch.randint(1, 17, (6,), generator=g)
    logp, ent = linear_logprobs_naive(hidden, weight, targets, bias=bias, return_entropy=True,
                                      compute_dtype=torch.float64)
    assert torch.isfinite(ent).all() and torch.isfinite(logp).all()
    (grad,) = torch.autograd.grad(ent.sum(), hidden)
    assert torch.isfinite(grad).all()
    logp_t, ent_t = linear_logprobs(hidden.detach(), weight, targets, bias=bias, return_entropy=True,
                                    impl="torch")
    assert torch.allclose(ent, ent_t, atol=1e-10) and torch.allclose(logp, logp_t, atol=1e-10)
