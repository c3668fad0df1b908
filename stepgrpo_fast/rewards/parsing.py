"""Sections of a response, in pure Python (the twin of csrc/sections.cpp and csrc/validity.cpp).

Everything works on UTF-8 ``bytes`` (``to_bytes`` encodes str with "surrogatepass", so any str
works). Only ASCII is interpreted: whitespace = b" \\t\\n\\r\\v\\f" (what bytes.strip() removes),
digits = 0-9.

paper-mode segmentation (``segment``): a header line is a line whose first non-blank bytes are
three or more '#'. After the '#' run and any spaces/tabs the title gives the kind:
"Image Description:", "Rationales:", "Let's think step by step.", "The final answer is:",
"Step" [spaces/tabs] digits [spaces/tabs] ":", or anything else (KIND_OTHER). A section's body runs
from the end of its title to the start of the next header line (or the end of the text).

official-mode step bodies (``official_step_bodies``): the released regex
``### Step \\d+:\\s*(.*?)(?=\\n###|\\Z)`` (DOTALL) with findall semantics.

Step numbers ignore leading zeros; more than nine significant digits saturate to
STEP_NUMBER_OVERFLOW (never a valid index).
"""
from __future__ import annotations

import re
from typing import NamedTuple

KIND_DESCRIPTION, KIND_RATIONALES, KIND_THINK, KIND_STEP, KIND_FINAL_ANSWER, KIND_OTHER = range(1, 7)
STEP_NUMBER_OVERFLOW = 1_000_000_000
ASCII_WHITESPACE = b" \t\n\r\x0b\x0c"

_FIXED_TITLES = (
    (b"Image Description:", KIND_DESCRIPTION),
    (b"Rationales:", KIND_RATIONALES),
    (b"Let's think step by step.", KIND_THINK),
    (b"The final answer is:", KIND_FINAL_ANSWER),
)
_HEADER_LINE = re.compile(rb"^[ \t\r\x0b\x0c]*#{3,}[ \t]*", re.MULTILINE)
_STEP_TITLE = re.compile(rb"Step[ \t]*([0-9]+)[ \t]*:")
_OFFICIAL_STEP_HEADER = re.compile(rb"### Step ([0-9]+):")
_STEP_PREFIX = b"### Step "
_FINAL_HEADER = b"### The final answer is:"
_OFFICIAL_REQUIRED = (b"### Image Description:", b"### Rationales:", b"### Step 1:", _FINAL_HEADER)


class Section(NamedTuple):
    kind: int
    number: int  # step number for KIND_STEP, 0 otherwise
    body_begin: int  # byte offsets into the UTF-8 text
    body_end: int


def to_bytes(text: str | bytes) -> bytes:
    if isinstance(text, bytes):
        return text
    if isinstance(text, str):
        return text.encode("utf-8", "surrogatepass")
    raise TypeError(f"text must be str or bytes, got {type(text).__name__}")


def parse_step_number(digits: bytes) -> int:
    significant = digits.lstrip(b"0")
    return STEP_NUMBER_OVERFLOW if len(significant) > 9 else int(significant or b"0")


def _classify(text: bytes, pos: int) -> tuple[int, int, int]:
    """(kind, number, title_end) of the title starting at ``pos``."""
    for title, kind in _FIXED_TITLES:
        if text.startswith(title, pos):
            return kind, 0, pos + len(title)
    m = _STEP_TITLE.match(text, pos)
    if m is not None:
        return KIND_STEP, parse_step_number(m.group(1)), m.end()
    return KIND_OTHER, 0, pos


def segment(text: str | bytes) -> list[Section]:
    """Paper-mode sections of ``text`` in order (byte offsets)."""
    b = to_bytes(text)
    sections: list[Section] = []
    for m in _HEADER_LINE.finditer(b):
        kind, number, title_end = _classify(b, m.end())
        if sections:
            sections[-1] = sections[-1]._replace(body_end=m.start())
        sections.append(Section(kind, number, title_end, len(b)))
    return sections


def _official_step_header_at(b: bytes, h: int) -> int:
    """End of the digits of a "### Step <digits>:" header at ``h`` (index of ':'), or -1."""
    d = h + len(_STEP_PREFIX)
    start = d
    n = len(b)
    while d < n and 48 <= b[d] <= 57:
        d += 1
    return d if d > start and d < n and b[d] == 58 else -1


def official_step_bodies(text: str | bytes) -> list[tuple[int, int]]:
    """(begin, end) byte offsets of the released regex's captured step bodies."""
    b = to_bytes(text)
    n = len(b)
    spans = []
    pos = 0
    while True:
        h = b.find(_STEP_PREFIX, pos)
        if h < 0:
            return spans
        colon = _official_step_header_at(b, h)
        if colon < 0:
            pos = h + 1
            continue
        body = colon + 1
        while body < n and b[body] in ASCII_WHITESPACE:
            body += 1
        end = b.find(b"\n###", body)
        if end < 0:
            end = n
        spans.append((body, end))
        pos = end


def official_step_headers(text: str | bytes) -> tuple[list[int], int]:
    """Numbers of every "### Step <digits>:" (re.finditer order) and the end of the last one."""
    b = to_bytes(text)
    numbers, last_end = [], 0
    for m in _OFFICIAL_STEP_HEADER.finditer(b):
        numbers.append(parse_step_number(m.group(1)))
        last_end = m.end()
    return numbers, last_end


def is_valid_paper(text: str | bytes) -> bool:
    """StepRVR, paper mode: Description, Rationales, Step 1..N (N >= 1), non-blank Final answer,
    exactly in that order (THINK and OTHER sections are ignored)."""
    b = to_bytes(text)
    stage, steps, final = 0, 0, None
    for s in segment(b):
        if s.kind == KIND_DESCRIPTION:
            if stage != 0:
                return False
            stage = 1
        elif s.kind == KIND_RATIONALES:
            if stage != 1:
                return False
            stage = 2
        elif s.kind == KIND_STEP:
            if stage != 2 or s.number != steps + 1:
                return False
            steps += 1
        elif s.kind == KIND_FINAL_ANSWER:
            if stage != 2 or steps == 0:
                return False
            stage, final = 3, s
    return final is not None and b[final.body_begin:final.body_end].strip(ASCII_WHITESPACE) != b""


def is_valid_official(text: str | bytes) -> bool:
    """StepRVR, official mode (the released check, see csrc/validity.hpp)."""
    b = to_bytes(text)
    if not all(header in b for header in _OFFICIAL_REQUIRED):
        return False
    numbers, last_step_end = official_step_headers(b)
    if not numbers:
        return False
    if not b.strip(ASCII_WHITESPACE).endswith(_FINAL_HEADER) and b.find(_FINAL_HEADER) < last_step_end:
        return False
    return numbers == list(range(1, len(numbers) + 1))
