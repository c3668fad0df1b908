"""Checks of a whole data set (``stepgrpo data check``) and of the records a run draws.

- ``check_data``: every record's fields and image headers (records.read_records), then every
  image decoded in full, in parallel threads, and held against the processor's limits; a
  summary (records, layout, images per record, records with key steps) and one line per bad
  record (``source:line: reason``).
- ``replace_unreadable``: a training batch whose image fails to decode mid-run gets that record
  replaced by the next readable one of the data set, with a warning, instead of a crash.
- ``warn_missing_key_steps``: StepRAR on records without key steps is answer-only; say so.
"""

from __future__ import annotations

import collections
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from stepgrpo_fast.data.images import ImageDecodeError, load_image, size_problem
from stepgrpo_fast.data.records import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    Record,
    load_record_images,
    read_records,
)


def check_data(source: Any, *, column_map: Any = None, min_pixels: int = DEFAULT_MIN_PIXELS,
               max_pixels: int = DEFAULT_MAX_PIXELS, require_response: bool = False,
               workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Check every record of ``source`` -> {"source", "layout", "records", "good", "bad",
    "bad_records" (lines), "images", "images_per_record" ({count: records}), "text_only",
    "with_key_steps", "with_response"}."""
    report = read_records(source, require_response=require_response, column_map=column_map,
                          min_pixels=min_pixels, max_pixels=max_pixels)
    jobs = [(r, k) for r in report.records for k in range(len(r.images))]
    problems: dict[int, str] = {}
    workers = workers or min(8, os.cpu_count() or 1)

    def decode(job):
        record, k = job
        field = "image" if len(record.images) == 1 else f"images[{k}]"
        try:
            img = load_image(record.images[k])
        except ImageDecodeError as err:
            return record, f"field '{field}': {err}"
        problem = size_problem(*img.size, min_pixels=min_pixels, max_pixels=max_pixels)
        return record, f"field '{field}': {problem}" if problem else None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(decode, jobs)
        if progress:
            from tqdm.auto import tqdm

            results = tqdm(results, total=len(jobs), desc="decoding images", unit="img")
        for record, problem in results:
            if problem and record.index not in problems:
                problems[record.index] = f"{record.source}: {problem}"
    good = [r for r in report.records if r.index not in problems]
    ordered = sorted([*zip(report.bad_rows, report.bad),
                      *((report.record_rows[i], line) for i, line in problems.items())])
    bad_lines = [line for _, line in ordered]
    counts = collections.Counter(len(r.images) for r in good)
    return {
        "source": str(source),
        "layout": report.layout,
        "records": report.total,
        "good": len(good),
        "bad": len(bad_lines),
        "images": sum(len(r.images) for r in good),
        "images_per_record": {str(k): counts[k] for k in sorted(counts)},
        "text_only": counts.get(0, 0),
        "with_key_steps": sum(1 for r in good if r.key_steps),
        "with_response": sum(1 for r in good if r.response),
        "bad_records": bad_lines,
    }


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The human-readable summary ``stepgrpo data check`` prints before the bad lines."""
    per = ", ".join(f"{n} with {k}" for k, n in summary["images_per_record"].items()) or "none"
    return [
        f"source:          {summary['source']}",
        f"layout:          {summary['layout']}",
        f"records:         {summary['records']} ({summary['good']} good, {summary['bad']} bad)",
        f"images:          {summary['images']} (records: {per})",
        f"with key steps:  {summary['with_key_steps']} of {summary['good']}",
        f"with response:   {summary['with_response']} of {summary['good']}",
    ]


def replace_unreadable(batch: list[Record], pool: list[Record],
                       known_bad: set[int]) -> tuple[list[Record], int]:
    """``batch`` with each record whose images fail to decode replaced by the next record of
    ``pool`` (by index, wrapping) that decodes; a warning per bad record, its index added to
    ``known_bad`` (never drawn again). Returns (records, how many were replaced)."""
    out, replaced = [], 0
    for record in batch:
        candidate, tried = record, 0
        while True:
            if candidate.index not in known_bad and _decodes(candidate, known_bad):
                break
            tried += 1
            if tried >= len(pool):
                raise ValueError("no record of the data set has images that decode")
            candidate = pool[(candidate.index + 1) % len(pool)]
        if candidate is not record:
            replaced += 1
        out.append(candidate)
    return out, replaced


def _decodes(record: Record, known_bad: set[int]) -> bool:
    try:
        load_record_images(record)
    except ImageDecodeError as err:
        known_bad.add(record.index)
        warnings.warn(f"skipped record (replaced by the next readable one): {err}", stacklevel=3)
        return False
    return True


def warn_missing_key_steps(records: list[Record], source: Any) -> int:
    """Warn (with the count) when some records have no key steps: StepRAR then rewards only
    their final answer. Returns the count."""
    missing = sum(1 for r in records if not r.key_steps)
    if missing:
        warnings.warn(f"{missing} of {len(records)} records of {source} have no key_steps: "
                      "StepRAR rewards only their final answer (extract key steps with "
                      "`stepgrpo keysteps`)", stacklevel=2)
    return missing
