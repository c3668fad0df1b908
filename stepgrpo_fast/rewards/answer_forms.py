"""Surface forms of one final-answer line: wrappers, hedges, plain numbers and choice letters.

Used by answer.py (paper mode) and trainer/evaluate.py (benchmark formats). Pure Python, no
math-verify.

- ``unwrap(line)``: drops what only decorates an answer: surrounding "**", "$", "$$", "\\(" "\\)",
  "\\[" "\\]", a whole "\\boxed{...}" / "\\fbox{...}", "\\text{...}"-style wrappers, a trailing
  "." and blanks.
- ``hedge_markers(line)``: what makes a line offer several candidates: the words "or", "either",
  "not", "nor", "\\pm"/"±"/"\\mp"/"∓", and list separators ("," or ";") outside brackets, other
  than thousands separators ("1,000"). An answer is hedged when it has a marker its gold lacks.
- ``plain_number(line)``: the value of an integer / decimal / simple fraction ("12", "-3.5",
  "1,000", "\\frac{3}{4}", "3/4"), optionally after "x =" and before a unit ("12 cm", "45°",
  "30\\%", "5 \\text{ m}^2"), as a Fraction; None for anything else.
- ``choice_letter(line)``: "B", "B: 8", "B. 8", "B) 8", "(B) 8" -> "B"; else None.
- ``is_words(text)``: letters and blanks only ("Yes", "right angle"), no digits or LaTeX.
"""
from __future__ import annotations

import re
from fractions import Fraction

_CHOICE = re.compile(r"^(?:\(([A-Z])\)|([A-Z])(?:[.:)]|$))")

_OUTER_WRAPPERS = (("**", "**"), ("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"),
                   ("`", "`"))
_WRAPPER_STARTS, _WRAPPER_ENDS = frozenset("*$\\`"), frozenset(".*$)]`}")
_WHOLE_COMMAND = re.compile(r"^\\(?:boxed|fbox|text|textbf|mathrm|mathbf)\s*\{")
_TEXT_COMMAND = re.compile(r"\\(?:text|textrm|mathrm|mbox|operatorname)\s*\{([^{}]*)\}")

_HEDGE_WORD = re.compile(r"(?i)(?<![A-Za-z])(or|either|not|nor)(?![A-Za-z])|\\pm|\\mp|±|∓")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")

_UNIT_WORDS = (
    "mm|cm|dm|km|m|in|inch|inches|ft|feet|foot|yd|yards?|mi|miles?|"
    "mg|kg|g|lbs?|pounds?|oz|ml|mL|l|L|cc|"
    "ms|s|secs?|seconds?|min|mins|minutes?|h|hrs?|hours?|days?|weeks?|months?|years?|"
    "degrees?|deg|rad|radians?|units?|square units|sq units|cents?|dollars?|"
    "km/h|m/s|mph|cm/s"
)
_UNIT = re.compile(
    r"\s*(?:\^\s*\{?\s*\\circ\s*\}?|°|\\degree|\\%|%|"
    rf"(?:\\,|\\;|\\!|~)?\s*(?:{_UNIT_WORDS})(?:\s*(?:\^\s*\{{?\s*[23]\s*\}}?|²|³))?)\s*$"
)
_ASSIGNMENT = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*")
_NUMBER = re.compile(r"^([-+−]?)(\d+(?:\.\d*)?|\.\d+)$")
_FRACTION = re.compile(r"^([-+−]?)\s*(?:\\[dt]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}|"
                       r"(\d+)\s*/\s*(\d+))$")


def _strip_command(text: str) -> str | None:
    """Body of a whole "\\boxed{...}"-like wrapper, or None when ``text`` is not one."""
    m = _WHOLE_COMMAND.match(text)
    if m is None:
        return None
    depth = 1
    for i in range(m.end(), len(text)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[m.end():i] if i == len(text) - 1 else None
    return None


def unwrap(line: str) -> str:
    """The answer without decoration (see the module docstring)."""
    text = line.strip()
    if not text or (text[0] not in _WRAPPER_STARTS and text[-1] not in _WRAPPER_ENDS):
        return text  # the common case: nothing to remove
    while True:
        before = text
        text = text.rstrip(".").strip()
        for opening, closing in _OUTER_WRAPPERS:
            if len(text) >= len(opening) + len(closing) and text.startswith(opening) \
                    and text.endswith(closing):
                text = text[len(opening):len(text) - len(closing)].strip()
                break
        inner = _strip_command(text)
        if inner is not None:
            text = inner.strip()
        if text == before:
            return text


def hedge_markers(line: str) -> frozenset[str]:
    """The candidate-offering markers of ``line`` ("or", "not", "±", ",", ...), lower-cased."""
    markers = {m.group(0).lower() for m in _HEDGE_WORD.finditer(line)}
    if "," in line or ";" in line:
        depth = 0
        for c in _THOUSANDS.sub("", line):
            if c in "([{":
                depth += 1
            elif c in ")]}":
                depth = max(0, depth - 1)
            elif c in ",;" and depth == 0:
                markers.add(",")
                break
    return frozenset(markers)


def plain_number(line: str) -> Fraction | None:
    """Value of a plain number / simple fraction answer (see the module docstring), else None."""
    return number_of_core(unwrap(line))


def number_of_core(text: str) -> Fraction | None:
    """plain_number() of an already unwrapped line."""
    if text.isascii() and text.isdigit():
        return Fraction(int(text))
    text = _TEXT_COMMAND.sub(r" \1", text).strip()
    text = _ASSIGNMENT.sub("", text)
    text = _UNIT.sub("", text).strip()
    text = _THOUSANDS.sub("", text).replace("\\!", "").replace("{,}", "")
    m = _NUMBER.match(text)
    if m is not None:
        value = Fraction(m.group(2))
    else:
        m = _FRACTION.match(text)
        if m is None:
            return None
        num, den = (m.group(2), m.group(3)) if m.group(2) is not None else (m.group(4), m.group(5))
        if int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
    return -value if m.group(1) in ("-", "−") else value


def is_decimal(line: str) -> bool:
    """True when the number in ``line`` is written with a decimal point (an approximation)."""
    return "." in unwrap(line)


def choice_letter(line: str) -> str | None:
    """"B", "B: 8", "B. 8", "B) 8", "(B) 8" -> "B"; anything else -> None."""
    m = _CHOICE.match(line)
    return None if m is None else (m.group(1) or m.group(2))


_WORDS = re.compile(r"[^\W\d_]+(?:[ '\-][^\W\d_]+)*")


def is_words(text: str) -> bool:
    """Plain words only ("Yes", "right angle", "Ünïcödé"): letters, blanks, "'" and "-"."""
    return _WORDS.fullmatch(text) is not None


def casefold_text(line: str) -> str:
    """Line compared as plain text: unwrapped, case-folded, blanks collapsed."""
    return casefold_core(unwrap(line))


def casefold_core(text: str) -> str:
    return " ".join(text.casefold().split())
