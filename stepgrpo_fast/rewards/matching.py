"""Key-step matching (StepRAR's k): the C++ batch matcher with a pure-Python twin.

k = (key-step groups with at least one form found in the response's step sections) / groups,
0.0 when there are no groups.

paper:    each Step section body (``parsing.segment``) is normalised (``normalise.normalise``:
          tokens, every word token between single spaces) and searched separately, on whole
          tokens. A form whose normal form is empty never matches. An *equation* form
          "LHS = RHS" (``split_equation``) matches when some step states it and no step states
          the same LHS equal to another value (``equation_in``); any other form matches when its
          normal form occurs in some normalised body. docs/rewards.md has the rule with examples.
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
from .normalise import normalise, normalise_body
from .parsing import KIND_STEP, segment, to_bytes

__all__ = [
    "BACKEND",
    "canonical_key_steps",
    "equation_in",
    "match_batch",
    "match_batch_python",
    "match_key_steps",
    "split_equation",
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
    """Per group, the patterns to search for (paper: normalised bytes, or an (lhs, rhs) pair for
    an equation; official: lower str)."""
    compiled = []
    for forms in groups:
        if mode == "paper":
            patterns = tuple(split_equation(p) or p for p in (normalise(f) for f in forms) if p)
        else:
            patterns = tuple(f.lower() for f in forms)
        compiled.append(patterns)
    return compiled


# ------------------------------------------------------------- paper mode: equation key steps
SEP = 0x20
_NOT_EQUATION_BEFORE = b"<>!=:"   # "<=", ">=", "!=", "==", ":=" are not equations
_TERM_GLUE = b"+-*/^_"            # an LHS right after one of these belongs to a longer term
_CONTINUES = b"+-*/^"             # a value followed by one of these is part of a longer value
_DEGREES = b"^\\ circ "          # "90^\\circ": a unit, not a power
_HEDGE = b"or "
_CLAUSE_END = b",;."
_SAME, _OTHER, _HEDGED = range(3)


def split_equation(pattern: bytes) -> tuple[bytes, bytes] | None:
    """(lhs, rhs) of a normalised form "LHS = RHS", split at its last "=" (lhs keeps the "="),
    or None when the form is no equation (no "=", "<=" and the like, an empty side)."""
    i = pattern.rfind(b"=")
    if i < 0 or (i > 0 and pattern[i - 1] in _NOT_EQUATION_BEFORE):
        return None
    lhs, rhs = pattern[:i + 1], pattern[i + 1:]
    if not lhs[:-1].strip(b" ") or not rhs.strip(b" "):
        return None
    return lhs, rhs


def _term_start(body: bytes, glued: frozenset[int], pos: int) -> bool:
    """Does an LHS found at ``pos`` start a term (not "2x =" for "x =", "18 + 8 + 7 =" for
    "8 + 7 =")? ``glued``: normalise_body's glued positions."""
    if pos + 1 in glued and body[pos] == SEP:
        return False
    j = pos - 1
    if j >= 0 and body[j] == SEP:
        j -= 1
    return j < 0 or body[j] not in _TERM_GLUE


def _value_at(body: bytes, p: int, rhs: bytes) -> int:
    """_SAME when the value stated at ``p`` (just after an "=") is ``rhs``; _HEDGED when it is
    ``rhs`` followed by "or"; _OTHER otherwise (another value, or ``rhs`` continued: "1 / 2")."""
    if not body.startswith(rhs, p):
        return _OTHER
    q = p + len(rhs)
    if body.startswith(_DEGREES, q):
        return _SAME
    if q < len(body) and body[q] in _CONTINUES:
        return _OTHER
    if q < len(body) and body[q] == SEP:
        q += 1
    return _HEDGED if body.startswith(_HEDGE, q) else _SAME


def _chain_reaches(body: bytes, p: int, rhs: bytes, ends: set[int]) -> bool:
    """From ``p`` to the end of the clause ("," ";" "." "or"), does an "=" chain reach ``rhs``
    ("x = 30 / 2 = 15") before the LHS is stated again?"""
    n = len(body)
    while p < n:
        c = body[p]
        if c in _CLAUSE_END or (c == SEP and body.startswith(b" or ", p)):
            return False
        if c == 0x3D:  # "="
            if p + 1 in ends:
                return False
            if _value_at(body, p + 1, rhs) == _SAME:
                return True
        p += 1
    return False


def _has_value(body: bytes, e: int) -> bool:
    """Does a token follow offset ``e`` (spaces never repeat in a normal form)?"""
    return e + 1 < len(body) or (e + 1 == len(body) and body[e] != SEP)


def equation_in(body: bytes, glued: frozenset[int], lhs: bytes, rhs: bytes) -> tuple[bool, bool]:
    """(stated, contradicted) in one normalised step body: stated when an occurrence of ``lhs``
    that starts a term is followed by ``rhs`` (not continued by an operator); contradicted when
    such an occurrence is followed by ``rhs`` "or" ..., or by another value that no "=" chain of
    the same clause brings to ``rhs``."""
    ends = []
    pos = body.find(lhs)
    while pos >= 0:
        if _term_start(body, glued, pos):
            ends.append(pos + len(lhs))
        pos = body.find(lhs, pos + 1)
    stated = contradicted = False
    end_set = set(ends)
    for e in ends:
        value = _value_at(body, e, rhs)
        if value == _SAME:
            stated = True
        elif value == _HEDGED or _has_value(body, e) and not _chain_reaches(body, e, rhs, end_set):
            contradicted = True
    return stated, contradicted


def _form_found(pattern, bodies: list[tuple[bytes, frozenset[int]]]) -> bool:
    if isinstance(pattern, bytes):
        return any(pattern in body for body, _ in bodies)
    stated = False
    for body, glued in bodies:
        s, contradicted = equation_in(body, glued, *pattern)
        if contradicted:
            return False
        stated = stated or s
    return stated


def _k_paper(text: bytes, groups: list[tuple]) -> float:
    bodies = [normalise_body(text[s.body_begin:s.body_end]) for s in segment(text)
              if s.kind == KIND_STEP]
    matched = sum(1 for patterns in groups if any(_form_found(p, bodies) for p in patterns))
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
