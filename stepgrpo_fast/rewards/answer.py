"""Final-answer extraction and correctness for StepRAR (Python only; math-verify is imported
lazily and only called where the spec needs it).

paper:    the answer is the stripped body of the first "### The final answer is:" section
          (parsing.segment); none -> no answer. The gold answer is the solution's own final-answer
          section when it has one, else the stripped solution. Correct when the first lines are
          equal, or both are multiple-choice answers with the same letter ("B" vs "B: 8"), or
          (neither being a choice pair) math-verify finds verify(parse(gold), parse(answer)).
official: the released check: correct when math-verify finds verify(parse(completion),
          parse(solution)) (the completion is passed as the gold argument), or when the stripped
          first line after the first "### The final answer is:" of the completion equals the
          solution's (the whole stripped text when the header is missing), case-sensitive.
math-verify's signal-based timeouts only work on the main thread: there we use
MATH_VERIFY_TIMEOUT_S, elsewhere no timeout (parsing_timeout=None / timeout_seconds=None).
"""
from __future__ import annotations

import re
import threading
from functools import lru_cache

from ._backend import EXT
from .parsing import KIND_FINAL_ANSWER, to_bytes
from .parsing import segment as _segment_python

MATH_VERIFY_TIMEOUT_S = 5
_OFFICIAL_ANSWER = re.compile(r"### The final answer is:\s*\n?(.*)")
_CHOICE = re.compile(r"^(?:\(([A-Z])\)|([A-Z])(?:[.:)]|$))")


def _segment(b: bytes):
    return EXT.segment(b) if EXT is not None else _segment_python(b)


def paper_final_answer(text: str) -> str | None:
    """Stripped body of the first final-answer section, or None when absent or blank."""
    b = to_bytes(text)
    for kind, _number, begin, end in _segment(b):
        if kind == KIND_FINAL_ANSWER:
            answer = b[begin:end].decode("utf-8", "surrogatepass").strip()
            return answer or None
    return None


def paper_gold_answer(solution: str) -> str:
    answer = paper_final_answer(solution)
    return answer if answer is not None else solution.strip()


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


def choice_letter(line: str) -> str | None:
    """"B", "B: 8", "B. 8", "B) 8", "(B) 8" -> "B"; anything else -> None."""
    m = _CHOICE.match(line)
    return None if m is None else (m.group(1) or m.group(2))


def _timeout() -> int | None:
    return MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=4096)
def math_verify_equal(gold: str, answer: str, timeout: int | None) -> bool:
    """math_verify.verify(parse(gold), parse(answer)); any failure or timeout counts as False."""
    from math_verify import parse, verify

    try:
        gold_parsed = parse(gold, parsing_timeout=timeout)
        answer_parsed = parse(answer, parsing_timeout=timeout)
        return float(verify(gold_parsed, answer_parsed, timeout_seconds=timeout)) > 0
    except Exception:  # noqa: BLE001 - math-verify raises many kinds; the released code ignores them
        return False


def paper_is_correct(answer: str, solution: str) -> bool:
    gold = paper_gold_answer(solution)
    answer_line, gold_line = first_line(answer), first_line(gold)
    if answer_line == gold_line:
        return True
    answer_letter, gold_letter = choice_letter(answer_line), choice_letter(gold_line)
    if answer_letter is not None and gold_letter is not None:
        return answer_letter == gold_letter
    return math_verify_equal(gold, answer, _timeout())


def official_answer_line(text: str) -> str:
    m = _OFFICIAL_ANSWER.search(text)
    return m.group(1).strip() if m else text.strip()


def official_is_correct(completion: str, solution: str | None) -> bool:
    if solution is None:
        return False
    if official_answer_line(completion) == official_answer_line(solution):
        return True
    return math_verify_equal(completion, solution, _timeout())
