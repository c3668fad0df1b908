"""The public differentiable ops, with impl="auto"|"torch"|"triton" dispatch.

    linear_logprobs   -- functional/logprobs.py
    group_advantages, grpo_loss, linear_grpo_loss -- functional/grpo.py
"""
from .logprobs import linear_logprobs
from .grpo import group_advantages, grpo_loss, linear_grpo_loss

__all__ = ["linear_logprobs", "group_advantages", "grpo_loss", "linear_grpo_loss"]
