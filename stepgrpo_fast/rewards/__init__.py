"""StepGRPO rewards: StepRAR (step_accuracy_reward), StepRVR (step_validity_reward) and the
batched key-step matcher (match_key_steps), as TRL-compatible reward functions.

The hot path (segmentation, normalisation, multi-pattern matching) runs in the C++ extension
stepgrpo_fast._C when it is built, else in an identical pure-Python twin; ``BACKEND`` tells which.
This package never imports torch.
"""
from .accuracy import StepAccuracyParts, step_accuracy_parts, step_accuracy_reward
from .bounded import answer_check_stats, reset_answer_check_stats
from .matching import BACKEND, match_key_steps
from .validity import step_validity_reward

__all__ = ["BACKEND", "StepAccuracyParts", "answer_check_stats", "match_key_steps",
           "reset_answer_check_stats", "step_accuracy_parts", "step_accuracy_reward",
           "step_validity_reward"]
