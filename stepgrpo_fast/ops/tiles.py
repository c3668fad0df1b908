"""Tile policy of the fused forward kernel (linear_logprobs' _fwd_kernel, also the no-grad
path of linear_grpo_loss), in one place: the tile tables, the architecture and dot classes that
index them, the autotune key's token-count class, the L2 grouping and the vocab-split rule that
fills the GPU. (The row passes of the gradient path have their own fixed tiles,
ops/head_rows.py:ROW_TILES; their GEMMs are cuBLAS.)

Tile dimensions (the constexpr names of the kernel and of ops/logits_tile.py): BLOCK_N tokens x
BLOCK_V vocabulary columns, BLOCK_H the hidden-size step; INPUT_PRECISION the tl.dot precision
of fp32 inputs.
The tables record how they were chosen (compile checks for sm_80 / sm_90 with Triton 3.9.0,
stepgrpo_fast/gpu/aot.py); the launcher (linear_logprobs.py) and the AOT launch registry
(stepgrpo_fast/gpu/launches.py) read them from here. Torch only: imports without Triton.
"""
from __future__ import annotations

import torch


# -------------------------------------------------------------------- linear_logprobs tiles
# Interpreter defaults: the interpreter costs ~2 ms per block iteration, so use big tiles.
INTERPRETER_BLOCKS = {"BLOCK_N": 64, "BLOCK_V": 1024, "BLOCK_H": 128}
# GPU tiles: (BLOCK_N, BLOCK_V, BLOCK_H, num_warps, num_stages) per (architecture class, dot
# class), best first. Each list is the autotuner's candidates on that GPU and its first entry the
# fixed tile when autotuning is off (a launch that names some tile options gets the rest from it).
#   architecture: "sm90" = compute capability 9.x (H100/H200); "sm80" = every other GPU (A100;
#                 unknown architectures fall back to this list).
#   dot class:    "16bit" = fp16/bf16 inputs, "tf32" = fp32 with torch's TF32 switch on,
#                 "ieee" = fp32 without TF32 (FMA matmuls on CUDA cores, no tensor cores).
# Chosen 2026-11-25 with Triton 3.9.0 by compiling for sm_80 / sm_90 on a CPU machine
# (stepgrpo_fast/gpu/aot.py; tests/gpu/test_gpu_aot.py re-checks every entry):
# every tile compiles for every flag set (bias, entropy / gradient flags) with no register
# spills (cuobjdump STACK 0, i.e. no STL/LDL), within the architecture's shared memory (163 KB
# sm_80, 227 KB sm_90), and 16-bit / TF32 tiles use tensor cores (mma.sync / wgmma). Largest
# spill-free tiles kept. What spilled: the forward's 128-row tiles on sm_90 (8-250 B; 64 x 256
# at 8 warps needs ~180 registers); "ieee" (FMA operands live in registers) at BLOCK_H 64 and
# 128x128 (0.2-15 KB), and erratically (per flag set, or only at N % 16 == 0) at several 64-wide
# tiles (8-24 B), hence only tiles clean at every flag set and both N cases; the TF32 backward at
# 128x128x32 with 3 stages needs 192 KB of shared memory on sm_80. A new Triton can change all
# of this: rerun the compile check. Every forward BLOCK_V divides AUTOTUNE_V_ALIGN.
# 2026-12 (issue #30: grouped grid order, -inf guards): the TF32 tiles 64x256x64 w8 s2 (sm_90)
# and 64x128x64 w4 s3 (sm_80) began to spill 8 B with entropy and were dropped.
FWD_TILES = {
    ("sm90", "16bit"): ((64, 256, 64, 8, 3), (64, 256, 32, 8, 4), (64, 128, 32, 4, 4)),
    ("sm90", "tf32"): ((64, 256, 32, 8, 3), (64, 128, 32, 8, 3)),
    ("sm90", "ieee"): ((64, 128, 32, 8, 3), (128, 64, 32, 8, 2), (64, 128, 16, 8, 2)),
    ("sm80", "16bit"): ((128, 128, 64, 8, 3), (64, 256, 64, 8, 3), (64, 128, 64, 4, 3)),
    ("sm80", "tf32"): ((128, 128, 64, 8, 3), (64, 256, 32, 8, 3)),
    ("sm80", "ieee"): ((64, 128, 32, 8, 3), (128, 64, 32, 8, 2), (64, 128, 16, 8, 2)),
}
ARCH_CLASSES = ("sm80", "sm90")
DOT_CLASSES = ("16bit", "tf32", "ieee")
AUTOTUNE_V_ALIGN = 256      # the forward's vocab split is a multiple of this (of every BLOCK_V)


def arch_class(capability: tuple[int, int]) -> str:
    """CUDA compute capability (major, minor) -> "sm90" for 9.x, else "sm80" (the fallback)."""
    return "sm90" if capability[0] == 9 else "sm80"


def dot_class(dtype: torch.dtype, input_precision: str) -> str:
    """"16bit" for fp16/bf16 inputs, else the fp32 tl.dot precision ("tf32" or "ieee")."""
    if dtype in (torch.float16, torch.bfloat16):
        return "16bit"
    if input_precision not in ("tf32", "ieee"):
        raise ValueError(f"input_precision must be 'tf32' or 'ieee', got {input_precision!r}")
    return input_precision


def tile_dict(shape: tuple) -> dict:
    """(BLOCK_N, BLOCK_V, BLOCK_H, num_warps, num_stages) -> launcher keyword dict."""
    keys = ("BLOCK_N", "BLOCK_V", "BLOCK_H", "num_warps", "num_stages")
    return dict(zip(keys, shape))


def gpu_default_blocks(kind: str, arch: str, dot: str) -> dict:
    """The fixed tile of the fused forward ("fwd") for an (architecture class, dot class)
    without autotune."""
    if kind != "fwd":
        raise ValueError(f"only the fused forward has GPU tiles, got kind={kind!r}")
    return tile_dict(FWD_TILES[(arch, dot)][0])


# --------------------------------------------------------------------------- autotune keys
def n_size_class(n: int) -> int:
    """The autotune key's token-count class: 0 up to 1,024 tokens, 1 to 8,192, 2 to 65,536,
    3 beyond (a config tuned on 64 tokens is not reused for 16,384)."""
    return sum(n > bound for bound in (1024, 8192, 65536))


L2_GROUP_BYTES = 16 * 2**20   # h rows a group of token blocks keeps in L2 (H100: 50 MB L2)


def group_tokens(h: int, itemsize: int) -> int:
    """Tokens whose hidden rows (h x itemsize bytes each) fill L2_GROUP_BYTES, as a multiple
    of 256 (at least 256): the fused forward sweeps the vocabulary with this many tokens at
    once, so h is read from HBM about once and W once per group."""
    tokens = L2_GROUP_BYTES // max(1, h * itemsize)
    return max(256, tokens - tokens % 256)


# ------------------------------------------------------------------------------- vocab splits
SPLIT_WAVES = 4        # programs per SM the vocab split aims at
H100_SMS = 132         # the SM count the AOT registry sizes vocab splits for (H100 SXM)


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (1 elsewhere)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def vocab_splits(token_blocks: int, vocab_blocks: int, sms: int) -> int:
    """Programs across the vocabulary per token block: enough that token_blocks x splits fills
    ~SPLIT_WAVES programs per SM, at most one per vocab block, at least 1."""
    want = -(-SPLIT_WAVES * sms // max(token_blocks, 1))
    return max(1, min(vocab_blocks, want))


def v_split_columns(token_blocks: int, vocab: int, block_v: int, sms: int) -> int:
    """linear_logprobs' forward: vocab columns per program (a multiple of block_v)."""
    v_blocks = -(-vocab // block_v)
    return -(-v_blocks // vocab_splits(token_blocks, v_blocks, sms)) * block_v
