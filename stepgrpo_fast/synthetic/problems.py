"""The four problem kinds of the synthetic task and the "###" reasoning layout they are written in.

  add      two numbers written in the picture; their sum          (numbers also in the question
  area     a rectangle with labelled sides; its area               when ``text_hints`` is True)
  count    coloured shapes; how many have the asked colour          (needs the image)
  compare  two bars A and B; which is taller                        (needs the image)
``make_problem(rng, kind, **options)`` draws one ``Problem``: a PIL picture, its question, the
answer, a reference reasoning in the exact layout of docs/METHOD.md §2 (``format_response``) and
key steps with several equivalent surface forms ("3 + 4 = 7", "3+4=7", "seven").
``break_layout`` breaks that layout the way a weak teacher does. Seeded streams, splits and the
dataset files are synthetic/task.py's.
"""

from __future__ import annotations

import dataclasses
import random

from PIL import Image, ImageDraw, ImageFont

HEADER_DESCRIPTION = "### Image Description:"
HEADER_RATIONALES = "### Rationales:"
HEADER_THINK = "### Let's think step by step."
HEADER_FINAL = "### The final answer is:"
RESPONSE_HEADERS = (
    HEADER_DESCRIPTION,
    HEADER_RATIONALES,
    HEADER_THINK,
    "### Step 1:",
    "### Step 2:",
    "### Step 3:",
    HEADER_FINAL,
)

KINDS = ("add", "area", "count", "compare")
# How a weak teacher breaks the "###" layout (see break_layout); StepRVR scores each 0.
LAYOUT_FAULTS = ("misnumbered", "no_rationales", "answer_first")

COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 170, 60)}
_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_word(n: int) -> str:
    """0..99 -> English words ("seven", "twenty-one")."""
    if not 0 <= n < 100:
        raise ValueError(f"number_word: {n} outside 0..99")
    if n < 20:
        return _WORDS[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + ("" if ones == 0 else "-" + _WORDS[ones])


@dataclasses.dataclass
class Problem:
    kind: str
    image: Image.Image
    question: str
    solution: str
    response: str  # reference reasoning in the "###" layout
    key_steps: list[list[str]]  # groups of equivalent forms
    layout_fault: str | None = None  # the LAYOUT_FAULTS entry that broke ``response``, if any


def format_response(description: str, rationale: str, steps: list[str], answer: str) -> str:
    """The spec's layout: description, rationales, "Let's think step by step.", numbered steps,
    final answer."""
    lines = [HEADER_DESCRIPTION, description, HEADER_RATIONALES, rationale, HEADER_THINK]
    for i, step in enumerate(steps, start=1):
        lines += [f"### Step {i}:", step]
    lines += [HEADER_FINAL, answer]
    return "\n".join(lines)


def _response_sections(response: str) -> list[list[str]]:
    """[[header line, body lines...], ...] of a response written by format_response."""
    sections: list[list[str]] = []
    for line in response.split("\n"):
        if line in RESPONSE_HEADERS or (line.startswith("### Step ") and line.endswith(":")):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            raise ValueError(f"not a format_response layout: text before the first header: {line!r}")
    return sections


def break_layout(response: str, fault: str) -> str:
    """``response`` (format_response's layout) with its layout broken as a weak teacher does:
      misnumbered    the last step is numbered one too high ("### Step 1:", "### Step 3:")
      no_rationales  the "### Rationales:" section is left out
      answer_first   the final-answer section comes right after the rationales, before the steps
    The words of every section are kept; StepRVR (paper and official mode) scores the result 0."""
    sections = _response_sections(response)
    headers = [s[0] for s in sections]
    steps = [i for i, h in enumerate(headers) if h.startswith("### Step ")]
    if HEADER_FINAL not in headers or HEADER_RATIONALES not in headers or not steps:
        raise ValueError("break_layout needs a response with rationales, steps and a final answer")
    if fault == "misnumbered":
        last = steps[-1]
        sections[last][0] = f"### Step {len(steps) + 1}:"
    elif fault == "no_rationales":
        sections.pop(headers.index(HEADER_RATIONALES))
    elif fault == "answer_first":
        final = sections.pop(headers.index(HEADER_FINAL))
        sections.insert(headers.index(HEADER_RATIONALES) + 1, final)
    else:
        raise ValueError(f"unknown layout fault {fault!r}; choose from {LAYOUT_FAULTS}")
    return "\n".join(line for section in sections for line in section)


def _font(size: int):
    return ImageFont.load_default(size=size)


def _canvas(width: int, height: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (width, height), (255, 255, 255))
    return image, ImageDraw.Draw(image)


def make_add(rng: random.Random, *, max_value: int = 9, text_hints: bool = True,
             carry_slip: float = 0.0) -> Problem:
    """``carry_slip``: probability that the reference reasoning (``response``) of a carrying sum
    comes from a weak teacher that drops the carry ("7 + 8 = 5"); solution and key steps stay
    right. The draw is made for every problem, so the problems do not depend on the rate."""
    a, b = rng.randint(1, max_value), rng.randint(1, max_value)
    image, draw = _canvas(84, 56)
    draw.text((rng.randint(4, 14), rng.randint(8, 20)), str(a), fill=(0, 0, 0), font=_font(24))
    draw.text((rng.randint(46, 58), rng.randint(8, 20)), str(b), fill=(0, 0, 0), font=_font(24))
    total = a + b
    slipped = rng.random() < carry_slip and total >= 10
    taught = total - 10 if slipped else total  # what the teacher writes
    hint = f" The numbers are {a} and {b}." if text_hints else ""
    return Problem(
        kind="add",
        image=image,
        question=f"What is the sum of the two numbers in the image?{hint}",
        solution=str(total),
        response=format_response(
            f"The image shows the numbers {a} and {b}.",
            "The answer is the sum of the two numbers.",
            [f"The numbers are {a} and {b}.", f"{a} + {b} = {taught}"],
            str(taught),
        ),
        key_steps=[
            [f"{a} and {b}", f"{b} and {a}"],
            [
                f"{a} + {b} = {total}",
                f"{a}+{b}={total}",
                f"{b} + {a} = {total}",
                f"{b}+{a}={total}",
                number_word(total),
            ],
        ],
    )


def make_area(rng: random.Random, *, max_value: int = 9, text_hints: bool = True) -> Problem:
    w, h = rng.randint(2, max_value), rng.randint(2, max_value)
    image, draw = _canvas(84, 84)
    box_w, box_h = 20 + 5 * w, 20 + 5 * h  # drawn size grows with the labels (<= 65 px)
    x0, y0 = rng.randint(12, 84 - box_w - 1), rng.randint(2, 70 - box_h)
    draw.rectangle((x0, y0, x0 + box_w, y0 + box_h), outline=(0, 0, 0), width=2)
    draw.text((x0 + box_w // 2 - 3, 71), str(w), fill=(0, 0, 0), font=_font(12))
    draw.text((1, y0 + box_h // 2 - 6), str(h), fill=(0, 0, 0), font=_font(12))
    area = w * h
    hint = f" Its sides are {w} and {h}." if text_hints else ""
    return Problem(
        kind="area",
        image=image,
        question=f"What is the area of the rectangle?{hint}",
        solution=str(area),
        response=format_response(
            f"The image shows a rectangle with sides {w} and {h}.",
            "The area of a rectangle is width times height.",
            [f"The sides are {w} and {h}.", f"{w} * {h} = {area}"],
            str(area),
        ),
        key_steps=[
            [f"{w} and {h}", f"{h} and {w}"],
            [
                f"{w} * {h} = {area}",
                f"{w}*{h}={area}",
                f"{w} x {h} = {area}",
                f"{h} * {w} = {area}",
                f"{w} \\times {h} = {area}",
                number_word(area) if area < 100 else str(area),
            ],
        ],
    )


def make_count(rng: random.Random, *, max_count: int = 5) -> Problem:
    target, other = rng.sample(sorted(COLOURS), 2)
    n_target, n_other = rng.randint(1, max_count), rng.randint(0, 2)
    image, draw = _canvas(84, 84)
    cells = rng.sample([(r, c) for r in range(3) for c in range(3)], n_target + n_other)
    for i, (r, c) in enumerate(cells):
        colour = COLOURS[target if i < n_target else other]
        x, y = 6 + 26 * c, 6 + 26 * r
        if rng.random() < 0.5:
            draw.ellipse((x, y, x + 20, y + 20), fill=colour)
        else:
            draw.rectangle((x, y, x + 20, y + 20), fill=colour)
    counting = ", ".join(str(i) for i in range(1, n_target + 1))
    others = f" and {n_other} {other} shapes" if n_other else ""
    return Problem(
        kind="count",
        image=image,
        question=f"How many {target} shapes are in the image?",
        solution=str(n_target),
        response=format_response(
            f"The image shows {n_target} {target} shapes{others}.",
            f"Count only the {target} shapes.",
            [f"Count the {target} shapes: {counting}.", f"There are {n_target} {target} shapes."],
            str(n_target),
        ),
        # Every form ends at the total ("1, 2, 3." with its full stop, "there are 3 red shapes"),
        # so a wrong count never contains a right form: "1, 2, 3, 4." does not hold "1, 2, 3."
        key_steps=[
            [f"{counting}.", f"{counting.replace(' ', '')}."],
            [
                f"there are {n_target} {target} shapes",
                f"{number_word(n_target)} {target} shapes",
                f"{n_target} {target} shapes in total",
            ],
        ],
    )


def make_compare(rng: random.Random, *, max_value: int = 9) -> Problem:
    a, b = rng.sample(range(1, max_value + 1), 2)
    image, draw = _canvas(56, 84)
    unit = 64 // max_value
    for x, value, colour in ((8, a, (40, 80, 220)), (32, b, (220, 120, 40))):
        x += rng.randint(-3, 3)  # jitter: the same heights do not always give the same picture
        draw.rectangle((x, 72 - unit * value, x + rng.randint(12, 16), 72), fill=colour)
    draw.text((12, 72), "A", fill=(0, 0, 0), font=_font(11))
    draw.text((36, 72), "B", fill=(0, 0, 0), font=_font(11))
    taller, big, small = ("A", a, b) if a > b else ("B", b, a)
    return Problem(
        kind="compare",
        image=image,
        question="Which bar is taller, A or B?",
        solution=taller,
        response=format_response(
            f"The image shows bar A with height {a} and bar B with height {b}.",
            "The taller bar has the larger height.",
            [f"Bar A is {a} and bar B is {b}.", f"{big} > {small}, so {taller} is taller."],
            taller,
        ),
        key_steps=[
            [f"{big} > {small}", f"{big}>{small}", f"{small} < {big}", f"{small}<{big}"],
            [f"{taller} is taller", f"bar {taller} is taller"],
        ],
    )


_MAKERS = {"add": make_add, "area": make_area, "count": make_count, "compare": make_compare}


def make_problem(rng: random.Random, kind: str, **options) -> Problem:
    if kind not in _MAKERS:
        raise ValueError(f"unknown problem kind {kind!r}; choose from {KINDS}")
    return _MAKERS[kind](rng, **options)
