"""StepRAR, the step-wise reasoning accuracy reward (docs/METHOD.md section 3)."""
from __future__ import annotations

from collections.abc import Sequence

from .answer import official_is_correct, paper_final_answer, paper_is_correct
from .inputs import (
    check_mode,
    check_num_threads,
    check_same_length,
    completion_texts,
    solution_text,
)
from .matching import match_batch


def step_accuracy_reward(completions: Sequence, solution: Sequence, key_steps: Sequence | None = None,
                         *, mode: str = "paper", alpha: float = 0.1, num_threads: int = 0,
                         **kwargs) -> list[float]:
    """StepRAR for each completion (TRL reward function; extra dataset columns are ignored).

    completions: list (N) of str or TRL conversational lists.
    solution:    list (N) of gold answers (str, number or None).
    key_steps:   list (N) of key-step groups / {"Steps": [...]} dicts / None, or None for all.
    mode="paper":    1 + alpha*k if the final answer is correct, alpha*k if an answer is given but
                     wrong (or the solution is None), 0 if the response has no final answer.
    mode="official": (1 if correct else 0) + alpha*k, the bonus added even without an answer (and
                     only when key_steps is not None), correctness judged as the released code does.
    k = match_key_steps(...) in [0, 1]. Returns list[float] (N).
    """
    check_mode(mode)
    check_num_threads(num_threads)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a number, got {type(alpha).__name__}")
    texts = completion_texts(completions)
    solutions = [solution_text(s, i)
                 for i, s in enumerate(check_same_length(len(texts), "solution", solution))]
    if key_steps is None:
        k = [0.0] * len(texts)
    else:
        k = match_batch(texts, check_same_length(len(texts), "key_steps", key_steps), mode,
                        num_threads)
    rewards = []
    for text, sol, k_i in zip(texts, solutions, k):
        if mode == "official":
            reward = 1.0 if official_is_correct(text, sol) else 0.0
            if key_steps is not None:
                reward += k_i * alpha
        else:
            answer = paper_final_answer(text)
            if answer is None:
                reward = 0.0
            elif sol is not None and paper_is_correct(answer, sol):
                reward = 1.0 + alpha * k_i
            else:
                reward = alpha * k_i
        rewards.append(float(reward))
    return rewards
