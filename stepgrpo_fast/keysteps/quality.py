"""Recall and precision of extracted key steps against known (true) ones.

Two forms state the same fact when, after the matcher's paper-mode normalisation, one contains
the other and both carry the same numbers and operators in the same order: "The numbers are 3
and 4" states "3 and 4", "bar A is taller" states "A is taller", but "3" does not state
"3 + 4 = 7" and "7 + 8 = 5" does not state "7 + 8 = 15". A group (a list of forms) states another
when some form of one states some form of the other.

    recall    = true groups stated by some extracted group / true groups
    precision = extracted groups stating some true group  / extracted groups
(micro-averaged over all records).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from stepgrpo_fast.rewards.normalise import normalise

_MATH = re.compile(rb"\d+(?:\.\d+)?|[-+*/^=<>]")


def _key(form: str) -> tuple[bytes, tuple[bytes, ...]]:
    text = normalise(form).rstrip(b".")
    return text, tuple(_MATH.findall(text))


def same_fact(a: str, b: str) -> bool:
    """Do forms ``a`` and ``b`` state the same fact (see the module docstring)?"""
    (ta, ma), (tb, mb) = _key(a), _key(b)
    return bool(ta) and bool(tb) and ma == mb and (ta in tb or tb in ta)


def group_states(a: Sequence[str], b: Sequence[str]) -> bool:
    return any(same_fact(x, y) for x in a for y in b)


@dataclass
class Quality:
    true_groups: int = 0
    recalled: int = 0            # true groups stated by some extracted group
    extracted_groups: int = 0
    precise: int = 0             # extracted groups stating some true group
    records: int = 0

    @property
    def recall(self) -> float:
        return self.recalled / self.true_groups if self.true_groups else 0.0

    @property
    def precision(self) -> float:
        return self.precise / self.extracted_groups if self.extracted_groups else 0.0

    def add(self, extracted: Sequence[Sequence[str]], true: Sequence[Sequence[str]]) -> None:
        """Count one record: its extracted and its true groups (lists of forms)."""
        self.records += 1
        self.true_groups += len(true)
        self.extracted_groups += len(extracted)
        self.recalled += sum(any(group_states(e, t) for e in extracted) for t in true)
        self.precise += sum(any(group_states(e, t) for t in true) for e in extracted)


def score_extraction(extracted: Sequence[Sequence[Sequence[str]]],
                     true: Sequence[Sequence[Sequence[str]]]) -> Quality:
    """Quality over records: extracted[i] and true[i] are record i's groups."""
    if len(extracted) != len(true):
        raise ValueError(f"extracted and true differ in length: {len(extracted)} vs {len(true)}")
    q = Quality()
    for e, t in zip(extracted, true):
        q.add(e, t)
    return q
