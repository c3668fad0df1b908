"""GPU numerics (also run by `stepgrpo gpu-check`, from the package: stepgrpo_fast.gpu.numerics):
the Triton kernels compiled for the card vs float64 references, for bf16 / fp16 / fp32 inputs,
fp32 with TF32 off and on. The checks and their error model live in the package; this file runs
numerics.GPU_CHECKS under pytest, so pytest and gpu-check run the same list.

The tests/ops GPU tests cover linear_logprobs in bf16 and fp32 (vs float64) and linear_grpo_loss
in bf16 and fp32 (vs the CPU fp32 path); these add fp16 and TF32 for both ops, float64
references for linear_grpo_loss, and the real Qwen vocabulary (V = 151,936) through the
autotuned launch. The CPU test at the bottom runs the same checks in the Triton interpreter
(small shapes), so the helpers are exercised without a GPU.
"""
from __future__ import annotations

import pytest

from stepgrpo_fast.gpu.numerics import (
    GPU_CHECKS,
    NumericsMismatch,
    check_linear_grpo_loss,
    check_linear_logprobs,
    run_checks,
)


def _matrix(name: str) -> list[tuple[str, bool, dict]]:
    return [(c.dtype_name, c.tf32, c.kwargs) for c in GPU_CHECKS if c.check.__name__ == name]


def test_gpu_checks_are_the_matrix_of_the_gpu_tests():
    """The list gpu-check runs: both ops at bf16 / fp16 / fp32 / fp32-tf32 (TF32 on only for
    the last), log-probs with and without entropy + bias, and the Qwen vocabulary."""
    lp = _matrix("check_linear_logprobs")
    dtypes = [("bf16", False), ("fp16", False), ("fp32", False), ("fp32-tf32", True)]
    assert [(d, tf) for d, tf, kw in lp if "n" not in kw] == dtypes * 2
    assert {(kw["entropy"], kw["bias"]) for _, _, kw in lp if "n" not in kw} == {(True, True),
                                                                                 (False, False)}
    assert [(d, kw["v"]) for d, _, kw in lp if "n" in kw] == [("bf16", 151_936), ("fp32", 151_936)]
    grpo = _matrix("check_linear_grpo_loss")
    assert [(d, tf) for d, tf, kw in grpo if not kw] == dtypes
    assert [(d, kw["v"]) for d, _, kw in grpo if kw] == [("bf16", 151_936)]
    assert len({c.name for c in GPU_CHECKS}) == len(GPU_CHECKS)


# --------------------------------------------------------------------------------- on the GPU
@pytest.mark.gpu
@pytest.mark.parametrize("check", GPU_CHECKS, ids=lambda c: c.name)
def test_gpu_check(check):
    check.run("cuda")


# ------------------------------------------------------------------ the same checks on the CPU
@pytest.mark.parametrize("dtype_name", ["fp16", "fp32"])
def test_checks_pass_in_the_interpreter(dtype_name):
    """The interpreter (conftest: TRITON_INTERPRET=1) runs the same kernels on the CPU. Not bf16:
    Triton 3.9's interpreter returns garbage (~1e10) from tl.dot on bf16 operands, even for a
    bare 16x16 product, so bf16 kernel numerics are testable only on a GPU."""
    check_linear_logprobs("cpu", dtype_name, entropy=True, bias=True, n=40, h=64, v=700)
    check_linear_grpo_loss("cpu", dtype_name, b=2, t=20, h=64, v=700)


def test_a_failing_check_is_reported_not_raised(monkeypatch):
    """run_checks (what gpu-check runs) reports a mismatch per check and goes on."""
    import stepgrpo_fast.gpu.numerics as numerics

    monkeypatch.setitem(numerics.GRPO_RTOL, "fp32", 0.0)      # no error budget: must fail
    checks = [c for c in GPU_CHECKS if c.name == "linear_grpo_loss-fp32"]
    small = [type(c)(c.name, c.check, c.dtype_name, c.tf32, {"b": 2, "t": 20, "h": 64, "v": 700})
             for c in checks]
    lines = []
    (result,) = run_checks(small, device="cpu", log=lines.append)
    assert not result["ok"] and result["error"].startswith("NumericsMismatch: fp32")
    assert lines == [f"FAIL linear_grpo_loss-fp32: {result['error']}"]
    with pytest.raises(NumericsMismatch, match="fp32"):
        small[0].run("cpu")
