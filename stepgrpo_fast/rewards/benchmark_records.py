"""Loading benchmark records and given completions for ``stepgrpo eval --format``.

Records: JSONL, a JSON list, or a JSON object mapping pid -> record (MathVista's testmini.json
layout; the key is the pid when the record has none). Fields each format needs:

- mathvista: pid, question, answer, question_type ("multi_choice" | "free_form"), answer_type
  ("integer" | "float" | "text" | "list"); choices (a list of option texts holding the answer)
  for multi_choice; precision (decimals) for float answers. Optional: unit, image,
  metadata.source.
- mcq: pid, question, choices, answer (an option text or letter). Optional: image,
  metadata.source.
- open: pid, question, answer. Optional: image, metadata.source.

Completions: JSONL of {"pid", "completion"} (a ``--predictions`` file of an earlier run works
too). Every problem is reported with its file:line; pids are compared as strings.
"""
from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

from stepgrpo_fast import textio

from . import answer_forms as forms
from .benchmark_formats import (
    ANSWER_TYPES,
    FORMATS,
    QUESTION_TYPES,
    BenchmarkItem,
    number_without_unit,
)

_MAX_REPORTED_ERRORS = 10


def load_benchmark(path: str | pathlib.Path, fmt: str) -> list[BenchmarkItem]:
    """Validate every record of ``path`` for format ``fmt`` -> items, in file order.

    Raises ValueError naming file:line and the field for each bad record (up to 10 listed), and
    for a pid given twice (both lines)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown benchmark format {fmt!r}; choose one of {FORMATS}")
    path = pathlib.Path(path)
    items, errors, seen = [], [], {}
    for line, key, raw in iter_json_records(path):
        where = f"{path}:{line}"
        try:
            item = _parse_item(raw, key, fmt, where)
        except ValueError as err:
            errors.append(str(err))
            continue
        if item.pid in seen:
            errors.append(f"{where}: pid {item.pid!r} also at {seen[item.pid]}")
            continue
        seen[item.pid] = where
        items.append(item)
    _raise_errors(errors, f"invalid {fmt} record(s) in {path}")
    if not items:
        raise ValueError(f"{path}: no records")
    return items


def load_completions(path: str | pathlib.Path, items: list[BenchmarkItem]) -> list[str]:
    """The completion of every item, in the items' order, from a {"pid", "completion"} file.

    Raises ValueError for a line without a string pid / completion (file:line), a pid given
    twice (both lines), a pid with no record, and records without a completion (first 10)."""
    path = pathlib.Path(path)
    known = {item.pid for item in items}
    by_pid: dict[str, tuple[str, str]] = {}
    errors = []
    for line, _, raw in iter_json_records(path):
        where = f"{path}:{line}"
        if not isinstance(raw, dict):
            errors.append(f"{where}: expected a JSON object, got {type(raw).__name__}")
            continue
        pid, completion = raw.get("pid"), raw.get("completion")
        if not _is_pid(pid):
            errors.append(f"{where}: field 'pid' missing or not a string / integer")
            continue
        if not isinstance(completion, str):
            errors.append(f"{where}: field 'completion' missing or not a string")
            continue
        pid = str(pid)
        if pid in by_pid:
            errors.append(f"{where}: pid {pid!r} also at {by_pid[pid][0]}")
        elif pid not in known:
            errors.append(f"{where}: pid {pid!r} has no record in the data file")
        else:
            by_pid[pid] = (where, completion)
    _raise_errors(errors, f"invalid completion(s) in {path}")
    missing = [item.pid for item in items if item.pid not in by_pid]
    if missing:
        shown = ", ".join(repr(p) for p in missing[:_MAX_REPORTED_ERRORS])
        more = f" and {len(missing) - _MAX_REPORTED_ERRORS} more" if len(missing) > 10 else ""
        raise ValueError(f"{path}: no completion for {len(missing)} record(s): pid {shown}{more}")
    return [by_pid[item.pid][1] for item in items]


def _raise_errors(errors: list[str], title: str) -> None:
    if not errors:
        return
    shown = "\n  ".join(errors[:_MAX_REPORTED_ERRORS])
    more = len(errors) - _MAX_REPORTED_ERRORS
    tail = f"\n  ... and {more} more" if more > 0 else ""
    raise ValueError(f"{len(errors)} {title}:\n  {shown}{tail}")


# ------------------------------------------------------------------------------ record fields
def _is_pid(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return (isinstance(value, str) and value.strip() != "") or isinstance(value, int)


def _text(raw: dict, name: str, where: str, *, numbers: bool = False) -> str:
    value = raw.get(name)
    ok = isinstance(value, str) or (numbers and isinstance(value, (int, float))
                                    and not isinstance(value, bool))
    if not ok or not str(value).strip():
        kind = "a non-empty string or number" if numbers else "a non-empty string"
        raise ValueError(f"{where}: field {name!r} missing or not {kind}")
    return str(value)


def _choices(raw: dict, where: str) -> tuple[str, ...]:
    value = raw.get("choices")
    if not isinstance(value, list) or not value or len(value) > 26 or not all(
        isinstance(c, (str, int, float)) and not isinstance(c, bool) and str(c).strip()
        for c in value
    ):
        raise ValueError(
            f"{where}: field 'choices' missing or not a list of 1-26 non-empty option texts"
        )
    return tuple(str(c) for c in value)


def _gold_index(answer: str, choices: tuple[str, ...], where: str, *, letters: bool) -> int:
    if answer in choices:
        return choices.index(answer)
    gold = forms.casefold_text(answer)
    folded = [i for i, c in enumerate(choices) if forms.casefold_text(c) == gold]
    if len(folded) == 1:  # the same option up to case, blanks and wrappers
        return folded[0]
    stripped = answer.strip()
    if letters and len(stripped) == 1 and "A" <= stripped.upper() <= "Z":
        index = ord(stripped.upper()) - ord("A")
        if index < len(choices):
            return index
    allowed = "an option text or letter" if letters else "one of the option texts"
    raise ValueError(f"{where}: field 'answer' {answer!r} is not {allowed} of 'choices'")


def _precision(raw: dict, where: str) -> int:
    value = raw.get("precision")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 \
            or float(value) != int(value):
        raise ValueError(
            f"{where}: field 'precision' (decimals of a float answer) missing or not a "
            f"non-negative whole number, got {value!r}"
        )
    return int(value)


def _source(raw: dict, where: str) -> str:
    metadata = raw.get("metadata")
    if metadata is None:
        return "unknown"
    if not isinstance(metadata, dict):
        raise ValueError(f"{where}: field 'metadata' must be an object")  # noqa: TRY004
    source = metadata.get("source")
    return str(source) if source is not None and str(source).strip() else "unknown"


def _optional_text(raw: dict, name: str, where: str) -> str | None:
    value = raw.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where}: field {name!r} must be a string or null")
    return value or None


def _parse_item(raw: Any, key: str | None, fmt: str, where: str) -> BenchmarkItem:
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        raise ValueError(f"{where}: expected a JSON object, got {kind}")  # noqa: TRY004
    pid = raw.get("pid", key)
    if not _is_pid(pid):
        raise ValueError(f"{where}: field 'pid' missing or not a string / integer")
    question = _text(raw, "question", where)
    answer = _text(raw, "answer", where, numbers=True)
    common = {"pid": str(pid), "question": question, "answer": answer, "where": where,
              "source": _source(raw, where), "image": _optional_text(raw, "image", where)}
    if fmt == "open":
        return BenchmarkItem(question_type="free_form", answer_type="text", **common)
    if fmt == "mcq":
        choices = _choices(raw, where)
        return BenchmarkItem(question_type="multi_choice", answer_type="text", choices=choices,
                             gold_index=_gold_index(answer, choices, where, letters=True),
                             **common)
    question_type, answer_type = raw.get("question_type"), raw.get("answer_type")
    if question_type not in QUESTION_TYPES:
        raise ValueError(f"{where}: field 'question_type' must be one of {QUESTION_TYPES}, "
                         f"got {question_type!r}")
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"{where}: field 'answer_type' must be one of {ANSWER_TYPES}, "
                         f"got {answer_type!r}")
    unit = _optional_text(raw, "unit", where)
    if question_type == "multi_choice":
        choices = _choices(raw, where)
        return BenchmarkItem(question_type=question_type, answer_type=answer_type,
                             choices=choices, unit=unit,
                             gold_index=_gold_index(answer, choices, where, letters=False),
                             **common)
    precision = _precision(raw, where) if answer_type == "float" else None
    if answer_type in ("integer", "float") and \
            number_without_unit(forms.unwrap(answer), unit) is None:
        raise ValueError(f"{where}: field 'answer' {answer!r} is not a number ({answer_type})")
    return BenchmarkItem(question_type=question_type, answer_type=answer_type,
                         precision=precision, unit=unit, **common)


# ------------------------------------------------------------------------------------ JSON
def iter_json_records(path: pathlib.Path) -> Iterator[tuple[int, str | None, Any]]:
    """Yield (line, key, value) per record of a JSONL file, a JSON list (key None) or a JSON
    object of records (key = the record's name). Bad JSON -> ValueError naming file:line."""
    return textio.iter_json_records(path, missing=f"file {str(path)!r} does not exist",
                                    keyed=True)
