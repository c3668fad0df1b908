"""The two training loops, by name: ``run_sft`` (sft_loop.py) and ``run_stepgrpo`` (grpo_loop.py).

Both run unchanged on one process or under ``accelerate launch --num_processes N`` (DDP over
gloo on CPU, NCCL on GPU): every process takes its own slice of each global batch, gradients are
averaged by the DDP wrapper around :class:`~stepgrpo_fast.trainer.model.objective.PolicyObjective`, and
only the main process writes files. The run lifecycle they share is in run.py, the per-step
metric reductions in metrics.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stepgrpo_fast.trainer.config import SFTConfig, StepGRPOConfig, TrainConfigBase
from stepgrpo_fast.trainer.rl.grpo_loop import run_stepgrpo
from stepgrpo_fast.trainer.run import FINAL_MODEL_DIR, refuse_deepspeed
from stepgrpo_fast.trainer.model.export import save_weights_as
from stepgrpo_fast.trainer.sft_loop import run_sft

__all__ = ["FINAL_MODEL_DIR", "refuse_deepspeed", "run_config", "run_sft", "run_stepgrpo",
           "save_weights_as"]


def run_config(kind: str) -> tuple[type[TrainConfigBase], Callable[..., dict[str, Any]]]:
    """'sft' -> (SFTConfig, run_sft); 'stepgrpo' -> (StepGRPOConfig, run_stepgrpo)."""
    if kind == "sft":
        return SFTConfig, run_sft
    if kind == "stepgrpo":
        return StepGRPOConfig, run_stepgrpo
    raise ValueError(f"unknown run kind {kind!r}: expected 'sft' or 'stepgrpo'")
