"""StepRVR, the step-wise reasoning validity reward: 1.0 when a response is complete and
logical, else 0.0 (rules: parsing.is_valid_paper / official.is_valid, same in C++)."""
from __future__ import annotations

from collections.abc import Sequence

from . import official
from ._backend import EXT, EXT_OFFICIAL
from .inputs import check_mode, check_num_threads, completion_texts
from .parsing import is_valid_paper


def validity_batch_python(texts: list, mode: str = "paper") -> list[float]:
    check = is_valid_paper if check_mode(mode) == "paper" else official.is_valid
    return [1.0 if check(t) else 0.0 for t in texts]


def validity_batch(texts: list, mode: str = "paper", num_threads: int = 0) -> list[float]:
    """StepRVR for texts (list[str], N) with the active backend -> list[float] (N)."""
    if EXT is not None and (mode == "paper" or EXT_OFFICIAL):
        return EXT.step_validity(texts, mode, num_threads)
    return validity_batch_python(texts, mode)


def step_validity_reward(completions: Sequence, *, mode: str = "paper", num_threads: int = 0,
                         **kwargs) -> list[float]:
    """StepRVR for each completion (TRL reward function; extra dataset columns are ignored).

    completions: list (N) of str or TRL conversational lists. Returns list[float] (N) of 0.0/1.0.
    mode="paper": Description -> Rationales -> Step 1..N -> non-empty final answer, in order.
    mode="official": the released check (headers present as substrings, steps numbered 1..n, first
    final-answer header after the last step header or the text ending with the bare header).
    """
    check_mode(mode)
    check_num_threads(num_threads)
    return validity_batch(completion_texts(completions), mode, num_threads)
