"""The rule-based key-step extractor (no model): candidates of the step sections (clauses.py)
-> groups of equivalent forms (forms.py) -> the ``max_groups`` most informative groups that the
StepRAR matcher finds in the reasoning itself.

    extract_key_steps(reasoning, max_groups=6) -> [[form, ...], ...]   (most informative first)
"""
from __future__ import annotations

from collections.abc import Sequence

from stepgrpo_fast.rewards import match_key_steps
from stepgrpo_fast.rewards.normalise import normalise

from .clauses import Candidate, candidates
from .forms import surface_forms

DEFAULT_MAX_GROUPS = 6


def check_max_groups(max_groups: int) -> int:
    if isinstance(max_groups, bool) or not isinstance(max_groups, int) or max_groups < 1:
        raise ValueError(f"max_groups must be an integer >= 1, got {max_groups!r}")
    return max_groups


def self_matching(reasoning: str, groups: Sequence[list[str]]) -> list[bool]:
    """For each group: does the paper-mode matcher find it in ``reasoning``'s step sections?"""
    if not groups:
        return []
    k = match_key_steps([reasoning] * len(groups), [[g] for g in groups])
    return [v == 1.0 for v in k]


def groups_from_candidates(reasoning: str, found: Sequence[Candidate],
                           max_groups: int = DEFAULT_MAX_GROUPS) -> list[list[str]]:
    """Rank ``found`` (score, then position), expand each into its forms, drop a group sharing a
    normalised form with a better one or one the matcher does not find in ``reasoning``, and
    keep the first ``max_groups``."""
    check_max_groups(max_groups)
    ranked = sorted(found, key=lambda c: (-c.score, c.position))
    groups, seen = [], set()
    for c in ranked:
        forms = surface_forms(c.text, c.kind)
        keys = {normalise(f) for f in forms} - {b""}
        if not keys or keys & seen:
            continue
        seen |= keys
        groups.append(forms)
    kept = [g for g, ok in zip(groups, self_matching(reasoning, groups)) if ok]
    return kept[:max_groups]


def extract_key_steps(reasoning: str, *, max_groups: int = DEFAULT_MAX_GROUPS) -> list[list[str]]:
    """Key-step groups of one reference reasoning in the "###" layout (rule-based).

    reasoning: str with "### Step N:" sections (other sections are not read; none -> []).
    Returns at most ``max_groups`` groups, each a list of equivalent forms whose first form is
    verbatim text of a step section; every group is found by ``match_key_steps`` in the
    reasoning, so the reasoning scores k = 1 against its own key steps.
    """
    if not isinstance(reasoning, str):
        raise TypeError(f"reasoning must be a str, got {type(reasoning).__name__}")
    return groups_from_candidates(reasoning, candidates(reasoning), max_groups)
