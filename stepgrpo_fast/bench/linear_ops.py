"""Cases and providers of the two fused linear ops: what ``stepgrpo bench``, ``python -m bench``
and ``stepgrpo gpu-check`` all time, so their numbers compare.

A case is (op, N tokens, H hidden, V vocab, dtype, device). Inputs (make_inputs): hidden
[B, T, H] ~ N(0, 1) with T = min(N, 256), weight [V, H] ~ N(0, 1/H) (logits of unit scale),
targets [B, T]; for the GRPO loss also an all-ones mask (every token counts: the same work as
the bare GEMMs), advantages [B] ~ N(0, 1), old log-probs -log V + N(0, 0.25) [B, T] and
reference log-probs old + N(0, 0.01), beta 0.04, loss_type "grpo". Every provider computes the
same thing from the same inputs and exposes::

    forward() -> out        the op with autograd recording (a training forward)
    backward(out)           gradients for hidden and weight (into .grad)
    clear()                 drop .grad (untimed, before every call)

Providers:
    ours   stepgrpo_fast.linear_logprobs / linear_grpo_loss, impl="auto" (chunked torch on the
           CPU, Triton kernels on CUDA)
    naive  the plain oracles of stepgrpo_fast.reference with the logits GEMM in the input dtype
           (what an LM head gives): [N, V] logits, log_softmax in fp32, gather, autograd
    liger  linear_logprobs: LigerFusedLinearCrossEntropyLoss (logp = -CE; Triton only, so it is
           recorded as unavailable on a CPU); linear_grpo_loss: LigerFusedLinearGRPOLoss
           (compiled=False on the CPU, compiled on CUDA)
    cce    linear_logprobs only: Cut Cross-Entropy's linear_cross_entropy (logp = -CE; CUDA,
           when ``cut_cross_entropy`` is installed); not in PROVIDERS (gpu_validate asks for it)
    bare_matmuls  the floor: z = h W^T (fwd), z W and z^T h (bwd), nothing else
The log-prob backward seeds every provider with d(sum logp) = 1 per token.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

OPS = ("linear_logprobs", "linear_grpo_loss")
PROVIDERS = ("ours", "naive", "liger", "bare_matmuls")
BASELINE = "naive"
BETA = 0.04
SEQ_LEN = 256     # T of the [B, T, H] hidden states (shorter N: one sequence of N tokens)


@dataclass(frozen=True)
class LinearCase:
    """One shape. hidden is [B, T, H] with B * T = N (T = min(N, SEQ_LEN)); weight [V, H]."""

    op: str
    n: int
    h: int
    v: int
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    sweep: str = ""  # "", "N" or "V"

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {self.op!r}")
        if min(self.n, self.h, self.v) < 1:
            raise ValueError(f"N, H, V must be positive, got {self.n}, {self.h}, {self.v}")

    @property
    def bt(self) -> tuple[int, int]:
        t = min(self.n, SEQ_LEN)
        if self.n % t:
            raise ValueError(f"N={self.n} must be a multiple of T={t} (hidden is [B, T, H])")
        return self.n // t, t

    def grad_bytes(self) -> int:
        """Bytes of dH and dW, the op's own outputs in a backward pass."""
        item = torch.empty((), dtype=self.dtype).element_size()
        return (self.n * self.h + self.v * self.h) * item


@dataclass
class Provider:
    forward: Callable[[], object]
    backward: Callable[[object], None]
    clear: Callable[[], None]
    grads_in_forward: bool = False  # computes dH and dW during forward (ours GRPO, Liger)
    tensors: dict = field(default_factory=dict)


def make_inputs(case: LinearCase, seed: int = 0) -> dict:
    """Leaf tensors requiring grad (hidden [B,T,H], weight [V,H]) and the GRPO side inputs."""
    b, t = case.bt
    g = torch.Generator().manual_seed(seed)
    dev, dt = case.device, case.dtype
    hidden = torch.randn(b, t, case.h, generator=g).to(dev, dt).requires_grad_()
    weight = torch.randn(case.v, case.h, generator=g) / case.h ** 0.5
    weight = weight.to(dev, dt).requires_grad_()
    targets = torch.randint(0, case.v, (b, t), generator=g).to(dev)
    # old near the log-probs of unit-scale logits (~ -log V), so some ratios clip and some do not
    old = (-math.log(case.v) + 0.5 * torch.randn(b, t, generator=g)).to(dev)
    return {
        "hidden": hidden,
        "weight": weight,
        "targets": targets,
        "mask": torch.ones(b, t, device=dev),  # every token counts: same work as the bare GEMMs
        "adv": torch.randn(b, generator=g).to(dev),
        "old": old,
        "ref": old + 0.1 * torch.randn(b, t, generator=g).to(dev),
    }


def _clear(x: dict) -> Callable[[], None]:
    def clear():
        x["hidden"].grad = None
        x["weight"].grad = None
    return clear


def _scalar_backward(out) -> None:
    out.backward()


def _ours(case: LinearCase, x: dict) -> Provider:
    from stepgrpo_fast import linear_grpo_loss, linear_logprobs

    if case.op == "linear_logprobs":
        def forward():
            return linear_logprobs(x["hidden"], x["weight"], x["targets"], impl="auto").sum()
        return Provider(forward, _scalar_backward, _clear(x))

    def forward():
        loss, _ = linear_grpo_loss(x["hidden"], x["weight"], x["targets"], x["mask"], x["adv"],
                                   old_logp=x["old"], ref_logp=x["ref"], beta=BETA,
                                   loss_type="grpo", impl="auto")
        return loss
    return Provider(forward, _scalar_backward, _clear(x), grads_in_forward=True)


def _naive(case: LinearCase, x: dict) -> Provider:
    from stepgrpo_fast.reference.grpo_loss import linear_grpo_loss_naive
    from stepgrpo_fast.reference.linear_logprobs import linear_logprobs_naive

    if case.op == "linear_logprobs":
        def forward():
            return linear_logprobs_naive(x["hidden"], x["weight"], x["targets"],
                                         logits_dtype=case.dtype).sum()
        return Provider(forward, _scalar_backward, _clear(x))

    def forward():
        loss, _ = linear_grpo_loss_naive(x["hidden"], x["weight"], x["targets"], x["mask"],
                                         x["adv"], old_logp=x["old"], ref_logp=x["ref"],
                                         beta=BETA, loss_type="grpo", logits_dtype=case.dtype)
        return loss
    return Provider(forward, _scalar_backward, _clear(x))


def _liger(case: LinearCase, x: dict) -> Provider:
    if case.op == "linear_logprobs":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        ce = LigerFusedLinearCrossEntropyLoss(reduction="sum")
        h2 = lambda: x["hidden"].reshape(-1, case.h)

        def forward():
            return -ce(x["weight"], h2(), x["targets"].reshape(-1))
        return Provider(forward, _scalar_backward, _clear(x), grads_in_forward=True)

    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

    module = LigerFusedLinearGRPOLoss(beta=BETA, compiled=x["hidden"].is_cuda,
                                      use_ref_model=True, loss_type="grpo")

    def forward():
        loss, _ = module(x["hidden"], x["weight"], x["targets"], x["mask"], x["adv"],
                         ref_per_token_logps=x["ref"], old_per_token_logps=x["old"])
        return loss
    return Provider(forward, _scalar_backward, _clear(x), grads_in_forward=True)


def _cce(case: LinearCase, x: dict) -> Provider:
    """Cut Cross-Entropy (apple/ml-cross-entropy, ``pip install cut-cross-entropy``): log-probs
    only (logp = -CE, summed); it has no GRPO loss."""
    if case.op != "linear_logprobs":
        raise NotImplementedError("CCE has no fused GRPO loss (log-probs only)")
    from cut_cross_entropy import linear_cross_entropy

    def forward():
        return -linear_cross_entropy(x["hidden"].reshape(-1, case.h), x["weight"],
                                     x["targets"].reshape(-1), reduction="sum")
    return Provider(forward, _scalar_backward, _clear(x))


def _bare(case: LinearCase, x: dict) -> Provider:
    h = x["hidden"].detach().reshape(-1, case.h)
    w = x["weight"].detach()

    def forward():
        return h @ w.T

    def backward(z):
        z @ w      # dH-shaped GEMM
        z.T @ h    # dW-shaped GEMM
    return Provider(forward, backward, lambda: None)


_FACTORIES = {"ours": _ours, "naive": _naive, "liger": _liger, "bare_matmuls": _bare, "cce": _cce}


def build_provider(name: str, case: LinearCase, x: dict) -> Provider:
    if name not in _FACTORIES:
        raise ValueError(f"provider must be one of {tuple(_FACTORIES)}, got {name!r}")
    p = _FACTORIES[name](case, x)
    p.tensors = x
    return p


def mode_call(p: Provider, mode: str) -> tuple[Callable, Callable]:
    """(fn, setup) timing ``mode`` of provider ``p``: fwd = forward only (autograd recording),
    bwd = backward only (the forward runs in the untimed setup), full = forward + backward."""
    if mode == "fwd":
        return (lambda _: p.forward()), p.clear
    if mode == "bwd":
        def setup():
            p.clear()
            return p.forward()
        return p.backward, setup
    if mode == "full":
        return (lambda _: p.backward(p.forward())), p.clear
    raise ValueError(f"mode must be 'fwd', 'bwd' or 'full', got {mode!r}")


def unavailable_reason(name: str, op: str, device: str) -> str | None:
    """Run provider ``name`` once on a tiny case; why it cannot run here, or None."""
    try:
        case = LinearCase(op, 8, 16, 64, device=device)
        p = build_provider(name, case, make_inputs(case, seed=3))
        p.backward(p.forward())
    except Exception as exc:  # noqa: BLE001 - any failure means "not available on this device"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    return None


def max_disagreement(op: str, device: str, provider: str = "ours") -> float:
    """Max |provider - naive| over the output and dH, dW on a small case (sanity before timing)."""
    case = LinearCase(op, 64, 32, 512, device=device)
    results = []
    for name in (provider, "naive"):
        x = make_inputs(case, seed=1)
        p = build_provider(name, case, x)
        out = p.forward()
        p.backward(out)
        results.append([out.detach().float(), x["hidden"].grad.float(), x["weight"].grad.float()])
    return max((a - b).abs().max().item() for a, b in zip(*results))


# ------------------------------------------------------------- the GRPO family, side by side
# linear_grpo_loss options (TRL 1.16 names) timed against plain grpo on the same inputs:
#     python -m stepgrpo_fast.bench.linear_ops --algorithms [--n 1024 --h 896 --v 151936 --rounds 3]
ALGORITHM_VARIANTS = {
    "grpo": {},
    "grpo_kl_uncorrected": {"use_bias_correction_kl": False},
    "dapo": {"loss_type": "dapo", "num_items_in_batch": 4096},
    "cispo": {"loss_type": "cispo", "epsilon_high": 5.0},
    "sapo": {"loss_type": "sapo"},
    "luspo_sequence": {"loss_type": "luspo", "importance_sampling_level": "sequence"},
    "gspo_sequence": {"importance_sampling_level": "sequence"},
    "delta": {"delta": 1.5},
    "entropy_coef": {"entropy_coef": 0.01},
    "top_entropy_quantile": {"top_entropy_quantile": 0.2},
    "off_policy_mask": {"off_policy_mask_threshold": 0.5, "sampling": True},
    "is_ratio": {"isr": True},
}


def algorithm_provider(case: LinearCase, x: dict, variant: str) -> Provider:
    """linear_grpo_loss(impl="auto") with ALGORITHM_VARIANTS[variant] on the inputs of ``x``."""
    from stepgrpo_fast import linear_grpo_loss

    kw = dict(ALGORITHM_VARIANTS[variant])
    if kw.pop("sampling", False):
        kw["sampling_logp"] = x["old"] + 0.05
    if kw.pop("isr", False):
        kw["importance_sampling_ratio"] = torch.full_like(x["old"], 0.9)

    def forward():
        loss, _ = linear_grpo_loss(x["hidden"], x["weight"], x["targets"], x["mask"], x["adv"],
                                   old_logp=x["old"], ref_logp=x["ref"], beta=BETA, impl="auto", **kw)
        return loss
    return Provider(forward, _scalar_backward, _clear(x), grads_in_forward=True)


def time_algorithms(n: int, h: int, v: int, rounds: int, device: str = "cpu", variants=None,
                    log=print) -> dict[str, dict]:
    """Full (forward + backward) p50 wall seconds and p50 CPU seconds of this process (user +
    system, all threads: less sensitive to other processes on a shared machine) of every variant,
    interleaved round by round, and their ratios to "grpo". -> {variant: {"p50_s", "cpu_p50_s",
    "ratio", "cpu_ratio"}}."""
    from .timing import interleaved_wall_and_cpu

    case = LinearCase("linear_grpo_loss", n, h, v, device=device)
    x = make_inputs(case)
    names = list(variants or ALGORITHM_VARIANTS)
    if "grpo" not in names:
        names.insert(0, "grpo")
    calls = {}
    for name in names:
        p = algorithm_provider(case, x, name)
        fn, setup = mode_call(p, "full")
        calls[name] = (fn, setup)
        fn(setup())  # warm-up
    p50 = interleaved_wall_and_cpu(calls, rounds=rounds, device=device)
    out = {name: {"p50_s": p50[name]["wall"], "cpu_p50_s": p50[name]["cpu"]} for name in names}
    for name, r in out.items():
        r["ratio"] = r["p50_s"] / out["grpo"]["p50_s"]
        r["cpu_ratio"] = r["cpu_p50_s"] / out["grpo"]["cpu_p50_s"]
        log(f"  {name:22s} wall p50 {r['p50_s']:8.3f} s  x{r['ratio']:.3f}   "
            f"cpu p50 {r['cpu_p50_s']:8.3f} s  x{r['cpu_ratio']:.3f} of grpo")
    return out


GEMMS_OF_OP = {"linear_grpo_loss": 3, "linear_logprobs": 4}   # what each op runs (full mode)


def gemm_floor_ratio(op: str, n: int, h: int, v: int, rounds: int = 5, log=print) -> dict:
    """CPU speed bar of issue #30: p50 of ``ours`` (forward + backward, impl="auto" = the
    chunked torch path on a CPU) over the p50 of the GEMMs it runs, done bare on whole
    matrices (grpo: h W^T, z W, z^T h; log-probs: the logits GEMM twice, then z W, z^T h),
    interleaved round by round; wall and CPU-time p50s.
    -> {"ours_s", "gemms_s", "ratio", "ours_cpu_s", "gemms_cpu_s", "cpu_ratio"}."""
    from .timing import interleaved_wall_and_cpu

    case = LinearCase(op, n, h, v)
    x = make_inputs(case)
    hid, w = x["hidden"].detach().reshape(-1, h), x["weight"].detach()

    def gemms(_):
        z = hid @ w.T
        for _ in range(GEMMS_OF_OP[op] - 3):
            z = hid @ w.T
        z @ w
        z.T @ hid
    fn, setup = mode_call(build_provider("ours", case, x), "full")
    fn(setup())                                          # warm-up
    p50 = interleaved_wall_and_cpu({"ours": (fn, setup), "gemms": (gemms, None)}, rounds=rounds)
    out = {"ours_s": p50["ours"]["wall"], "gemms_s": p50["gemms"]["wall"],
           "ours_cpu_s": p50["ours"]["cpu"], "gemms_cpu_s": p50["gemms"]["cpu"]}
    out["ratio"] = out["ours_s"] / out["gemms_s"]
    out["cpu_ratio"] = out["ours_cpu_s"] / out["gemms_cpu_s"]
    log(f"{op} N={n} H={h} V={v}: ours {out['ours_s']:.3f} s, its {GEMMS_OF_OP[op]} GEMMs "
        f"{out['gemms_s']:.3f} s: {out['ratio']:.2f}x wall, {out['cpu_ratio']:.2f}x CPU time")
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m stepgrpo_fast.bench.linear_ops")
    ap.add_argument("--gemm-floor", action="store_true",
                    help="ours vs the GEMMs it runs (the CPU speed bars), both ops")
    ap.add_argument("--algorithms", action="store_true")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--h", type=int, default=896)
    ap.add_argument("--v", type=int, default=151_936)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default=None, help="comma-separated subset of ALGORITHM_VARIANTS")
    a = ap.parse_args()
    if a.gemm_floor:
        for name in OPS:
            gemm_floor_ratio(name, a.n, a.h, a.v, a.rounds)
        raise SystemExit(0)
    if not a.algorithms:
        ap.error("pass --algorithms or --gemm-floor")
    time_algorithms(a.n, a.h, a.v, a.rounds, variants=a.variants.split(",") if a.variants else None)
