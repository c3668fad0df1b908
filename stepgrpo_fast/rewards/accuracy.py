"""StepRAR, the step-wise reasoning accuracy reward (docs/METHOD.md section 3)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .answer import official_is_correct, paper_final_answer, paper_is_correct
from .inputs import (
    check_mode,
    check_num_threads,
    check_same_length,
    completion_texts,
    solution_text,
)
from .matching import match_batch


@dataclass(frozen=True)
class StepAccuracyParts:
    """StepRAR and the parts it is made of, one entry per completion (N each).

    answer_correct:  the final answer is judged correct (mode's rules)
    answer_found:    a final answer was found (paper mode; official mode: always True)
    key_step_match:  k in [0, 1] (0.0 everywhere when key_steps is None)
    reward:          r_acc, built from the three above (docs/METHOD.md section 3)
    """

    answer_correct: list[bool]
    answer_found: list[bool]
    key_step_match: list[float]
    reward: list[float]


def step_accuracy_parts(completions: Sequence, solution: Sequence,
                        key_steps: Sequence | None = None, *, mode: str = "paper",
                        alpha: float = 0.1, num_threads: int = 0) -> StepAccuracyParts:
    """StepRAR of each completion together with its parts (correctness, answer found, k).

    Arguments as :func:`step_accuracy_reward`. Callers that need correctness or k read them here
    instead of inverting the reward formula.
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
    correct, found, rewards = [], [], []
    for text, sol, k_i in zip(texts, solutions, k):
        if mode == "official":
            ok, has_answer = official_is_correct(text, sol), True
            reward = (1.0 if ok else 0.0) + (k_i * alpha if key_steps is not None else 0.0)
        else:
            answer = paper_final_answer(text)
            has_answer = answer is not None
            ok = has_answer and sol is not None and paper_is_correct(answer, sol)
            reward = 0.0 if not has_answer else (1.0 if ok else 0.0) + alpha * k_i
        correct.append(bool(ok))
        found.append(bool(has_answer))
        rewards.append(float(reward))
    return StepAccuracyParts(correct, found, [float(v) for v in k], rewards)


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
    k = match_key_steps(...) in [0, 1]. Returns list[float] (N). The parts (correctness, k) come
    from :func:`step_accuracy_parts`.
    """
    return step_accuracy_parts(completions, solution, key_steps, mode=mode, alpha=alpha,
                               num_threads=num_threads).reward
