"""Final-answer extraction and correctness for StepRAR (Python only; math-verify is imported
lazily, called only where the fast paths cannot decide, and always bounded: bounded.py).

paper: the answer is the first non-empty line of the final-answer section: the first
       "### The final answer is:" header line (paper segmentation), else -- as leniently as the
       released evaluator -- the first "The final answer is" (any case, with or without "#"/"**",
       colon optional) anywhere; the line is the rest of the header's line when non-blank, else
       the next non-blank line before the next "###" header line. None -> no answer. The gold is
       the solution's own answer by the same rule, else the first line of the stripped solution.
       ``paper_is_correct`` decides, in order:
         1. equal lines, or equal after unwrapping and case folding          -> correct
         2. the answer offers candidates its gold lacks (answer_forms.hedge_markers:
            "5 or 7", "3, 4" vs a single value, "5 (not 3)", "\\pm 3")          -> wrong
         3. both are choice letters ("B" vs "B: 8", "(C)")                   -> same letter
         4. both are plain words ("Yes" vs "No")                             -> wrong
            both are plain numbers ("12 cm", "45°", "\\frac{1}{2}", "0.5")   -> equal values
            (two exact values that differ, or values more than 0.1 % apart  -> wrong)
         5. otherwise math-verify on both lines wrapped as math ("$...$", first-match
            extraction), under bounded.too_complex / bounded.call_with_deadline (a rejected or
            timed-out check is wrong and counted in bounded.answer_check_stats()).
       The gold's forms are computed once per distinct solution (a group shares one).
official: the released check: correct when math-verify finds verify(parse(completion),
       parse(solution)) (the completion is passed as the gold argument), or when the stripped
       first line after the first "### The final answer is:" of the completion equals the
       solution's (the whole stripped text when the header is missing), case-sensitive. Bounded
       the same way but without the length cap, so long completions keep the released verdict
       (the released code has a 5 s signal timeout on the main thread only).
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from . import answer_forms as forms
from .bounded import (
    ANSWER_CHECK_TIMEOUT_S,
    MAX_CHECKED_CHARS,
    call_with_deadline,
    count,
    too_complex,
)

choice_letter = forms.choice_letter  # kept importable from here

_STRICT_TITLE = "The final answer is:"
_STRICT_PREFIX = re.compile(r"[ \t\r\x0b\x0c]*#{3,}[ \t]*\Z")  # a header line up to the title
_LENIENT_HEADER = re.compile(r"the final answer is", re.IGNORECASE)
_LENIENT_TAIL = re.compile(r"(?:\*\*)?[ \t]*:?(?:\*\*)?")
_HEADER_LINE = re.compile(r"^[ \t\r\x0b\x0c]*#{3,}")
_OFFICIAL_ANSWER = re.compile(r"### The final answer is:\s*\n?(.*)")
_RELATIVE_TOLERANCE = Fraction(1, 1000)


def _answer_after(text: str, pos: int) -> str | None:
    """First non-blank line at or after ``pos`` (the rest of the header's own line first),
    stopping at a "###" header line."""
    end_of_line = text.find("\n", pos)
    rest = text[pos:] if end_of_line < 0 else text[pos:end_of_line]
    if rest.strip():
        return rest.strip()
    while end_of_line >= 0:
        start = end_of_line + 1
        end_of_line = text.find("\n", start)
        line = text[start:] if end_of_line < 0 else text[start:end_of_line]
        if _HEADER_LINE.match(line):
            return None
        if line.strip():
            return line.strip()
    return None


def _strict_header_end(text: str) -> int:
    """End of the first "### The final answer is:" header title (paper segmentation), or -1."""
    pos = text.find(_STRICT_TITLE)
    while pos >= 0:
        line_start = text.rfind("\n", 0, pos) + 1
        if _STRICT_PREFIX.match(text, line_start, pos):
            return pos + len(_STRICT_TITLE)
        pos = text.find(_STRICT_TITLE, pos + 1)
    return -1


def paper_final_answer(text: str) -> str | None:
    """The answer line of a response (see the module docstring), or None."""
    end = _strict_header_end(text)
    if end < 0:
        m = _LENIENT_HEADER.search(text)
        if m is None:
            return None
        end = _LENIENT_TAIL.match(text, m.end()).end()
    return _answer_after(text, end)


def paper_gold_answer(solution: str) -> str:
    answer = paper_final_answer(solution)
    return answer if answer is not None else solution.strip().split("\n", 1)[0].strip()


@dataclass(frozen=True)
class GoldForms:
    """A gold answer's forms, computed once per distinct solution."""

    line: str
    folded: str
    markers: frozenset
    letter: str | None
    number: Fraction | None
    decimal: bool
    words: bool


@lru_cache(maxsize=1 << 16)
def gold_forms(solution: str) -> GoldForms:
    line = paper_gold_answer(solution)
    return GoldForms(line, forms.casefold_text(line), forms.hedge_markers(line),
                     forms.choice_letter(line), forms.plain_number(line), forms.is_decimal(line),
                     forms.is_words(forms.unwrap(line)))


def _numbers_decide(core: str, value: Fraction, gold: GoldForms) -> bool | None:
    """Equal values -> True; different exact values or values 0.1 % apart -> False; else None."""
    if value == gold.number:
        return True
    exact = not (gold.decimal or "." in core)
    if exact:
        return False
    scale = max(abs(gold.number), abs(value))
    if abs(value - gold.number) > _RELATIVE_TOLERANCE * scale:
        return False
    return None  # near-equal approximations: math-verify's rounding rules decide


def _as_math(line: str) -> str:
    core = forms.unwrap(line)
    return core if "$" in core or "\\(" in core or "\\[" in core else f"${core}$"


def paper_is_correct(answer: str, solution: str) -> bool:
    """Is the answer line ``answer`` right for ``solution``? (rules: module docstring)"""
    gold = gold_forms(solution)
    if answer == gold.line:
        return True
    core = forms.unwrap(answer)
    if gold.number is not None and core.isascii() and core.isdigit():  # the common case
        decided = _numbers_decide(core, Fraction(int(core)), gold)
        if decided is not None:
            return decided
    if forms.casefold_core(core) == gold.folded:
        return True
    if forms.hedge_markers(answer) - gold.markers:
        return False
    letter = forms.choice_letter(answer)
    if letter is not None and gold.letter is not None:
        return letter == gold.letter
    if gold.words and forms.is_words(core):
        return False  # plain words that differ after case folding: math-verify has nothing to add
    if gold.number is not None:
        value = forms.number_of_core(core)
        if value is not None:
            decided = _numbers_decide(core, value, gold)
            if decided is not None:
                return decided
    return math_verify_equal(_as_math(gold.line), _as_math(answer), ANSWER_CHECK_TIMEOUT_S,
                             "first_match")


# ------------------------------------------------------------------------------- math-verify
_TIMED_OUT, _TOO_COMPLEX = "timeout", "too_complex"


@lru_cache(maxsize=4096)
def _parse(text: str, extraction_mode: str):
    from math_verify import parse

    return parse(text, extraction_mode=extraction_mode, parsing_timeout=None)


_WARM_LOCK = threading.Lock()
_warm = False


def _warm_up_math_verify() -> None:
    """Imports and first-use setup (about a second: sympy, the LaTeX grammar) happen once, before
    any deadline is armed. math-verify's one-time "timeouts are off" warning is silenced: here
    call_with_deadline bounds every call."""
    global _warm
    with _WARM_LOCK:
        if _warm:
            return
        import math_verify.grader
        import math_verify.parser
        from math_verify import parse, verify

        for module in (math_verify.grader, math_verify.parser):
            if hasattr(module, "TIMEOUT_WARNING_SHOWN"):
                module.TIMEOUT_WARNING_SHOWN = True
        verify(parse("$\\frac{1}{2}$", parsing_timeout=None), parse("$x+1$", parsing_timeout=None),
               timeout_seconds=None)
        _warm = True


@lru_cache(maxsize=1 << 14)
def _math_verify_outcome(gold: str, answer: str, timeout: float, extraction_mode: str,
                         max_chars: int | None = MAX_CHECKED_CHARS):
    """True / False / _TIMED_OUT / _TOO_COMPLEX for verify(parse(gold), parse(answer))."""
    if too_complex(gold, max_chars) or too_complex(answer, max_chars):
        return _TOO_COMPLEX
    _warm_up_math_verify()
    from math_verify import verify

    def check() -> bool:
        try:
            gold_parsed = _parse(gold, extraction_mode)
            answer_parsed = _parse(answer, extraction_mode)
            return float(verify(gold_parsed, answer_parsed, timeout_seconds=None)) > 0
        except Exception:  # noqa: BLE001 - math-verify raises many kinds; none means "equal"
            return False

    result, timed_out = call_with_deadline(check, timeout)
    return _TIMED_OUT if timed_out else bool(result)


def math_verify_equal(gold: str, answer: str, timeout: float = ANSWER_CHECK_TIMEOUT_S,
                      extraction_mode: str = "any_match",
                      max_chars: int | None = MAX_CHECKED_CHARS) -> bool:
    """verify(parse(gold), parse(answer)) within ``timeout`` seconds (any thread); a failure, a
    timeout or a too-complex text (bounded.too_complex; ``max_chars=None``: no length cap) counts
    as False. Outcomes are cached; the counters in bounded.answer_check_stats() count every call."""
    outcome = _math_verify_outcome(gold, answer, float(timeout), extraction_mode, max_chars)
    if outcome == _TOO_COMPLEX:
        count("too_complex")
        return False
    count("math_verify_checks")
    if outcome == _TIMED_OUT:
        count("timeouts")
        return False
    return outcome


def official_answer_line(text: str) -> str:
    m = _OFFICIAL_ANSWER.search(text)
    return m.group(1).strip() if m else text.strip()


def official_is_correct(completion: str, solution: str | None) -> bool:
    if solution is None:
        return False
    if official_answer_line(completion) == official_answer_line(solution):
        return True
    # the whole completion, as the released code passes it: no length cap (bounded.py)
    return math_verify_equal(completion, solution, ANSWER_CHECK_TIMEOUT_S, max_chars=None)
