"""Official mode in pure Python (the twin of the official paths of csrc/): the released code's
rules with Python's own str semantics, so str.lower(), regex \\d and \\s, str.strip() and int()
behave exactly as they do there, on any Unicode text.

Texts are str (lone surrogates allowed); bytes are decoded as UTF-8 with "surrogateescape", so an
undecodable byte is an opaque unit (never a space, digit or letter), as in the C++ decoder.

step bodies: the released regex ``### Step \\d+:\\s*(.*?)(?=\\n###|\\Z)`` (DOTALL), findall order.
step numbers: int() of the digits; more than nine significant digits saturate to
STEP_NUMBER_OVERFLOW (never a valid index; int() of 4,300+ digits would raise in the released code).
validity: the four headers present as substrings; every "### Step <digits>:" numbered 1..n in
order; and either text.strip() ends with the final-answer header or the first final-answer header
starts at or after the end of the last step header.
"""
from __future__ import annotations

import re
import unicodedata

from .parsing import STEP_NUMBER_OVERFLOW

FINAL_HEADER = "### The final answer is:"
_REQUIRED = ("### Image Description:", "### Rationales:", "### Step 1:", FINAL_HEADER)
_STEP_PREFIX = "### Step "
_HEADER = re.compile(r"### Step (\d+):")


def as_text(text: str | bytes) -> str:
    if isinstance(text, str):
        return text
    if isinstance(text, bytes):
        return text.decode("utf-8", "surrogateescape")
    raise TypeError(f"text must be str or bytes, got {type(text).__name__}")


def _body_spans(s: str) -> list[tuple[int, int]]:
    """(begin, end) of the groups of the released regex (module docstring), found with str.find:
    regex \\d is str.isdecimal() and \\s is str.isspace(); matching resumes at each body's end."""
    spans, pos, n = [], 0, len(s)
    while True:
        h = s.find(_STEP_PREFIX, pos)
        if h < 0:
            return spans
        d = start = h + len(_STEP_PREFIX)
        while d < n and s[d].isdecimal():
            d += 1
        if d == start or d >= n or s[d] != ":":
            pos = h + 1
            continue
        body = d + 1
        while body < n and s[body].isspace():
            body += 1
        end = s.find("\n###", body)
        end = n if end < 0 else end
        spans.append((body, end))
        pos = end


def step_body_texts(text: str | bytes) -> list[str]:
    """The released regex's captured step bodies, in order."""
    s = as_text(text)
    return [s[a:b] for a, b in _body_spans(s)]


def step_bodies(text: str | bytes) -> list[tuple[int, int]]:
    """(begin, end) UTF-8 byte offsets of the step bodies (as csrc's official_step_bodies)."""
    s = as_text(text)
    errors = "surrogatepass" if isinstance(text, str) else "surrogateescape"
    spans, pos, offset = [], 0, 0
    for begin, end in _body_spans(s):
        offset += len(s[pos:begin].encode("utf-8", errors))
        b_begin = offset
        offset += len(s[begin:end].encode("utf-8", errors))
        spans.append((b_begin, offset))
        pos = end
    return spans


def step_number(digits: str) -> int:
    """int(digits) for regex \\d+ digits, saturated as in the module docstring."""
    i = 0
    while i < len(digits) and unicodedata.decimal(digits[i]) == 0:
        i += 1
    return STEP_NUMBER_OVERFLOW if len(digits) - i > 9 else int(digits[i:] or "0")


def is_valid(text: str | bytes) -> bool:
    """StepRVR, official mode (rules in the module docstring)."""
    s = as_text(text)
    if not all(header in s for header in _REQUIRED):
        return False
    headers = list(_HEADER.finditer(s))
    if not headers:
        return False
    if not s.strip().endswith(FINAL_HEADER) and s.find(FINAL_HEADER) < headers[-1].end():
        return False
    return [step_number(m.group(1)) for m in headers] == list(range(1, len(headers) + 1))


def key_step_match(text: str | bytes, groups: list[tuple[str, ...]]) -> float:
    """k: groups (of str.lower()-ed forms) with a form in the lower-cased joined step bodies."""
    joined = " ".join(step_body_texts(text)).lower()
    matched = sum(1 for forms in groups if any(form in joined for form in forms))
    return matched / len(groups)
