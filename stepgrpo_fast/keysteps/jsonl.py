"""Key steps for a JSONL file: every record's reference reasoning (default field "response",
the "###" layout) -> its "key_steps" (groups of equivalent forms); every other field is kept
and the file's record order too.

    extract_file(IN.jsonl, OUT.jsonl, max_groups=6, model=None, skip_missing=False) -> Summary

Bad input stops the run before anything is written (a ValueError naming FILE:LINE): a line that
is not JSON, a record that is not an object, a reasoning that is not a string, or, without
``skip_missing``, a record whose reasoning is missing or blank (with it such records are copied
unchanged and counted). A reasoning without "### Step N:" sections gets no groups (counted).
When input records already hold key steps (a generator's, a teacher's), the summary also gives
the recall and precision of the extracted ones against them (see quality.py).
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
from dataclasses import dataclass, field

from stepgrpo_fast.rewards.matching import canonical_key_steps
from stepgrpo_fast.textio import read_utf8_text

from .clauses import step_bodies
from .quality import Quality
from .rules import DEFAULT_MAX_GROUPS, check_max_groups, extract_key_steps

_MAX_REPORTED_ERRORS = 10


@dataclass
class Summary:
    """What ``extract_file`` did. ``quality`` compares against input key steps, when any."""

    data: str
    out: str
    extractor: str                 # "rules" or "model:PATH"
    records: int = 0
    with_groups: int = 0
    no_step_sections: int = 0      # reasoning present but no "### Step N:" section
    no_groups_found: int = 0       # step sections, but nothing extracted
    skipped_missing: int = 0       # no reasoning (--skip-missing): copied unchanged
    groups: int = 0
    proposals: int = 0             # model lines proposed
    proposals_kept: int = 0        # ... that gave a group found in the reasoning
    quality: Quality = field(default_factory=Quality)

    def lines(self) -> list[str]:
        done = self.records - self.skipped_missing
        per_record = self.groups / done if done else 0.0
        out = [f"{self.data} -> {self.out} ({self.extractor})",
               (f"records: {self.records}; with key steps: {self.with_groups}; "
                f"groups: {self.groups} ({per_record:.2f} per record)"),
               (f"no step sections: {self.no_step_sections}; step sections but nothing extracted: "
                f"{self.no_groups_found}; skipped (no reasoning): {self.skipped_missing}")]
        if self.extractor != "rules":
            out.append(f"model proposals: {self.proposals}; kept (found in the reasoning): "
                       f"{self.proposals_kept}; rejected: {self.proposals - self.proposals_kept}")
        q = self.quality
        if q.records:
            out.append(f"vs the input's key_steps ({q.records} records, {q.true_groups} groups): "
                       f"recall {q.recall:.3f}, precision {q.precision:.3f}")
        return out


@dataclass
class _Row:
    line: int
    record: dict | None            # None for a line left as it was (blank)
    reasoning: str | None
    true_groups: list | None


def read_rows(path: pathlib.Path, reasoning_field: str, skip_missing: bool) -> list[_Row]:
    """Parse and check every line; raises ValueError listing the bad FILE:LINE entries."""
    text = read_utf8_text(path, missing=f"--data {str(path)!r}: no such file")
    rows, errors = [], []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            rows.append(_parse_line(line, line_no, where, reasoning_field, skip_missing))
        except ValueError as err:
            errors.append(str(err))
    if errors:
        shown = "\n  ".join(errors[:_MAX_REPORTED_ERRORS])
        more = len(errors) - _MAX_REPORTED_ERRORS
        raise ValueError(f"{len(errors)} bad record(s) in {path}:\n  {shown}"
                         + (f"\n  ... and {more} more" if more > 0 else ""))
    if not rows:
        raise ValueError(f"{path}: no records")
    return rows


def _parse_line(line: str, line_no: int, where: str, reasoning_field: str, skip_missing: bool) -> _Row:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: bad JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(record, dict):
        raise ValueError(  # noqa: TRY004 (bad data, reported as ValueError with FILE:LINE)
            f"{where}: expected a JSON object, got {type(record).__name__}")
    reasoning = record.get(reasoning_field)
    if reasoning is not None and not isinstance(reasoning, str):
        raise ValueError(f"{where}: field {reasoning_field!r} must be a string (the reference "
                         f"reasoning), got {type(reasoning).__name__}")
    if reasoning is None or not reasoning.strip():
        if not skip_missing:
            raise ValueError(f"{where}: no reference reasoning: field {reasoning_field!r} is "
                             f"{'missing' if reasoning is None else 'blank'} (use --skip-missing "
                             f"to copy such records unchanged)")
        reasoning = None
    true_groups = None
    if record.get("key_steps") is not None:
        try:
            true_groups = canonical_key_steps(record["key_steps"], 0)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: field 'key_steps': {err}") from None
    return _Row(line_no, record, reasoning, true_groups or None)


def _with_key_steps(record: dict, groups: list[list[str]]) -> dict:
    """``record`` with key_steps replaced in place (or appended), every other field kept."""
    if "key_steps" in record:
        return {k: (groups if k == "key_steps" else v) for k, v in record.items()}
    return {**record, "key_steps": groups}


def _write_atomic(path: pathlib.Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def extract_file(data, out, *, max_groups: int = DEFAULT_MAX_GROUPS, model=None,
                 skip_missing: bool = False, reasoning_field: str = "response",
                 device=None, batch_size: int = 8, max_new_tokens: int = 128) -> Summary:
    """Write ``out`` (JSONL): the records of ``data`` with extracted "key_steps".

    model: None (rule-based extractor), a checkpoint path, or a ModelExtractor. ``out`` may be
    ``data`` itself (written atomically, after every record was read and checked).
    """
    check_max_groups(max_groups)
    data, out = pathlib.Path(data), pathlib.Path(out)
    rows = read_rows(data, reasoning_field, skip_missing)
    extractor = None
    if model is not None:
        from .model import ModelExtractor

        extractor = model if isinstance(model, ModelExtractor) else ModelExtractor(
            model, device=device, batch_size=batch_size, max_new_tokens=max_new_tokens,
            max_groups=max_groups)
    summary = Summary(str(data), str(out),
                      "rules" if extractor is None else f"model:{extractor.path}")
    todo = [r for r in rows if r.reasoning is not None]
    if extractor is None:
        extracted = [extract_key_steps(r.reasoning, max_groups=max_groups) for r in todo]
    else:
        results = extractor.extract([r.reasoning for r in todo])
        extracted = [res.groups for res in results]
        summary.proposals = sum(len(res.proposals) for res in results)
        summary.proposals_kept = sum(len(res.kept) for res in results)
    by_line = {r.line: groups for r, groups in zip(todo, extracted)}
    lines = []
    for row in rows:
        summary.records += 1
        if row.reasoning is None:
            summary.skipped_missing += 1
            lines.append(json.dumps(row.record, ensure_ascii=False))
            continue
        groups = by_line[row.line]
        if groups:
            summary.with_groups += 1
        elif not step_bodies(row.reasoning):
            summary.no_step_sections += 1
        else:
            summary.no_groups_found += 1
        summary.groups += len(groups)
        if row.true_groups:
            summary.quality.add(groups, row.true_groups)
        lines.append(json.dumps(_with_key_steps(row.record, groups), ensure_ascii=False))
    _write_atomic(out, lines)
    return summary
