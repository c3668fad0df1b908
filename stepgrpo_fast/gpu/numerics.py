"""GPU numerics checks: the Triton kernels compiled for the card vs float64 references, for
bf16 / fp16 / fp32 inputs, fp32 with TF32 off and on. ``stepgrpo gpu-check`` runs GPU_CHECKS
(``python -m stepgrpo_fast.gpu.numerics`` in a subprocess with TRITON_INTERPRET=0) and
tests/gpu/test_gpu_numerics.py runs the same list under pytest; on a CPU the same checks run in
the Triton interpreter on small shapes.

Error model behind the tolerances: inputs are rounded to the test dtype first and the float64
reference uses the same rounded values, so what is left is the kernels' own error:
  forward   fp32 accumulation of exact 16-bit products, fp32 exp/log: ~1e-6 on O(1) logits;
            TF32 (fp32 inputs, allow_tf32) rounds tl.dot operands to 10-bit mantissas: logits
            err ~ 2^-11 * sqrt(sum (h w)^2) ~ 1e-3 for unit logits.
  backward  dZ is rounded to the input dtype before the dH / dW GEMMs and dH / dW are returned
            in the input dtype: relative error ~ eps(dtype) (bf16 2^-8, fp16 2^-11).
A failed check raises NumericsMismatch (an AssertionError) naming the dtype, output and error.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import traceback
from dataclasses import dataclass, field

import torch

from ..functional.grpo import linear_grpo_loss
from ..functional.logprobs import linear_logprobs
from ..reference.grpo_loss import linear_grpo_loss_naive
from ..reference.linear_logprobs import linear_logprobs_naive

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
          "fp32-tf32": torch.float32}
# Max abs error of logp / entropy, and max relative (max-norm) error of the gradients and loss.
FWD_ATOL = {"bf16": 2e-4, "fp16": 2e-4, "fp32": 2e-4, "fp32-tf32": 2e-2}
GRAD_RTOL = {"bf16": 3e-2, "fp16": 5e-3, "fp32": 1e-4, "fp32-tf32": 3e-2}
# Both ops run their gradient GEMMs on cuBLAS, which follows torch's TF32 switch (fp32-tf32).
GRPO_RTOL = {"bf16": 3e-2, "fp16": 5e-3, "fp32": 1e-4, "fp32-tf32": 3e-2}


class NumericsMismatch(AssertionError):
    """A kernel output is outside its error budget (or has the wrong dtype / is not finite)."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise NumericsMismatch(message)


@contextlib.contextmanager
def tf32_matmul(enabled: bool):
    """Set torch's TF32 matmul switch (read by the launcher) for the block, restore it after."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
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
    """[logp, (entropy)], [dH, dW, (db)] of ``fn`` with fixed random upstream gradients."""
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
                          temperature=0.7) -> None:
    """linear_logprobs(impl="triton") vs the float64 oracle: logp / entropy within FWD_ATOL,
    dH / dW / db within GRAD_RTOL, in the input dtype."""
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
        _require(got.dtype == torch.float32 and bool(torch.isfinite(got).all()),
                 f"{dtype_name} {name}: dtype {got.dtype} or non-finite values")
        err = float((got.double() - want).abs().max())
        _require(err <= FWD_ATOL[dtype_name], f"{dtype_name} {name}: max abs err {err:.3g}")
    for name, got, want in zip(("dH", "dW", "db"), grads, want_grads):
        _require(got.dtype == dtype, f"{dtype_name} {name}: dtype {got.dtype}, want {dtype}")
        err = rel_err(got, want)
        _require(err <= GRAD_RTOL[dtype_name], f"{dtype_name} {name}: rel err {err:.3g}")


def check_linear_grpo_loss(device, dtype_name, *, bias=True, b=3, t=100, h=256, v=5003,
                           temperature=0.7) -> None:
    """linear_grpo_loss(impl="triton") vs linear_grpo_loss_naive in float64: loss, dH, dW, db
    within GRPO_RTOL; old / ref log-probs near the true ones, so some ratios clip."""
    dtype = DTYPES[dtype_name]
    hidden, weight, bias_t, targets = make_problem(b * t, h, v, dtype, device, bias=bias)
    hidden, targets = hidden.view(b, t, h), targets.view(b, t).clamp(min=0)
    g = torch.Generator().manual_seed(3)
    mask = (torch.rand(b, t, generator=g) > 0.2).float().to(device)
    adv = torch.randn(b, generator=g).to(device)
    with torch.no_grad():
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
    _require(abs(float(loss) - float(want)) <= tol * max(1.0, abs(float(want))),
             f"{dtype_name} loss: {float(loss):.6g} vs float64 {float(want):.6g}")
    for name, got, ref_grad in zip(("dH", "dW", "db"), grads, want_grads):
        _require(got.dtype == dtype, f"{dtype_name} {name}: dtype {got.dtype}, want {dtype}")
        err = rel_err(got, ref_grad)
        _require(err <= tol, f"{dtype_name} {name}: rel err {err:.3g}")


@dataclass(frozen=True)
class GpuCheck:
    """One numerics check: ``run(device)`` raises NumericsMismatch when it fails."""

    name: str
    check: object                 # check_linear_logprobs | check_linear_grpo_loss
    dtype_name: str
    tf32: bool = False
    kwargs: dict = field(default_factory=dict)

    def run(self, device: str = "cuda") -> None:
        with tf32_matmul(self.tf32):
            self.check(device, self.dtype_name, **self.kwargs)


_DTYPE_TF32 = (("bf16", False), ("fp16", False), ("fp32", False), ("fp32-tf32", True))
QWEN = {"h": 896, "v": 151_936, "temperature": 1.0}
GPU_CHECKS = (
    *(GpuCheck(f"linear_logprobs-{d}-entropy{int(e)}-bias{int(b)}", check_linear_logprobs, d, tf,
               {"entropy": e, "bias": b})
      for e, b in ((True, True), (False, False)) for d, tf in _DTYPE_TF32),
    *(GpuCheck(f"linear_logprobs-qwen_vocab-{d}", check_linear_logprobs, d, False,
               {"entropy": True, "bias": False, "n": 77, **QWEN}) for d in ("bf16", "fp32")),
    *(GpuCheck(f"linear_grpo_loss-{d}", check_linear_grpo_loss, d, tf) for d, tf in _DTYPE_TF32),
    GpuCheck("linear_grpo_loss-qwen_vocab-bf16", check_linear_grpo_loss, "bf16", False,
             {"bias": False, "b": 2, "t": 40, **QWEN}),
)


def run_checks(checks=GPU_CHECKS, device: str = "cuda", log=print) -> list[dict]:
    """Run every check; one {"name", "ok", "seconds", "error"} per check (a failure or crash of
    one check does not stop the others)."""
    results = []
    for c in checks:
        start = time.perf_counter()
        try:
            c.run(device)
            error = None
        except Exception as exc:  # noqa: BLE001 - every failure is reported, never hidden
            error = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, NumericsMismatch):
                error += "\n" + traceback.format_exc(limit=3)
        results.append({"name": c.name, "ok": error is None,
                        "seconds": round(time.perf_counter() - start, 2), "error": error})
        log(f"{'PASS' if error is None else 'FAIL'} {c.name}"
            + ("" if error is None else f": {error.splitlines()[0]}"))
    return results


def main(argv: list[str] | None = None) -> int:
    """``python -m stepgrpo_fast.gpu.numerics [--json PATH]``: GPU_CHECKS on cuda; exit 1 on a
    failure."""
    parser = argparse.ArgumentParser(prog="python -m stepgrpo_fast.gpu.numerics",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    results = run_checks(device=args.device, log=lambda line: print(line, flush=True))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    failed = sum(not r["ok"] for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
