"""Scoring one completion against one benchmark record (``stepgrpo eval --format``).

Formats (the record fields each needs: benchmark_records.py):

- ``mathvista``: MathVista's own records. ``question_type`` "multi_choice" (``choices`` holds the
  option texts, ``answer`` is one of them) or "free_form" with ``answer_type`` "integer",
  "float" (``precision`` decimals), "text" or "list"; ``unit`` is ignored in the prediction.
- ``mcq``: ``choices`` + ``answer`` (an option letter or an option text).
- ``open``: ``answer`` judged by the paper-mode reward rules (answer.paper_is_correct).

The prediction is the completion's answer line, found as the paper-mode reward finds it
(answer.paper_final_answer: "### The final answer is:" or, as leniently as the released
evaluator, "The final answer is" with or without "###"/"**"); a completion of one non-empty
line with no such header is its own answer line. Then, with wrappers dropped ("**B**",
"$\\boxed{B}$", a trailing "."; answer_forms.unwrap):

- an answer line offering candidates its gold lacks ("B or C", "5 or 7", "3, 4" vs 4,
  "5 (not 3)"; answer_forms.hedge_markers) is wrong;
- multiple choice: the picked option is, in order, the option whose text equals the line up to
  case and blanks ("8", "Yes" vs "yes"), the option of a letter ("B", "b", "(B)", "B: 8" -- the
  letter decides), or the one option with the same plain number ("8.0" vs "8"); correct when it is
  the gold option;
- integer: the line's plain number (answer_forms.number_of_core: units, "x =", "1,000",
  "\\frac{a}{b}" handled; the record's ``unit`` removed first) equals the gold exactly;
- float: round(float(value), precision) equals round(float(gold), precision) -- the released
  MathVista rule ("1.43" vs 1.4 at precision 1 is correct);
- text: equal after unwrapping, case folding and collapsing blanks;
- list: "[a, b]" / "a, b" / "(a, b)": same length, each element equal as a number or as text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from . import answer_forms as forms
from .answer import paper_final_answer, paper_is_correct

FORMATS = ("mathvista", "mcq", "open")
QUESTION_TYPES = ("multi_choice", "free_form")
ANSWER_TYPES = ("integer", "float", "text", "list")

# Our wording of the released evaluator's reasoning prompt: the same ### layout the rewards
# score (docs/METHOD.md section 2), asked for as a walk-through of the problem.
RELEASED_EVAL_PROMPT = (
    "Work through this problem about the image carefully and show your reasoning in this layout. "
    "Under \"### Image Description:\" say what the image shows that matters for the question. "
    "Under \"### Rationales:\" say what has to be found and how you will find it. Then write "
    "\"### Let's think step by step.\" and reason in numbered sections \"### Step 1:\", "
    "\"### Step 2:\" and so on. Finish with \"### The final answer is:\" followed by the answer "
    "alone."
)


@dataclass(frozen=True)
class BenchmarkItem:
    """One benchmark record, validated (benchmark_records.load_benchmark).

    gold_index: the correct option's index for multiple choice, else None.
    precision:  decimals for float answers, else None.
    where:      "file:line" of the record.
    """

    pid: str
    question: str
    answer: str
    question_type: str
    answer_type: str
    choices: tuple[str, ...] | None = None
    gold_index: int | None = None
    precision: int | None = None
    unit: str | None = None
    source: str = "unknown"
    image: str | None = None
    where: str = ""


@dataclass(frozen=True)
class Judgement:
    answer_line: str | None  # None: the completion gives no answer
    correct: bool


def option_letter(index: int) -> str:
    return chr(ord("A") + index)


def question_text(item: BenchmarkItem) -> str:
    """The question as the model sees it: the question, the options "(A) ..." and what form the
    answer takes (then a reasoning prompt follows, chosen by the caller)."""
    parts = [item.question.strip()]
    if item.choices is not None:
        options = "\n".join(f"({option_letter(i)}) {c}" for i, c in enumerate(item.choices))
        parts.append(f"Choices:\n{options}")
        parts.append("Answer with the letter of the correct option.")
    elif item.answer_type == "integer":
        parts.append("The answer is an integer.")
    elif item.answer_type == "float":
        parts.append(f"The answer is a number with {item.precision} decimal place(s).")
    elif item.answer_type == "list":
        parts.append("The answer is a list, written like [1, 2, 3].")
    return "\n".join(parts)


def benchmark_answer_line(completion: str) -> str | None:
    """The completion's answer line (module docstring), or None."""
    line = paper_final_answer(completion)
    if line is not None:
        return line
    lines = [s.strip() for s in completion.strip().splitlines() if s.strip()]
    return lines[0] if len(lines) == 1 else None


def judge(item: BenchmarkItem, completion: str, fmt: str) -> Judgement:
    """Score ``completion`` against ``item`` under format ``fmt`` (one of FORMATS)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown benchmark format {fmt!r}; choose one of {FORMATS}")
    line = benchmark_answer_line(completion)
    if line is None:
        return Judgement(None, False)
    if fmt == "open":
        return Judgement(line, paper_is_correct(line, item.answer))
    return Judgement(line, answer_line_correct(item, line))


def answer_line_correct(item: BenchmarkItem, line: str) -> bool:
    """MathVista / MCQ rules (module docstring) for one answer line."""
    gold_text = item.choices[item.gold_index] if item.choices is not None else item.answer
    extra = forms.hedge_markers(line) - forms.hedge_markers(gold_text)
    if item.answer_type == "list":
        extra -= {","}  # a list's own separators
    if extra:
        return False
    core = forms.unwrap(line)
    if item.choices is not None:
        return pick_option(core, item.choices) == item.gold_index
    if item.answer_type == "text":
        return forms.casefold_core(core) == forms.casefold_text(item.answer)
    if item.answer_type == "list":
        return _lists_equal(_list_elements(core), _list_elements(forms.unwrap(item.answer)))
    value = number_without_unit(core, item.unit)
    gold = number_without_unit(forms.unwrap(item.answer), item.unit)
    if value is None or gold is None:
        return False
    if item.answer_type == "integer":
        return value == gold
    return round(float(value), item.precision) == round(float(gold), item.precision)


_LOWER_LETTER = re.compile(r"^(?:\(([a-z])\)|([a-z])(?:[.:)]|$))")


def pick_option(core: str, choices: tuple[str, ...]) -> int | None:
    """Index of the option an unwrapped answer names (module docstring), or None."""
    folded = forms.casefold_core(core)
    by_text = [i for i, c in enumerate(choices) if forms.casefold_text(c) == folded]
    if len(by_text) == 1:
        return by_text[0]
    letter = forms.choice_letter(core)
    if letter is None:
        m = _LOWER_LETTER.match(core)
        letter = None if m is None else (m.group(1) or m.group(2)).upper()
    if letter is not None:
        index = ord(letter) - ord("A")
        return index if index < len(choices) else None
    value = forms.number_of_core(core)
    if value is None:
        return None
    by_value = [i for i, c in enumerate(choices) if forms.plain_number(c) == value]
    return by_value[0] if len(by_value) == 1 else None


def number_without_unit(core: str, unit: str | None) -> Fraction | None:
    """answer_forms.number_of_core after removing the record's own unit ("cm^2", "years")."""
    if unit and unit.strip():
        unit = unit.strip()
        for form in (unit, f"\\text{{{unit}}}", f"\\mathrm{{{unit}}}", f"\\text{{ {unit}}}"):
            if core.endswith(form) and len(core) > len(form):
                core = core[: -len(form)].strip()
                break
    return forms.number_of_core(core)


def _list_elements(text: str) -> list[str]:
    text = text.strip()
    if len(text) >= 2 and (text[0], text[-1]) in (("[", "]"), ("(", ")")):
        text = text[1:-1]
    return [forms.unwrap(part) for part in text.split(",")] if text.strip() else []


def _lists_equal(answer: list[str], gold: list[str]) -> bool:
    if len(answer) != len(gold):
        return False
    for a, g in zip(answer, gold):
        a_value, g_value = forms.number_of_core(a), forms.number_of_core(g)
        if a_value is not None and g_value is not None:
            if a_value != g_value:
                return False
        elif forms.casefold_core(a) != forms.casefold_core(g):
            return False
    return True
