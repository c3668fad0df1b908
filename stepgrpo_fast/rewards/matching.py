"""Key-step matching (StepRAR's k): the C++ batch matcher with a pure-Python twin.

k = (key-step groups with at least one form found in the response's step sections) / groups,
0.0 when there are no groups.

paper:    each Step section body (``parsing.segment``) is normalised (``normalise.normalise``)
          and searched separately; a form matches when its normalised text is non-empty and
          occurs in some normalised body.
official: the released behaviour, with Python's Unicode str semantics: the step bodies of
          ``official.step_body_texts`` joined with " " and str.lower()-ed; a form matches when
          its str.lower() occurs in that text (an empty form always matches).

``BACKEND`` says which implementation runs ("cpp" or "python"); STEPGRPO_DISABLE_EXT=1 forces
the Python one. Both give identical results (tests/rewards/test_rewards_agreement.py). Official
mode uses the Python twin when the extension's Unicode tables are from another Unicode version
than this interpreter's (_backend.EXT_OFFICIAL).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import official
from ._backend import BACKEND, EXT, EXT_OFFICIAL
from .inputs import check_mode, check_num_threads, check_same_length, completion_texts
from .normalise import normalise
from .parsing import KIND_STEP, segment, to_bytes

__all__ = [
    "BACKEND",
    "canonical_key_steps",
    "match_batch",
    "match_batch_python",
    "match_key_steps",
]


def _type_name(obj: Any) -> str:
    return type(obj).__name__


def canonical_key_steps(item: Any, index: int) -> list[list[str]]:
    """One record's key steps as a list of groups of forms.

    ``item``: None (no groups), a list/tuple of groups, or the released ``{"Steps": [...]}`` dict;
    a group is a list/tuple of strings or a bare string.
    """
    where = f"key_steps[{index}]"
    if item is None:
        return []
    if isinstance(item, dict):
        if "Steps" not in item:
            raise ValueError(f"{where} is a dict without a 'Steps' entry")
        item = item["Steps"]
        if not isinstance(item, (list, tuple)):
            raise TypeError(f"{where}['Steps'] must be a list of key-step groups, got "
                            f"{_type_name(item)}")
    elif not isinstance(item, (list, tuple)):
        raise TypeError(f"{where} must be a list of key-step groups or a {{'Steps': [...]}} dict, "
                        f"got {_type_name(item)}")
    groups = []
    for j, group in enumerate(item):
        if isinstance(group, str):
            groups.append([group])
            continue
        if not isinstance(group, (list, tuple)):
            raise TypeError(f"{where} group {j} must be a string or a list of strings, got "
                            f"{_type_name(group)}")
        for k, form in enumerate(group):
            if not isinstance(form, str):
                raise TypeError(f"{where} group {j} form {k} must be a string, got "
                                f"{_type_name(form)}")
        groups.append(list(group))
    return groups


def _compile(groups: list[list[str]], mode: str) -> list[tuple]:
    """Per group, the patterns to search for (paper: normalised bytes; official: lower str)."""
    compiled = []
    for forms in groups:
        if mode == "paper":
            patterns = tuple(p for p in (normalise(f) for f in forms) if p)
        else:
            patterns = tuple(f.lower() for f in forms)
        compiled.append(patterns)
    return compiled


def _k_paper(text: bytes, groups: list[tuple[bytes, ...]]) -> float:
    bodies = [normalise(text[s.body_begin:s.body_end]) for s in segment(text) if s.kind == KIND_STEP]
    matched = sum(1 for patterns in groups
                  if any(p in body for p in patterns for body in bodies))
    return matched / len(groups)


def match_batch_python(texts: list, key_steps: list, mode: str = "paper") -> list[float]:
    """Pure-Python batch matcher: texts (N) of str/bytes, key_steps (N) raw items -> k (N)."""
    check_mode(mode)
    if len(texts) != len(key_steps):
        raise ValueError(f"completions and key_steps differ in length: {len(texts)} vs "
                         f"{len(key_steps)}")
    data = []
    for i, t in enumerate(texts):
        if not isinstance(t, (str, bytes)):
            raise TypeError(f"completions[{i}] must be str or bytes, got {_type_name(t)}")
        data.append(to_bytes(t) if mode == "paper" else official.as_text(t))
    compiled_by_id: dict[int, list[tuple]] = {}
    compiled = []
    for i, item in enumerate(key_steps):
        groups = compiled_by_id.get(id(item))
        if groups is None:
            groups = _compile(canonical_key_steps(item, i), mode)
            compiled_by_id[id(item)] = groups
        compiled.append(groups)
    score = _k_paper if mode == "paper" else official.key_step_match
    return [score(t, g) if g else 0.0 for t, g in zip(data, compiled)]


def match_batch(texts: list, key_steps: list, mode: str = "paper", num_threads: int = 0) -> list[float]:
    """k for every text with the active backend (texts: list[str] (N), key_steps: list (N))."""
    if EXT is not None and (mode == "paper" or EXT_OFFICIAL):
        return EXT.match_key_steps(texts, key_steps, mode, num_threads)
    return match_batch_python(texts, key_steps, mode)


def match_key_steps(completions: Sequence, key_steps: Sequence, *, mode: str = "paper",
                    num_threads: int = 0) -> list[float]:
    """Fraction k in [0, 1] of key-step groups found in each completion's "### Step N:" sections.

    completions: list (N) of str or TRL conversational lists.
    key_steps:   list (N); item = list of groups (a group = list of equivalent forms, or one
                 string), the released {"Steps": [...]} dict, or None.
    num_threads: C++ worker threads (0 = all cores); ignored by the Python backend.
    Returns list[float] (N).
    """
    check_mode(mode)
    check_num_threads(num_threads)
    texts = completion_texts(completions)
    key_steps = check_same_length(len(texts), "key_steps", key_steps)
    return match_batch(texts, key_steps, mode, num_threads)
