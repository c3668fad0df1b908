"""The record layouts users bring, recognised by their columns, and ``column_map`` for others.

Every layout is read into one canonical row: ``images`` (a list of image sources: paths,
``{"bytes", "path"}`` entries, bytes, lazy Arrow references), ``question`` (with one ``<image>``
placeholder per image, or none: the images then go before it), ``solution``, ``key_steps``,
``response`` (SFT). Layouts (docs/data.md has one example row of each):

    ours       image | images, question, solution, key_steps, response
    r1vl       image_path, problem, solution ("###" trace or <answer> tags), key_steps {"Steps"}
    easyr1     images [HF Image], problem with one <image> per image, answer
    sharegpt   messages [{role, content}] (or conversations [{from, value}]), images
    trl        prompt (a conversation, parts {"type": "image" | "text"}), image | images
    mathvista  pid, question, decoded_image | image, choices, answer
    custom     any columns, named through column_map {our field: their column}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

FIELDS = ("image", "images", "question", "solution", "key_steps", "response")
LAYOUTS = ("ours", "r1vl", "easyr1", "sharegpt", "trl", "mathvista", "custom")
IMAGE_PLACEHOLDER = "<image>"
_ANSWER_TAGS = re.compile(r"^\s*<answer>(.*?)</answer>\s*$", re.DOTALL)
_USER_ROLES = ("user", "human")
_ASSISTANT_ROLES = ("assistant", "gpt")


class FieldError(ValueError):
    """A record's field is missing or malformed; the message starts with "field '...'"."""


def parse_column_map(value: Any) -> dict[str, str]:
    """``["question=query", "image=img"]`` (the command line) or ``{"question": "query"}`` (YAML)
    -> {our field: their column}; ValueError naming the entry when it is malformed."""
    if not value:
        return {}
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, (list, tuple)):
        pairs = []
        for entry in value:
            if not isinstance(entry, str) or entry.count("=") != 1:
                raise ValueError(f"column_map entry {entry!r} must look like field=column")
            ours, theirs = (part.strip() for part in entry.split("="))
            pairs.append((ours, theirs))
    else:
        raise ValueError(f"column_map must be a list of field=column or a mapping, got {value!r}")
    mapping = {}
    for ours, theirs in pairs:
        if ours not in FIELDS:
            raise ValueError(f"column_map: unknown field {ours!r} (fields: {', '.join(FIELDS)})")
        if not isinstance(theirs, str) or not theirs:
            raise ValueError(f"column_map: field {ours!r} needs a column name, got {theirs!r}")
        mapping[ours] = theirs
    return mapping


def detect_layout(columns: Iterable[str], column_map: Mapping[str, str] | None = None) -> str:
    """The layout of a data set with these columns; ValueError listing them when none fits."""
    cols = set(columns)
    if column_map:
        missing = sorted(c for c in column_map.values() if c not in cols)
        if missing:
            raise ValueError(f"column_map names column(s) {missing} the data lacks "
                             f"(columns: {sorted(cols)})")
        return "custom"
    if cols & {"messages", "conversations"}:
        return "sharegpt"
    if "prompt" in cols:
        return "trl"
    if {"pid", "question", "answer"} <= cols and cols & {"decoded_image", "image", "choices"}:
        return "mathvista"
    if {"images", "problem", "answer"} <= cols:
        return "easyr1"
    if cols & {"image_path", "problem"} and cols & {"solution", "answer"}:
        return "r1vl"
    if cols & {"question", "problem"} and cols & {"solution", "answer", "response"}:
        return "ours"
    raise ValueError(
        f"no known layout has the columns {sorted(cols)}: name yours with column_map, e.g. "
        "--column-map question=query solution=gt image=img key_steps=steps (docs/data.md)"
    )


def canonical_row(row: Mapping[str, Any], layout: str,
                  column_map: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A row of ``layout`` -> {"images", "question", "solution", "key_steps", "response"};
    values are returned as found (checked by records.py); FieldError for a malformed shape."""
    if layout == "custom":
        row = {**row, **{ours: row.get(theirs) for ours, theirs in (column_map or {}).items()}}
    if layout == "sharegpt":
        return _sharegpt(row)
    if layout == "trl":
        return _trl(row)
    out = {
        "images": _images(row, ("decoded_image", "image") if layout == "mathvista"
                          else ("images", "image", "image_path")),
        "question": _first(row, ("question", "problem")),
        "solution": unwrap_answer(_first(row, ("solution", "answer"))),
        "key_steps": row.get("key_steps"),
        "response": row.get("response"),
    }
    if layout == "mathvista":
        out["question"] = _with_choices(out["question"], row.get("choices"))
    return out


def _first(row: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if row.get(name) is not None:
            return row[name]
    return None


def _images(row: Mapping[str, Any], names: tuple[str, ...]) -> list:
    for name in names:
        value = row.get(name)
        if value is None:
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        for i, v in enumerate(values):
            if v is None or (isinstance(v, str) and not v.strip()):
                raise FieldError(f"field '{name}' entry {i} is empty")
        return values
    return []


def unwrap_answer(solution: Any) -> Any:
    """``<answer> 3 </answer>`` -> ``3`` (the released layout); anything else unchanged."""
    if isinstance(solution, str):
        match = _ANSWER_TAGS.match(solution)
        if match:
            return match.group(1).strip()
    return solution


def _with_choices(question: Any, choices: Any) -> Any:
    if not isinstance(question, str) or not choices:
        return question
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    listed = "\n".join(f"({letters[i]}) {c}" for i, c in enumerate(choices) if i < len(letters))
    return f"{question}\nChoices:\n{listed}"


def final_answer_of(response: Any) -> str:
    """The answer a reference response ends with ("### The final answer is:" line or
    <answer> tags), "" when it names none (SFT needs none)."""
    if not isinstance(response, str):
        return ""
    tagged = re.search(r"<answer>(.*?)</answer>", response, re.DOTALL)
    if tagged:
        return tagged.group(1).strip()
    from stepgrpo_fast.rewards.answer import paper_final_answer

    return paper_final_answer(response) or ""


def _turns(row: Mapping[str, Any]) -> list[tuple[str, Any]]:
    name = "messages" if row.get("messages") is not None else "conversations"
    turns = row.get(name)
    if not isinstance(turns, list) or not turns:
        raise FieldError(f"field '{name}' must be a non-empty list of turns")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise FieldError(f"field '{name}[{i}]' must be an object with role and content")
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        if role not in (*_USER_ROLES, *_ASSISTANT_ROLES, "system"):
            raise FieldError(f"field '{name}[{i}]' has an unknown role {role!r}")
        out.append((role, content))
    return out


def _sharegpt(row: Mapping[str, Any]) -> dict[str, Any]:
    turns = [(r, c) for r, c in _turns(row) if r != "system"]
    users = [c for r, c in turns if r in _USER_ROLES]
    answers = [c for r, c in turns if r in _ASSISTANT_ROLES]
    if len(users) != 1 or len(answers) > 1:
        raise FieldError(f"field 'messages': one user turn (and at most one assistant turn) "
                         f"expected, got {len(users)} and {len(answers)}")
    response = answers[0] if answers else None
    solution = _first(row, ("solution", "answer"))
    return {
        "images": _images(row, ("images", "image")),
        "question": _text_of(users[0], "messages"),
        "solution": unwrap_answer(solution) if solution is not None else final_answer_of(response),
        "key_steps": row.get("key_steps"),
        "response": _text_of(response, "messages") if response is not None else None,
    }


def _text_of(content: Any, field: str) -> Any:
    """A message content (a string, or TRL's list of {"type": "text" | "image"} parts) -> text
    with an <image> placeholder where each image part stands."""
    if isinstance(content, list):
        pieces = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") not in ("text", "image"):
                raise FieldError(f"field '{field}': content parts must be "
                                 f"{{'type': 'text' | 'image'}}, got {part!r}")
            pieces.append(IMAGE_PLACEHOLDER if part["type"] == "image" else part.get("text") or "")
        return "".join(pieces)
    return content


def _trl(row: Mapping[str, Any]) -> dict[str, Any]:
    prompt = row.get("prompt")
    if isinstance(prompt, list):
        users = [t for t in prompt if isinstance(t, Mapping) and t.get("role") == "user"]
        if not users:
            raise FieldError("field 'prompt' holds no user turn")
        question = "\n".join(str(_text_of(t.get("content"), "prompt")) for t in users)
    else:
        question = prompt
    completion = row.get("completion")
    if isinstance(completion, list):
        completion = "".join(str(_text_of(t.get("content"), "completion")) for t in completion
                             if isinstance(t, Mapping))
    return {
        "images": _images(row, ("images", "image")),
        "question": question,
        "solution": unwrap_answer(_first(row, ("solution", "answer", "ground_truth"))),
        "key_steps": row.get("key_steps"),
        "response": completion if completion is not None else row.get("response"),
    }
