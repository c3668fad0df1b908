"""The chunking engine of the torch implementations: how [tokens, vocab] logits are cut into
tiles that fit a fixed fp32 workspace, and the iterator over the pieces.

Two tile shapes, one engine (each budget is the workspace the op's measured figures rest on):
    plan_chunks         token x vocab tiles for linear_logprobs (DEFAULT_WORKSPACE_BYTES, 48 MiB
                        for all the tiles of a call): an online logsumexp runs across vocab tiles
    logits_chunk_rows   whole-vocabulary row blocks for linear_grpo_loss (LOGITS_CHUNK_BYTES,
                        160 MiB: 272 rows at V = 151,936, 1,280 at V = 32,768): its single pass
                        needs each row's full softmax before dZ. Sized so that its three GEMMs
                        keep a token dimension of >= 256 rows at a Qwen-size vocabulary: at 56 MiB
                        (96 rows) dW [V, H] was re-read and rewritten 11 times per 1,024 tokens
                        and the call cost 1.6-1.7x its bare GEMMs (docs/benchmarks.md)
The module defaults are read at call time (tests shrink them to force many chunks).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch

DEFAULT_WORKSPACE_BYTES = 48 * 2**20   # one fp32 logits tile (both tiles together with entropy)
DEFAULT_TOKEN_CHUNK = 1024             # rows per chunk: big enough for an efficient CPU GEMM
VOCAB_ALIGN = 256
LOGITS_CHUNK_BYTES = 160 * 2**20       # one [rows, V] fp32 block of the GRPO single pass


def iter_chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """Yield (start, stop) covering range(total) in pieces of at most ``size``."""
    if size <= 0:
        raise ValueError(f"chunk size must be positive, got {size}")
    for start in range(0, total, size):
        yield start, min(start + size, total)


def plan_chunks(n_rows: int, vocab: int, *, workspace_bytes: int | None = None,
                token_chunk: int | None = None, n_tiles: int = 1,
                itemsize: int = 4) -> tuple[int, int]:
    """(rows, cols) of a logits tile so that ``n_tiles`` tiles fit in ``workspace_bytes``.

    None reads the module defaults at call time (DEFAULT_WORKSPACE_BYTES, DEFAULT_TOKEN_CHUNK).
    """
    workspace_bytes = DEFAULT_WORKSPACE_BYTES if workspace_bytes is None else workspace_bytes
    token_chunk = DEFAULT_TOKEN_CHUNK if token_chunk is None else token_chunk
    rows = max(1, min(n_rows, token_chunk))
    cols = workspace_bytes // (n_tiles * itemsize * rows)
    if cols < vocab:
        cols = max(VOCAB_ALIGN, cols // VOCAB_ALIGN * VOCAB_ALIGN)
    return rows, max(1, min(vocab, cols))


def compute_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """Logits are accumulated in fp32 (fp64 for fp64 inputs, e.g. gradcheck)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def logits_chunk_rows(vocab_size: int, budget_bytes: int | None = None) -> int:
    """Rows of a [rows, V] fp32 logits block that fit ``budget_bytes`` (default LOGITS_CHUNK_BYTES;
    at least 8, a multiple of 8)."""
    rows = (budget_bytes or LOGITS_CHUNK_BYTES) // (4 * max(vocab_size, 1))
    return max(8, rows - rows % 8)
