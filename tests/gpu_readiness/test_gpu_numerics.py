"""GPU numerics (run by `stepgrpo gpu-check` with TRITON_INTERPRET=0): the Triton kernels compiled
for the card vs float64 references, for bf16 / fp16 / fp32 inputs, fp32 with TF32 off and on.

The tests/ops GPU tests cover linear_logprobs in bf16 and fp32 (vs float64) and linear_grpo_loss
in bf16 and fp32 (vs the CPU fp32 path); this file adds fp16 and TF32 for both ops, float64
references for linear_grpo_loss, and the real Qwen vocabulary (V = 151,936) through the
autotuned launch.

Error model behind the tolerances: inputs are rounded to the test dtype first and the float64
reference uses the same rounded values, so what is left is the kernels' own error:
  forward   fp32 accumulation of exact 16-bit products, fp32 exp/log: ~1e-6 on O(1) logits;
            TF32 (fp32 inputs, allow_tf32) rounds tl.dot operands to 10-bit mantissas: logits
            err ~ 2^-11 * sqrt(sum (h w)^2) ~ 1e-3 for unit logits.
  backward  dZ is rounded to the input dtype before the dH / dW GEMMs and dH / dW are returned
            in the input dtype: relative error ~ eps(dtype) (bf16 2^-8, fp16 2^-11).
The CPU test at the bottom runs the same checks in the Triton interpreter (small shapes), so
the helpers are exercised without a GPU.
"""
from __future__ import annotations

import pytest
import torch

from stepgrpo_fast.functional.grpo import linear_grpo_loss
from stepgrpo_fast.functional.logprobs import linear_logprobs
from stepgrpo_fast.reference.grpo_loss import linear_grpo_loss_naive
from stepgrpo_fast.reference.linear_logprobs import linear_logprobs_naive

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
          "fp32-tf32": torch.float32}
# Max abs error of logp / entropy, and max relative (max-norm) error of the gradients and loss.
FWD_ATOL = {"bf16": 2e-4, "fp16": 2e-4, "fp32": 2e-4, "fp32-tf32": 2e-2}
GRAD_RTOL = {"bf16": 3e-2, "fp16": 5e-3, "fp32": 1e-4, "fp32-tf32": 3e-2}
# linear_grpo_loss always runs fp32 in IEEE precision (it ignores torch's TF32 switch).
GRPO_RTOL = {"bf16": 3e-2, "fp16": 5e-3, "fp32": 1e-4, "fp32-tf32": 1e-4}


@pytest.fixture
def tf32(request):
    """Set torch's TF32 matmul switch for the test (read by the launcher), restore it after."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = request.param
    yield request.param
    torch.backends.cuda.matmul.allow_tf32 = old


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def make_problem(n, h, v, dtype, device, *, bias, seed=0):
    """hidden [N, H] ~ N(0, 1), weight [V, H] ~ N(0, 4/H) (logits ~ N(0, 4)), bias [V] | None,
    targets [N] with every 7th token ignored (-100); all in ``dtype`` on ``device``."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g).to(dtype)
    weight = (torch.randn(v, h, generator=g) * 2 / h ** 0.5).to(dtype)
    b = torch.randn(v, generator=g).to(dtype) if bias else None
    targets = torch.randint(0, v, (n,), generator=g)
    targets[::7] = -100
    move = (lambda t: None if t is None else t.to(device))
    return move(hidden), move(weight), move(b), move(targets)


def logprobs_fwd_bwd(fn, hidden, weight, bias, targets, entropy, temperature, seed=1):
    """[logp, (entropy), dH, dW, (db)] of ``fn`` with fixed random upstream gradients."""
    leaves = [t.detach().clone().requires_grad_() for t in (hidden, weight)]
    if bias is not None:
        leaves.append(bias.detach().clone().requires_grad_())
    out = fn(leaves[0], leaves[1], targets, bias=leaves[2] if bias is not None else None,
             temperature=temperature, return_entropy=entropy)
    outs = list(out) if entropy else [out]
    g = torch.Generator().manual_seed(seed)
    ups = [torch.randn(o.shape, generator=g).to(o.device, o.dtype) for o in outs]
    grads = torch.autograd.grad(outs, leaves, ups)
    return [o.detach() for o in outs], list(grads)


def check_linear_logprobs(device, dtype_name, *, entropy, bias, n=300, h=256, v=5003,
                          temperature=0.7):
    dtype = DTYPES[dtype_name]
    hidden, weight, b, targets = make_problem(n, h, v, dtype, device, bias=bias)
    outs, grads = logprobs_fwd_bwd(
        lambda *a, **k: linear_logprobs(*a, impl="triton", **k),
        hidden, weight, b, targets, entropy, temperature)
    to64 = (lambda t: None if t is None else t.double())
    want_outs, want_grads = logprobs_fwd_bwd(
        lambda *a, **k: linear_logprobs_naive(*a, compute_dtype=torch.float64, **k),
        to64(hidden), to64(weight), to64(b), targets, entropy, temperature)
    for name, got, want in zip(("logp", "entropy"), outs, want_outs):
        assert got.dtype == torch.float32 and torch.isfinite(got).all(), name
        err = float((got.double() - want).abs().max())
        assert err <= FWD_ATOL[dtype_name], f"{dtype_name} {name}: max abs err {err:.3g}"
    for name, got, want in zip(("dH", "dW", "db"), grads, want_grads):
        assert got.dtype == dtype, (name, got.dtype)
        err = rel_err(got, want)
        assert err <= GRAD_RTOL[dtype_name], f"{dtype_name} {name}: rel err {err:.3g}"


def check_linear_grpo_loss(device, dtype_name, *, bias=True, b=3, t=100, h=256, v=5003,
                           temperature=0.7):
    dtype = DTYPES[dtype_name]
    hidden, weight, bias_t, targets = make_problem(b * t, h, v, dtype, device, bias=bias)
    hidden, targets = hidden.view(b, t, h), targets.view(b, t).clamp(min=0)
    g = torch.Generator().manual_seed(3)
    mask = (torch.rand(b, t, generator=g) > 0.2).float().to(device)
    adv = torch.randn(b, generator=g).to(device)
    with torch.no_grad():       # old / ref near the true log-probs, so some ratios clip
        logp = linear_logprobs_naive(hidden.double(), weight.double(), targets,
                                     bias=None if bias_t is None else bias_t.double(),
                                     temperature=temperature, compute_dtype=torch.float64)
    old = (logp + 0.3 * torch.randn(b, t, generator=g).to(device, torch.float64)).float()
    ref = (logp + 0.1 * torch.randn(b, t, generator=g).to(device, torch.float64)).float()
    kw = {"old_logp": old, "ref_logp": ref, "beta": 0.04, "temperature": temperature}

    def run(fn, cast):
        leaves = [cast(x).detach().clone().requires_grad_() for x in (hidden, weight)]
        leaves += [cast(bias_t).detach().clone().requires_grad_()] if bias else []
        loss = fn(leaves[0], leaves[1], targets, mask, adv,
                  bias=leaves[2] if bias else None, **kw)[0]
        return loss.detach(), torch.autograd.grad(loss, leaves)

    loss, grads = run(lambda *a, **k: linear_grpo_loss(*a, impl="triton", **k), lambda x: x)
    want, want_grads = run(linear_grpo_loss_naive, lambda x: x.double())
    tol = GRPO_RTOL[dtype_name]
    assert abs(float(loss) - float(want)) <= tol * max(1.0, abs(float(want))), (loss, want)
    for name, got, ref_grad in zip(("dH", "dW", "db"), grads, want_grads):
        assert got.dtype == dtype, (name, got.dtype)
        err = rel_err(got, ref_grad)
        assert err <= tol, f"{dtype_name} {name}: rel err {err:.3g}"


# --------------------------------------------------------------------------------- on the GPU
@pytest.mark.gpu
@pytest.mark.parametrize("tf32,dtype_name", [(False, "bf16"), (False, "fp16"), (False, "fp32"),
                                             (True, "fp32-tf32")], indirect=["tf32"])
@pytest.mark.parametrize("entropy,bias", [(True, True), (False, False)])
def test_linear_logprobs_on_gpu_matches_float64(tf32, dtype_name, entropy, bias):
    check_linear_logprobs("cuda", dtype_name, entropy=entropy, bias=bias)


@pytest.mark.gpu
@pytest.mark.parametrize("tf32,dtype_name", [(False, "bf16"), (False, "fp32")], indirect=["tf32"])
def test_linear_logprobs_on_gpu_qwen_vocab(tf32, dtype_name):
    check_linear_logprobs("cuda", dtype_name, entropy=True, bias=False, n=77, h=896, v=151_936,
                          temperature=1.0)


@pytest.mark.gpu
@pytest.mark.parametrize("tf32,dtype_name", [(False, "bf16"), (False, "fp16"), (False, "fp32"),
                                             (True, "fp32-tf32")], indirect=["tf32"])
def test_linear_grpo_loss_on_gpu_matches_float64(tf32, dtype_name):
    check_linear_grpo_loss("cuda", dtype_name)


@pytest.mark.gpu
def test_linear_grpo_loss_on_gpu_qwen_vocab():
    check_linear_grpo_loss("cuda", "bf16", bias=False, b=2, t=40, h=896, v=151_936,
                           temperature=1.0)


# ------------------------------------------------------------------ the same checks on the CPU
@pytest.mark.parametrize("dtype_name", ["fp16", "fp32"])
def test_checks_pass_in_the_interpreter(dtype_name):
    """The interpreter (conftest: TRITON_INTERPRET=1) runs the same kernels on the CPU. Not bf16:
    Triton 3.9's interpreter returns garbage (~1e10) from tl.dot on bf16 operands, even for a
    bare 16x16 product, so bf16 kernel numerics are testable only on a GPU."""
    check_linear_logprobs("cpu", dtype_name, entropy=True, bias=True, n=40, h=64, v=700)
    check_linear_grpo_loss("cpu", dtype_name, b=2, t=20, h=64, v=700)
