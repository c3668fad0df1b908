"""A reusable fp32 workspace for the CPU row blocks of linear_grpo_loss.

On a CUDA device PyTorch's caching allocator hands the same block back call after call. On the
CPU it does not: a block this size (160 MiB by default) comes from mmap and goes back to the
OS when freed, so every call faults its pages in again while its first GEMM writes them, about
0.23 ms per MiB here (30 ms of a 240 ms call at N = 1,024, H = 256, V = 32,768). The CPU path
therefore keeps its block between calls: one per thread (a thread never shares it), grown when
a call needs more, never larger than MAX_KEPT_BYTES (bigger requests, e.g. the one-sequence
chunks of a very long sequence, get a fresh block that is freed as usual).

``release()`` frees this thread's block (the benchmarks call it before measuring peak memory,
so the block is counted in every figure); ``kept_bytes()`` says what is held.
"""
from __future__ import annotations

import threading

import torch

MAX_KEPT_BYTES = 512 * 2 ** 20
_local = threading.local()


def _kept() -> dict:
    if not hasattr(_local, "blocks"):
        _local.blocks = {}
    return _local.blocks


def block(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A flat tensor of ``numel`` elements (contents undefined): this thread's kept block on
    the CPU when it fits MAX_KEPT_BYTES, else a fresh one."""
    device = torch.device(device)
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    if device.type != "cpu" or nbytes > MAX_KEPT_BYTES:
        return torch.empty(numel, dtype=dtype, device=device)
    kept = _kept()
    held = kept.get(dtype)
    if held is None or held.numel() < numel:
        kept.pop(dtype, None)             # free the old block before allocating the new one
        held = kept[dtype] = torch.empty(numel, dtype=dtype, device=device)
    return held[:numel]


def release() -> None:
    """Free this thread's kept blocks."""
    _kept().clear()


def kept_bytes() -> int:
    """Bytes this thread holds between calls."""
    return sum(t.numel() * t.element_size() for t in _kept().values())
