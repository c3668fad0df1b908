"""The public differentiable ops, with impl="auto"|"torch"|"triton" dispatch.

    linear_logprobs   -- functional/logprobs.py
    group_advantages, grpo_loss, linear_grpo_loss -- functional/grpo.py
"""
from .grpo import group_advantages, grpo_loss, linear_grpo_loss
from .logprobs import linear_logprobs

__all__ = ["group_advantages", "grpo_loss", "linear_grpo_loss", "linear_logprobs"]
