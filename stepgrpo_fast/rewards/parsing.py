"""Paper-mode sections of a response, in pure Python (the twin of csrc/sections.cpp and
csrc/validity.cpp; official mode's twin is official.py).

Everything works on UTF-8 ``bytes`` (``to_bytes`` encodes str with "surrogatepass", so any str
works). Only ASCII is interpreted: whitespace = b" \\t\\n\\r\\v\\f" (what bytes.strip() removes),
digits = 0-9.

paper-mode segmentation (``segment``): a header line is a line whose first non-blank bytes are
three or more '#'. After the '#' run and any spaces/tabs the title gives the kind:
"Image Description:", "Rationales:", "Let's think step by step.", "The final answer is:",
"Step" [spaces/tabs] digits [spaces/tabs] ":", or anything else (KIND_OTHER). A section's body runs
from the end of its title to the start of the next header line (or the end of the text).

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
