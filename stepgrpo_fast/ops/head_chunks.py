"""Token chunks of the LM-head ops' Triton path: the memory budget, the GEMMs, the step list.

Both fused ops (linear_logprobs with gradients, linear_grpo_loss) run, per chunk of C counted
tokens:
    logits   z = h_c W^T                      GEMM into one reused fp32 [C, V] buffer
    row pass ops/head_rows.py                 online softmax statistics, log-probs, entropy;
                                              then dZ in the compute dtype ([C, V] buffer 2)
    dH_c = dZ W                               GEMM, fp32 result
    dW  += dZ^T h_c                           GEMM accumulating into ONE fp32 [V, H] buffer
No GEMM output is ever shared between programs: there is no atomic read-modify-write, and the
same inputs give bit-identical gradients (cuBLAS is deterministic on one stream; the row passes
own their rows).

Chunk size (``chunk_rows``): the largest C (a multiple of 64 from 128 rows on) whose buffers,
C V (4 + itemsize) bytes with gradients (the fp32 logits + dZ), C V 4 bytes without, fit the
budget. Default budgets (DEFAULT_BUDGET_BYTES) by device:
    sm_90 (H100 / H200)    2 GiB   e.g. V = 151,936 bf16: C = 2,304 (2.0 GiB)
    sm_80 and other CUDA   1 GiB   C = 1,152
    CPU (the interpreter)  64 MiB  (tests pass far smaller budgets to force many chunks)
A budget too small for one row is a ValueError naming it.

GEMMs (``gemm``): cuBLAS through torch. On CUDA, 16-bit operands give fp32 results directly
(torch's ``out_dtype``: fp32 accumulate, fp32 out, dW accumulated in place with beta = 1); fp32
operands follow torch's TF32 switch. Elsewhere (the CPU, where ``out_dtype`` does not exist)
16-bit operands are widened to fp32 first: exact products, fp32 accumulation -- the GPU's maths.
Every GEMM of the Triton path goes through ``gemm`` (tests record it), every row pass through
launch_plan.launch.

``steps``: the work list of one call (GEMM shapes and the row passes' HBM bytes) from the same
``chunk_rows``; gpu/perf_model.py prices it. Torch only: imports without Triton.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

GIB = 2**30
DEFAULT_BUDGET_BYTES = {"sm90": 2 * GIB, "sm80": GIB, "cpu": 64 * 2**20}
ROW_ALIGN = 64


def default_budget(device: torch.device | str, capability: tuple | None = None) -> int:
    """The [C, V] buffer budget of a device (DEFAULT_BUDGET_BYTES; ``capability`` overrides
    the one read from a CUDA device)."""
    device = torch.device(device)
    if device.type != "cuda":
        return DEFAULT_BUDGET_BYTES["cpu"]
    if capability is None:
        capability = torch.cuda.get_device_capability(device)
    return DEFAULT_BUDGET_BYTES["sm90" if capability[0] == 9 else "sm80"]


def row_bytes(vocab: int, dtype: torch.dtype, with_grad: bool) -> int:
    """Bytes of the [C, V] buffers per token row: fp32 logits (+ dZ in ``dtype``)."""
    item = torch.empty((), dtype=dtype).element_size()
    return vocab * (4 + (item if with_grad else 0))


def chunk_rows(n_rows: int, vocab: int, dtype: torch.dtype, budget_bytes: int,
               with_grad: bool = True) -> int:
    """Rows per chunk: the most that fit ``budget_bytes`` (a multiple of ROW_ALIGN from 2 x
    ROW_ALIGN on), at most ``n_rows`` (at least 1)."""
    per_row = row_bytes(vocab, dtype, with_grad)
    rows = int(budget_bytes) // per_row
    if rows < 1:
        raise ValueError(f"chunk budget {budget_bytes} B is below one token row of the [C, V] "
                         f"buffers ({per_row} B at V = {vocab}, {dtype}); raise budget_bytes")
    if rows >= 2 * ROW_ALIGN:
        rows -= rows % ROW_ALIGN
    return max(1, min(rows, n_rows))


class Buffers:
    """The per-call [C, V] buffers: fp32 logits and (with gradients) dZ in the compute dtype."""

    def __init__(self, rows: int, vocab: int, dtype: torch.dtype, device, with_grad: bool):
        self.logits = torch.empty(rows, vocab, dtype=torch.float32, device=device)
        self.dz = torch.empty(rows, vocab, dtype=dtype, device=device) if with_grad else None

    def view(self, rows: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.logits[:rows], None if self.dz is None else self.dz[:rows]


# ------------------------------------------------------------------------------------ GEMMs
_OUT_DTYPE_OK: dict = {}


def _cuda_out_dtype(a: torch.Tensor) -> bool:
    """Whether torch's ``out_dtype`` GEMMs exist on this CUDA build (probed once)."""
    key = a.device.index
    if key not in _OUT_DTYPE_OK:
        try:
            x = torch.ones(16, 16, dtype=a.dtype, device=a.device)
            acc = torch.ones(16, 16, dtype=torch.float32, device=a.device)
            torch.addmm(acc, x, x, out_dtype=torch.float32, out=acc)
            _OUT_DTYPE_OK[key] = bool(acc[0, 0] == 17)
        except (RuntimeError, TypeError):
            _OUT_DTYPE_OK[key] = False
    return _OUT_DTYPE_OK[key]


def gemm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, accumulate: bool = False) -> None:
    """out (fp32) = a @ b, or out += a @ b with ``accumulate``; a, b in the input dtype."""
    if a.dtype == torch.float32 or a.dtype == torch.float64:
        if accumulate:
            out.addmm_(a, b)
        else:
            torch.mm(a, b, out=out)
        return
    if a.is_cuda and _cuda_out_dtype(a):
        if accumulate:
            torch.addmm(out, a, b, out_dtype=torch.float32, out=out)
        else:
            torch.mm(a, b, out_dtype=torch.float32, out=out)
        return
    if a.is_cuda:      # an old torch without out_dtype: 16-bit result, widened
        prod = torch.mm(a, b).float()
    else:              # CPU: widen the operands (exact products, fp32 accumulation)
        prod = torch.mm(a.float(), b.float())
    if accumulate:
        out.add_(prod)
    else:
        out.copy_(prod)


# --------------------------------------------------------------------------- the work list
@dataclass(frozen=True)
class Step:
    """One piece of work: a GEMM (m x k @ k x n, ``flops``) or a row pass; ``bytes``: HBM
    traffic (operands read once, results written, accumulators read and written)."""
    kind: str            # "gemm" | "rows" | "fused"
    name: str
    flops: float
    bytes: float


def _gemm_step(name, m, n, k, in_item, out_item, accumulate=False):
    traffic = (m * k + k * n) * in_item + m * n * out_item * (2 if accumulate else 1)
    return Step("gemm", name, 2.0 * m * n * k, float(traffic))


def steps(op: str, n: int, h: int, v: int, dtype: torch.dtype, budget_bytes: int, *,
          entropy: bool = False, with_grad: bool = True, bias: bool = False) -> list[Step]:
    """The work of one forward + backward (``with_grad``) of ``op`` at N counted tokens:
    "linear_grpo_loss" (gradients formed in the forward: 3 GEMMs per chunk) or
    "linear_logprobs" (forward: logits GEMM + stats; backward: logits GEMM + dZ + 2 GEMMs).
    Without gradients linear_logprobs is the fused forward kernel (one "fused" step)."""
    item = torch.empty((), dtype=dtype).element_size()
    if not with_grad:
        return [Step("fused", "fused forward (h, W tiles; no [C, V] buffer)", 2.0 * n * h * v,
                     float(v * h * item + n * h * item))]
    rows = chunk_rows(n, v, dtype, budget_bytes, with_grad=True)
    if op not in ("linear_grpo_loss", "linear_logprobs"):
        raise ValueError(f"op must be linear_logprobs or linear_grpo_loss, got {op!r}")
    b_bytes = v * item if bias else 0
    forward, backward = [], []
    for start in range(0, n, rows):
        c = min(rows, n - start)
        logits = _gemm_step(f"logits [{c}x{v}] fp32", c, v, h, item, 4)
        stats = Step("rows", "row stats (read fp32 logits)", 0.0, float(c * v * 4 + b_bytes))
        grad = [Step("rows", "row dZ (read fp32 logits, write dZ)", 0.0,
                     float(c * v * (4 + item) + b_bytes)),
                _gemm_step("dH = dZ W", c, h, v, item, 4),
                _gemm_step("dW += dZ^T h (fp32)", v, h, c, item, 4, accumulate=start > 0)]
        if bias:
            grad.append(Step("rows", "db = sum dZ", 0.0, float(c * v * item)))
        if op == "linear_grpo_loss":        # one pass: the gradient formed in the forward
            forward += [logits, stats, *grad]
        else:                               # forward over all chunks, then the backward
            forward += [logits, stats]
            backward += [logits, *grad]
    del entropy            # the entropy rides in the same passes (no extra bytes at this scale)
    return forward + backward


def bare_steps(n: int, h: int, v: int, dtype: torch.dtype) -> list[Step]:
    """The floor: the lm_head's three GEMMs in the input dtype (z = h W^T, z W, z^T h)."""
    item = torch.empty((), dtype=dtype).element_size()
    return [_gemm_step("z = h W^T", n, v, h, item, item), _gemm_step("dH = z W", n, h, v, item, item),
            _gemm_step("dW = z^T h", v, h, n, item, item)]
