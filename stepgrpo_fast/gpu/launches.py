"""The launch matrix: every Triton kernel launch our dispatcher or autotuner can make.

Each builder mirrors one launcher in stepgrpo_fast/ops (same argument order, same dummy
pointers, same constexprs) and yields ``Launch`` records: the kernel, mock arguments (dtype +
pointer address only), constexprs and launch options. aot.py binds them with Triton's own
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

from ..ops.tiles import H100_SMS, v_split_columns, vocab_splits

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


class MockPtr:
    """Stands in for a tensor argument: Triton's specialiser reads only dtype and data_ptr()."""

    def __init__(self, dtype: torch.dtype, address: int = 1 << 20):
        self.dtype = dtype
        self._address = address

    def data_ptr(self) -> int:
        return self._address


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


def _fp32_buffers(n: int, count: int, splits: int) -> list[MockPtr]:
    """Views of one torch.empty(count, splits, n) fp32 buffer (unbind(0)): offsets matter."""
    return [MockPtr(torch.float32, (1 << 20) + k * splits * n * 4) for k in range(count)]


# ----------------------------------------------------------------------------- linear_logprobs
def _logprobs_cases():
    for (name, dtype, tf32), h, ent, bias, temp in itertools.product(
            DTYPES, HIDDEN_SIZES, (False, True), (False, True), TEMPERATURES):
        yield {"dtype": name, "H": h, "V": VOCAB_SIZE, "entropy": ent, "bias": bias,
               "temperature": temp}, dtype, tf32


def _v_split(n: int, block_n: int, block_v: int) -> int:
    """The forward launcher's vocab split (ops/tiles.py:v_split_columns) on an H100 (132 SMs)."""
    return v_split_columns(-(-n // block_n), VOCAB_SIZE, block_v, H100_SMS)


def _tile_lists(kind: str, configs):
    """(architecture class, sm, dot class) -> the configs a GPU of that class can pick for
    ``kind`` ("fwd" / "bwd"): its autotuner's list (whose first entry is also the fixed tile
    when autotuning is off), or ``configs`` for every class when given."""
    from ..ops import linear_logprobs as ops

    for arch in ops.ARCH_CLASSES:
        for dot in ops.DOT_CLASSES:
            yield arch, ARCH_OF_CLASS[arch], dot, (
                ops.TUNED_KERNELS[kind, arch, dot].configs if configs is None else configs)


def _logprobs_launches(kind: str, n: int, configs, make_args, make_flags):
    """Launch records of one linear_logprobs kernel over the matrix, per architecture class."""
    from ..ops import linear_logprobs as ops

    lists = {(arch, dot): (sm, cfgs) for arch, sm, dot, cfgs in _tile_lists(kind, configs)}
    for arch in ops.ARCH_CLASSES:
        for case, dtype, tf32 in _logprobs_cases():
            precision = "tf32" if tf32 else "ieee"
            sm, cfgs = lists[arch, ops.dot_class(dtype, precision)]
            args = make_args(case, dtype)
            flags = {**make_flags(case), "INPUT_PRECISION": precision}
            for config in cfgs:
                tiles, options = _config_options(config)
                yield Launch("stepgrpo_fast.ops.linear_logprobs", f"_{kind}_kernel", args,
                             {**flags, **tiles}, options,
                             {**case, "config": _label(tiles, options)}, case["dtype"],
                             matmul=True, autotuned=len(cfgs) > 1, n_configs=len(cfgs), arch=sm)


def logprobs_forward_launches(n: int = TOKENS, configs=None):
    """ops/linear_logprobs.py:linear_logprobs_forward_triton: every tile of the autotuner of each
    (architecture, dot class) -- the fixed default tile is the first of them."""
    from ..ops import linear_logprobs as ops

    v_split = _v_split(n, 128, ops.AUTOTUNE_V_ALIGN)
    splits = -(-VOCAB_SIZE // v_split)

    def make_args(case, dtype):
        h = case["H"]
        io = MockPtr(dtype)                   # hidden, weight, and the bias (hidden if none)
        return (io, io, io, MockPtr(torch.int64), *_fp32_buffers(n, 4, splits),
                n, VOCAB_SIZE, h, v_split, h, 1, h, 1, 1.0 / case["temperature"])

    return _logprobs_launches("fwd", n, configs, make_args, lambda case: {
        "HAS_BIAS": case["bias"], "RETURN_ENTROPY": case["entropy"]})


def logprobs_backward_launches(n: int = TOKENS, configs=None):
    """ops/linear_logprobs.py:linear_logprobs_backward_triton, all gradients wanted."""
    f32 = MockPtr(torch.float32)

    def make_args(case, dtype):
        h = case["H"]
        io = MockPtr(dtype)
        bias = io if case["bias"] else f32                # or_dummy: a 1-element fp32 buffer
        ent = f32                                         # entropy (saved) or the dummy: fp32 both
        return (io, io, bias, MockPtr(torch.int64), f32, ent, f32, f32, f32, f32, f32,
                n, VOCAB_SIZE, h, h, 1, h, 1, 1.0 / case["temperature"])

    return _logprobs_launches("bwd", n, configs, make_args, lambda case: {
        "HAS_BIAS": case["bias"], "HAS_GRAD_LOGP": True, "HAS_GRAD_ENT": case["entropy"],
        "COMPUTE_DH": True, "COMPUTE_DW": True, "COMPUTE_DB": case["bias"], "GROUP_N": 8})


def logprobs_divisible_launches(n: int = DIVISIBLE_TOKENS):
    """Every forward / backward tile at N % 16 == 0 (the "full" tier)."""
    for launch in itertools.chain(logprobs_forward_launches(n), logprobs_backward_launches(n)):
        launch.tags, launch.tier = ("N%16=0",), "full"
        yield launch


# ---------------------------------------------------------------------------- linear_grpo_loss
def grpo_linear_launches(m: int = TOKENS, tags: tuple = (), tier: str = "ci"):
    """ops/linear_grpo_loss.py:linear_grpo_loss_triton: lse pass, token coefficients, gradient,
    at the GPU tiles of each input dtype (ops.gpu_blocks; the same on every architecture)."""
    from ..ops import linear_grpo_loss as ops

    f32, i64 = MockPtr(torch.float32), MockPtr(torch.int64)
    mod = "stepgrpo_fast.ops.linear_grpo_loss"
    splits = 1
    for (name, dtype, _tf32), h, bias, temp in itertools.product(
            DTYPES[:3], HIDDEN_SIZES, (False, True), TEMPERATURES):
        cfg = ops.gpu_blocks(dtype)
        bm, bv = cfg["BLOCK_N"], cfg["BLOCK_V"]
        m_blocks, v_blocks = -(-m // bm), -(-VOCAB_SIZE // bv)
        splits = vocab_splits(m_blocks, v_blocks, H100_SMS)   # the launcher's rule on an H100
        per_split = -(-v_blocks // splits)
        splits = -(-v_blocks // per_split)
        # fp32 -> "ieee" always (this op ignores torch's TF32 switch); 16-bit -> "tf32" (unused)
        precision = "ieee" if dtype == torch.float32 else "tf32"
        case = {"dtype": name, "H": h, "V": VOCAB_SIZE, "entropy": False, "bias": bias,
                "temperature": temp}
        io = MockPtr(dtype)
        b_arg = io                                        # the bias, or hidden as a dummy
        inv_t = 1.0 / temp
        common = {"HAS_BIAS": bias, "INPUT_PRECISION": precision, "BLOCK_N": bm, "BLOCK_V": bv}
        # HAS_ENT: the entropy variants (entropy_coef != 0 or top_entropy_quantile < 1)
        for ent in (False, True):
            ent_case = {**case, "entropy": ent}
            lse_c = {**common, "BLOCK_H": cfg["BLOCK_H"], "HAS_ENT": ent}
            lse_o = {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]}
            yield Launch(mod, "_lse_partial_kernel",
                         (io, io, b_arg, i64, i64, f32, f32, f32, f32, m, VOCAB_SIZE, h, inv_t, per_split),
                         lse_c, lse_o, {**ent_case, "config": _label(
                             {k: lse_c[k] for k in ("BLOCK_N", "BLOCK_V", "BLOCK_H")}, lse_o)},
                         name, matmul=True, autotuned=False, tags=tags, tier=tier)
            grad_c = {**common, "BLOCK_H": cfg["BLOCK_H_GRAD"], "NEED_DH": True, "NEED_DW": True,
                      "NEED_DB": bias, "HAS_ENT": ent}
            grad_o = {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages_grad"]}
            yield Launch(mod, "_grad_tile_kernel",
                         (io, io, b_arg, i64, i64, f32, f32, f32, f32, f32, f32, f32, m, VOCAB_SIZE, h,
                          inv_t),
                         grad_c, grad_o, {**ent_case, "config": _label(
                             {k: grad_c[k] for k in ("BLOCK_N", "BLOCK_V", "BLOCK_H")}, grad_o)},
                         name, matmul=True, autotuned=False, tags=tags, tier=tier)
    # BLOCK = min(1024, next_power_of_2(M)): 1024 from M = 513 tokens on, smaller below.
    for block, has_old, has_ref in itertools.product(TOKEN_COEF_BLOCKS if not tags else (1024,),
                                                     (False, True), (False, True)):
        rows = m if block == 1024 else block - 1
        yield _small(mod, "_token_coef_kernel",
                     (f32, f32, f32, i64, f32, f32, f32, f32, f32, f32, f32, rows, splits,
                      0.04, 0.2, 0.2, 1.0),
                     {"HAS_OLD": has_old, "HAS_REF": has_ref, "BLOCK": block}, tags, tier,
                     {"num_warps": ops.token_coef_warps(block)})


def _small(module, kernel, args, constexprs, tags=(), tier="ci", options=None):
    """An elementwise / reduction kernel: fp32 only, default launch options unless given."""
    options = options or {}
    label = f"BLOCK={constexprs['BLOCK']}" + (f" w{options['num_warps']}" if options else "")
    return Launch(module, kernel, args, constexprs, options, {"config": label},
                  "fp32", matmul=False, autotuned=False, tags=tags, tier=tier)


# ----------------------------------------------------------------------------------- grpo_loss
def grpo_token_launches(n: int = TOKENS):
    """ops/grpo_loss.py: token loss (fixed TOKEN_BLOCK), batch std, group advantages."""
    from ..ops import grpo_loss as ops

    f32 = MockPtr(torch.float32)
    mod = "stepgrpo_fast.ops.grpo_loss"
    for has_old, has_ref in itertools.product((False, True), repeat=2):
        yield _small(mod, "_grpo_token_kernel", (f32,) * 7 + (n, 0.04, 0.2, 0.2),
                     {"HAS_OLD": has_old, "HAS_REF": has_ref, "BLOCK": ops.TOKEN_BLOCK})
    # rewards of G groups: the block is next_power_of_2(group_size) (num_generations >= 2) and,
    # for scale="batch", min(4096, next_power_of_2(rewards)) for the batch std.
    for group_size in (2, 4, 8, 16, 32, 64):
        for scale in (0, 1, 2):
            yield _small(mod, "_group_advantages_kernel", (f32, f32, f32, group_size, 1e-4),
                         {"SCALE": scale, "BLOCK": group_size})
    for block in (64, 256, 1024, 4096):
        yield _small(mod, "_batch_std_kernel", (f32, f32, block - 3), {"BLOCK": block})


def all_launches():
    """The whole launch matrix (Launch records, not yet deduplicated)."""
    yield from logprobs_forward_launches()
    yield from logprobs_backward_launches()
    yield from logprobs_divisible_launches()
    yield from grpo_linear_launches()
    yield from grpo_linear_launches(DIVISIBLE_TOKENS, tags=("N%16=0",), tier="full")
    yield from grpo_token_launches()
