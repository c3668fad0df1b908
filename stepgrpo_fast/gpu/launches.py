"""The launch matrix: every Triton kernel launch our dispatcher or autotuner can make.

Each builder calls the plan functions of one launcher in stepgrpo_fast/ops (ops/launch_plan.py:
the same functions the real launch runs) with stand-in tensors of the case's shapes on the
"meta" device and an explicit H100-sized ``Target`` (sm_80 / sm_90, H100_SMS SMs, TF32 switch),
and turns each plan into ``Launch`` records: the kernel, mock arguments (dtype + pointer address
only; a view's address is its offset in the plan's buffer), constexprs and launch options, one
record per config for an autotuner. Argument order, dummy pointers, buffer views, tiles, vocab
splits and flags therefore come from the launcher itself. aot.py binds them with Triton's own
argument specialiser for a CUDA target, which turns them into exactly the (signature,
constexprs, divisibility attrs, options) a real launch would compile.

Matrix dimensions (MATRIX): input dtype (fp32 with TF32 on and off, fp16, bf16), hidden size H,
vocabulary V, entropy on/off, bias on/off, temperature, and every triton.Config of the
autotuners. linear_logprobs has one autotuner per (architecture class, dot class)
(ops/tiles.py FWD_TILES / BWD_TILES): its tiles are compiled for that architecture
only (Launch.arch; "sm80" -> sm_80, "sm90" -> sm_90), read from the Autotuner objects themselves,
so a new tile is picked up here. The fixed tile used when autotuning is off is the first entry
of each list, so it is covered too. linear_grpo_loss uses the fixed tiles of
ops/tiles.py:gpu_blocks on every architecture.

What changes the compiled binary: the constexprs, the argument dtypes, and Triton's
specialisation of runtime ints and pointers -- an int is compiled as "divisible by 16" (or as
the constant 1 when it equals 1), a pointer as "16-byte aligned". Runtime ints such as H and V
therefore matter only through those hints: H in {896, 1536, 3584, 4096} and V = 151,936 are all
multiples of 16, so the four H values map onto one specialisation per configuration.
Temperature is a runtime fp32 scalar (1/T), which Triton never specialises.

Held at one representative value (each would otherwise multiply the matrix; say so when
reading the table):
  * token count N (and M, the counted tokens): TOKENS = 4097, i.e. N % 16 != 0, the case 15 of
    16 batch sizes hit and the one without alignment hints on N or on the [splits, N] partial
    buffers; the N % 16 == 0 specialisation (DIVISIBLE_TOKENS, "N%16=0" in the table) is
    compiled too, for every tile, in the "full" tier.
  * targets are int64 token ids; every input of the op requires grad (hidden, weight, and the
    bias when there is one): frozen-weight launches (COMPUTE_DW / NEED_DW off) only drop a GEMM.
  * backward of linear_logprobs: "with entropy" = gradients flow into log-probs and entropy,
    "without" = into log-probs only.

TIERS: every launch carries one.
  "ci"   everything at N = TOKENS: every tile of every autotuner list at every flag set
         (bias x entropy) and dtype, fp32 without TF32 included, and every linear_grpo_loss /
         grpo_loss launch;
  "full" adds the N % 16 == 0 specialisations.
The CI test compiles "ci"; `stepgrpo kernel-table` (the README table) compiles "full".
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from ..ops.launch_plan import LaunchPlan, gpu_target
from ..ops.tiles import H100_SMS

HIDDEN_SIZES = (896, 1536, 3584, 4096)      # Qwen2/2.5(-VL) 0.5B, 1.5B, 7B, and 4096-wide heads
VOCAB_SIZE = 151_936                         # Qwen2 vocabulary
TEMPERATURES = (1.0, 0.7)
TOKENS = 4097                                # representative N (N % 16 != 0); see module doc
DIVISIBLE_TOKENS = 4096                      # the N % 16 == 0 specialisation ("full" tier)
TOKEN_COEF_BLOCKS = (64, 128, 256, 512, 1024)
ARCH_OF_CLASS = {"sm80": 80, "sm90": 90}     # ops/tiles.py architecture classes
# (label, torch dtype, torch.backends.cuda.matmul.allow_tf32): fp32 follows torch's TF32 switch
DTYPES = (("bf16", torch.bfloat16, False), ("fp16", torch.float16, False),
          ("fp32", torch.float32, False), ("fp32-tf32", torch.float32, True))
TIERS = ("ci", "full")
MATRIX = {"dtype": [d[0] for d in DTYPES], "H": list(HIDDEN_SIZES), "V": [VOCAB_SIZE],
          "entropy": [False, True], "bias": [False, True], "temperature": list(TEMPERATURES)}
BASE_ADDRESS = 1 << 20                       # of every stand-in allocation (16-byte aligned)


class MockPtr:
    """Stands in for a tensor argument: Triton's specialiser reads only dtype and data_ptr()."""

    def __init__(self, dtype: torch.dtype, address: int = BASE_ADDRESS):
        self.dtype = dtype
        self._address = address

    def data_ptr(self) -> int:
        return self._address

    def __repr__(self) -> str:
        return f"MockPtr({self.dtype}, {self._address:#x})"


@dataclass
class Launch:
    """One launch: ``kernel`` (module, attribute) called with ``args`` plus ``constexprs`` and
    ``options`` (num_warps, num_stages, ...). ``case`` describes the matrix row(s)."""
    module: str
    kernel: str
    args: tuple
    constexprs: dict
    options: dict
    case: dict
    dtype: str
    matmul: bool                 # tl.dot-heavy: tensor cores expected for 16-bit / TF32 inputs
    autotuned: bool              # one of several autotune configs (each must still fit)
    tags: tuple = field(default_factory=tuple)
    tier: str = "ci"             # "ci": compiled by the CI test; "full": kernel-table only
    n_configs: int = 1           # configs of the autotuner this launch belongs to
    arch: int | None = None      # compile only for this sm (its tiles are per architecture)


def _config_options(config) -> tuple[dict, dict]:
    """triton.Config -> (its constexprs, its launch options)."""
    kw = config.all_kwargs()
    tiles = dict(config.kwargs)
    return tiles, {k: v for k, v in kw.items() if k not in tiles and v is not None}


def _label(tiles: dict, options: dict) -> str:
    t = "/".join(str(v) for v in tiles.values())
    return f"{t} w{options.get('num_warps', 4)} s{options.get('num_stages', 3)}"


def _plan_label(constexprs: dict, options: dict) -> str:
    """Tiled kernels: "BN/BV/BH w s"; elementwise ones: "BLOCK=b" (+ " wN" with options)."""
    if "BLOCK" in constexprs:
        return f"BLOCK={constexprs['BLOCK']}" + (f" w{options['num_warps']}" if options else "")
    if "BLOCK_R" in constexprs:          # row passes: BLOCK_R rows x BLOCK_V columns, C rows
        return f"rows {constexprs['BLOCK_R']}x{constexprs['BLOCK_V']} w{options['num_warps']}"
    return _label({k: constexprs[k] for k in ("BLOCK_N", "BLOCK_V", "BLOCK_H")}, options)


def _meta(*shape, dtype=torch.float32) -> torch.Tensor:
    """A stand-in tensor: shape and dtype only, no memory."""
    return torch.empty(shape, dtype=dtype, device="meta")


def stand_in(arg):
    """A plan argument as the specialiser sees it: a tensor -> MockPtr of its dtype at its byte
    offset within its allocation modulo 16 (the specialiser reads only 16-byte alignment, so a
    view at offset 9,216 and a fresh tensor are the same binary; views of one buffer whose
    offsets differ in alignment are not), anything else unchanged."""
    if isinstance(arg, torch.Tensor):
        offset = arg.storage_offset() * arg.element_size()
        return MockPtr(arg.dtype, BASE_ADDRESS + offset % 16)
    return arg


def plan_launches(plan: LaunchPlan, case: dict, dtype: str, *, matmul: bool, tags: tuple = (),
                  tier: str = "ci", arch: int | None = None):
    """Launch records of one plan: one per config of an autotuner (its tiles and launch
    options over the plan's flags), else the plan's own constexprs and options."""
    module, kernel = plan.name
    args = tuple(stand_in(a) for a in plan.args)
    if plan.autotuned:
        configs = plan.kernel.configs
        for config in configs:
            tiles, options = _config_options(config)
            yield Launch(module, kernel, args, {**plan.constexprs, **tiles}, options,
                         {**case, "config": _label(tiles, options)}, dtype, matmul=matmul,
                         autotuned=len(configs) > 1, tags=tags, tier=tier,
                         n_configs=len(configs), arch=arch)
    else:
        yield Launch(module, kernel, args, dict(plan.constexprs), dict(plan.options),
                     {**case, "config": _plan_label(plan.constexprs, plan.options)}, dtype,
                     matmul=matmul, autotuned=False, tags=tags, tier=tier, arch=arch)


# ----------------------------------------------------------------------------- linear_logprobs
def _logprobs_cases():
    for (name, dtype, tf32), h, ent, bias, temp in itertools.product(
            DTYPES, HIDDEN_SIZES, (False, True), (False, True), TEMPERATURES):
        yield {"dtype": name, "H": h, "V": VOCAB_SIZE, "entropy": ent, "bias": bias,
               "temperature": temp}, dtype, tf32


def _logprobs_plans(n: int):
    """(plan, case, sm) of the fused forward over the matrix, per architecture class: the
    launcher's own plan on an H100-sized GPU of that class (its autotuner's tiles)."""
    from ..ops import linear_logprobs as ops

    for sm in ARCH_OF_CLASS.values():
        for case, dtype, tf32 in _logprobs_cases():
            target = gpu_target(divmod(sm, 10), H100_SMS, allow_tf32=tf32)
            h, ent = case["H"], case["entropy"]
            hidden, weight = _meta(n, h, dtype=dtype), _meta(VOCAB_SIZE, h, dtype=dtype)
            targets = _meta(n, dtype=torch.int64)
            bias = _meta(VOCAB_SIZE, dtype=dtype) if case["bias"] else None
            plan = ops.forward_plan(hidden, weight, targets, bias, case["temperature"], ent,
                                    target=target)
            yield plan, case, sm


def logprobs_forward_launches(n: int = TOKENS):
    """ops/linear_logprobs.py:forward_plan (the fused forward: no-grad log-probs of
    linear_logprobs, the two-pass scoring of linear_grpo_loss): every tile of the autotuner of
    each (architecture, dot class) -- the fixed default tile is the first of them."""
    for plan, case, sm in _logprobs_plans(n):
        yield from plan_launches(plan, case, case["dtype"], matmul=True, arch=sm)


def logprobs_divisible_launches(n: int = DIVISIBLE_TOKENS):
    """Every forward tile at N % 16 == 0 (the "full" tier)."""
    for launch in logprobs_forward_launches(n):
        launch.tags, launch.tier = ("N%16=0",), "full"
        yield launch


# ------------------------------------------------------------------ row passes (gradient path)
# The gradient path of both fused ops: cuBLAS GEMMs (not compiled here) and the two row passes
# of ops/head_rows.py over each chunk's fp32 [C, V] logits. Same tiles on every architecture.
GRPO_TARGET = gpu_target((9, 0), H100_SMS)


def chunk_sizes(n: int, vocab: int, dtype) -> list[int]:
    """The distinct chunk lengths of N counted tokens at the H100 budget (full chunks and the
    last, shorter one): what the launchers pass as C."""
    from ..ops.chunking import iter_chunks
    from ..ops.head_chunks import chunk_rows

    size = chunk_rows(n, vocab, dtype, GRPO_TARGET.chunk_budget, with_grad=True)
    return sorted({stop - start for start, stop in iter_chunks(n, size)})


def row_pass_launches(n: int = TOKENS, tags: tuple = (), tier: str = "ci"):
    """ops/head_rows.py: stats_plan (entropy on / off) and grad_plan (entropy gradient on / off;
    per-row vectors fresh or views of the stats pass's outputs, as the launchers pass them),
    for each dtype, bias and temperature, at every chunk length of N tokens."""
    from ..ops import head_rows as ops

    v = VOCAB_SIZE
    for (name, dtype, _tf32), bias, temp in itertools.product(DTYPES[:3], (False, True),
                                                              TEMPERATURES):
        b = _meta(v, dtype=dtype) if bias else None
        for c in chunk_sizes(n, v, dtype):
            z, dz, tgt = _meta(c, v), _meta(c, v, dtype=dtype), _meta(c, dtype=torch.int64)
            case = {"dtype": name, "V": v, "bias": bias, "temperature": temp, "C": c}
            for ent in (False, True):
                stats = ops.stats_plan(z, b, tgt, temp, ent, target=GRPO_TARGET)
                yield from plan_launches(stats, {**case, "entropy": ent}, name, matmul=False,
                                         tags=tags, tier=tier)
                lse, _, ent_out = stats.outputs
                for per_row in ((lse, ent_out), (_meta(c), _meta(c))):
                    g_ent = _meta(c) if ent else None
                    grad = ops.grad_plan(z, b, tgt, temp, per_row[0], _meta(c), g_ent,
                                         per_row[1] if ent else None, dz, target=GRPO_TARGET)
                    yield from plan_launches(grad, {**case, "entropy": ent}, name, matmul=False,
                                             tags=tags, tier=tier)

# ----------------------------------------------------------------------------------- grpo_loss
def grpo_token_launches(n: int = TOKENS):
    """ops/grpo_loss.py: grpo_token_plan (fixed TOKEN_BLOCK), group_advantages_plans (batch std,
    group advantages)."""
    from ..ops import grpo_loss as ops

    for has_old, has_ref in itertools.product((False, True), repeat=2):
        plan = ops.grpo_token_plan(_meta(n), _meta(n), _meta(n), _meta(n) if has_old else None,
                                   _meta(n) if has_ref else None, 0.04, 0.2, 0.2)
        yield from plan_launches(plan, {}, "fp32", matmul=False)
    # rewards of 8 groups: the block is next_power_of_2(group_size) (num_generations >= 2)
    for group_size in (2, 4, 8, 16, 32, 64):
        for scale in ("none", "group", "batch"):
            plans = ops.group_advantages_plans(_meta(8 * group_size), group_size, scale, 1e-4)
            yield from plan_launches(plans[-1], {}, "fp32", matmul=False)
    # scale="batch": the batch std's block is min(4096, next_power_of_2(rewards))
    for block in (64, 256, 1024, 4096):
        plans = ops.group_advantages_plans(_meta(block - 3), block - 3, "batch", 1e-4)
        yield from plan_launches(plans[0], {}, "fp32", matmul=False)


def all_launches():
    """The whole launch matrix (Launch records, not yet deduplicated)."""
    yield from logprobs_forward_launches()
    yield from logprobs_divisible_launches()
    yield from row_pass_launches()
    yield from row_pass_launches(DIVISIBLE_TOKENS, tags=("N%16=0",), tier="full")
    yield from grpo_token_launches()
