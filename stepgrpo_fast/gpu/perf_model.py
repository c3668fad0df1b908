"""Performance model of the two fused LM-head ops at the GRPO shape, from their launch plans.

    python -m stepgrpo_fast.gpu.perf_model [--card h100|a100] [--n 8192 --h 4096 --v 151936]

The work list is ops/head_chunks.py:steps -- the chunk size the launchers use (the card's
default [C, V] budget), each chunk's GEMM shapes and the row passes' HBM bytes -- priced on a
card's published dense bf16 peak and HBM bandwidth (CARDS), with these efficiency assumptions:
    GEMM_EFFICIENCY  0.70  cuBLAS bf16 GEMMs of these sizes reach ~65-75% of the dense peak;
                           the bare GEMMs get the same factor, so the ratio does not hinge on it
    HBM_EFFICIENCY   0.80  streaming row passes reach ~80% of the HBM bandwidth
    FUSED_EFFICIENCY 0.55  the Triton fused forward's tl.dot (no-grad scoring only)
    LAUNCH_S         8 us  per small launch, LAUNCHES_PER_CHUNK = 40 of them per chunk (the
                           per-token GRPO maths on [C] vectors, index copies, casts)
A step costs max(FLOPs / (peak x efficiency), bytes / (bandwidth x HBM efficiency)): GEMMs are
compute-bound at these shapes (the fp32 dW accumulate included), row passes bandwidth-bound.
The floor ("bare") is the lm_head's three GEMMs in bf16 (z = h W^T, z W, z^T h), priced alike.
The prediction is a model, not a measurement: scripts/gpu_validate.sh measures both.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch

from ..ops.head_chunks import Step, bare_steps, chunk_rows, default_budget, steps

GEMM_EFFICIENCY = 0.70
HBM_EFFICIENCY = 0.80
FUSED_EFFICIENCY = 0.55
LAUNCH_S = 8e-6                  # one small launch (latency-bound)
LAUNCHES_PER_CHUNK = 40
CHUNK_OVERHEAD_S = LAUNCH_S * LAUNCHES_PER_CHUNK
GRPO_SHAPE = {"n": 8192, "h": 4096, "v": 151_936}
BARS = {"linear_grpo_loss": 1.2, "linear_logprobs": 1.6}


@dataclass(frozen=True)
class Card:
    name: str
    peak_flops: float          # dense bf16 tensor-core FLOP/s
    bandwidth: float           # HBM bytes/s
    capability: tuple


CARDS = {"h100": Card("H100 SXM", 989e12, 3.35e12, (9, 0)),
         "a100": Card("A100", 312e12, 2.0e12, (8, 0))}


def step_seconds(step: Step, card: Card) -> float:
    eff = {"gemm": GEMM_EFFICIENCY, "fused": FUSED_EFFICIENCY}.get(step.kind)
    mem = step.bytes / (card.bandwidth * HBM_EFFICIENCY)
    return mem if eff is None else max(step.flops / (card.peak_flops * eff), mem)


def predict(op: str, card: Card, n: int, h: int, v: int, dtype=torch.bfloat16, *,
            entropy: bool = False) -> dict:
    """Predicted forward + backward seconds of ``op`` and of the bare GEMMs, their ratio."""
    budget = default_budget("cuda", capability=card.capability)
    work = steps(op, n, h, v, dtype, budget, entropy=entropy)
    rows = chunk_rows(n, v, dtype, budget, with_grad=True)
    chunks = -(-n // rows)
    ours = sum(step_seconds(s, card) for s in work) + chunks * CHUNK_OVERHEAD_S
    bare = sum(step_seconds(s, card) for s in bare_steps(n, h, v, dtype))
    gemm_eq = sum(s.flops for s in work if s.kind == "gemm") / (2.0 * n * h * v)
    row_bytes = sum(s.bytes for s in work if s.kind == "rows")
    return {"op": op + (" (entropy)" if entropy else ""), "card": card.name, "N": n, "H": h,
            "V": v, "chunk_rows": rows, "chunks": chunks, "budget_gib": budget / 2**30,
            "gemm_equivalents": gemm_eq, "row_pass_gb": row_bytes / 1e9,
            "predicted_ms": ours * 1e3, "bare_ms": bare * 1e3, "ratio": ours / bare,
            "bar": BARS[op]}


def fused_forward(card: Card, n: int, h: int, v: int, dtype=torch.bfloat16) -> dict:
    """The no-grad fused forward (reference log-probs) against one bare logits GEMM."""
    (step,) = steps("linear_logprobs", n, h, v, dtype, 1, with_grad=False)
    ours = step_seconds(step, card)
    bare = step_seconds(bare_steps(n, h, v, dtype)[0], card)
    return {"predicted_ms": ours * 1e3, "bare_ms": bare * 1e3, "ratio": ours / bare}


def model_table(card_key: str = "h100", n: int = GRPO_SHAPE["n"], h: int = GRPO_SHAPE["h"],
                v: int = GRPO_SHAPE["v"]) -> list[dict]:
    card = CARDS[card_key]
    return [predict("linear_grpo_loss", card, n, h, v),
            predict("linear_logprobs", card, n, h, v, entropy=True)]


def render(rows: list[dict]) -> str:
    head = ["op", "card", "N x H x V", "chunk C (budget)", "GEMM-eq", "row passes (GB)",
            "predicted fwd+bwd (ms)", "bare GEMMs (ms)", "ratio", "bar"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["op"], r["card"], f"{r['N']} x {r['H']} x {r['V']}",
            f"{r['chunk_rows']} x {r['chunks']} ({r['budget_gib']:.0f} GiB)",
            f"{r['gemm_equivalents']:.0f}", f"{r['row_pass_gb']:.1f}",
            f"{r['predicted_ms']:.1f}", f"{r['bare_ms']:.1f}", f"{r['ratio']:.2f}x",
            f"<= {r['bar']}x " + ("ok" if r["ratio"] <= r["bar"] else "**MISSED**")]) + " |")
    return "\n".join(lines)


def describe_assumptions() -> str:
    return (f"bf16, peak dense bf16 FLOP/s x {GEMM_EFFICIENCY} for GEMMs, HBM bandwidth x "
            f"{HBM_EFFICIENCY} for the row passes, {CHUNK_OVERHEAD_S * 1e6:.0f} us of small "
            "launches per chunk; bare = the three bf16 GEMMs at the same efficiency.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stepgrpo_fast.gpu.perf_model",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--card", choices=sorted(CARDS), nargs="+", default=["h100", "a100"])
    parser.add_argument("--n", type=int, default=GRPO_SHAPE["n"])
    parser.add_argument("--h", type=int, default=GRPO_SHAPE["h"])
    parser.add_argument("--v", type=int, default=GRPO_SHAPE["v"])
    args = parser.parse_args(argv)
    rows = [r for c in args.card for r in model_table(c, args.n, args.h, args.v)]
    print(render(rows))
    print("\nAssumptions: " + describe_assumptions())
    for c in args.card:
        f = fused_forward(CARDS[c], args.n, args.h, args.v)
        print(f"No-grad fused forward on {CARDS[c].name}: {f['predicted_ms']:.1f} ms vs one bare "
              f"logits GEMM {f['bare_ms']:.1f} ms ({f['ratio']:.2f}x; tl.dot at "
              f"{FUSED_EFFICIENCY} of peak).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
