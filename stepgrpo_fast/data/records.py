"""Training records: loading + validation (spec section 5, docs/data.md).

``load_records`` reads any source of sources.py (JSON list / JSONL, Parquet file or folder,
save_to_disk folder, hub id) in any layout of layouts.py (or custom columns through
``column_map``) and checks every record before returning: fields present and well-typed, one
``<image>`` placeholder per image (or none), and each image's header read, its size within the
processor's limits. A bad record raises ValueError naming ``source:line`` (or ``:row N``) and the
field; with ``skip_bad=True`` the bad records are left out with a warning instead. Images are
decoded later, one batch at a time (``load_record_images``). Chat prompts and tensor encoding:
data/prompts.py.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import warnings
from typing import Any

from stepgrpo_fast.data import images as _images
from stepgrpo_fast.data.images import ImageDecodeError, image_size, size_problem
from stepgrpo_fast.data.layouts import (
    IMAGE_PLACEHOLDER,
    canonical_row,
    detect_layout,
    parse_column_map,
)
from stepgrpo_fast.data.sources import open_source

_MAX_REPORTED_ERRORS = 10
DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS = 3136, 400_000


@dataclasses.dataclass(init=False)
class Record:
    """One record: ``images`` (paths, ``{"bytes", "path"}`` entries or lazy Arrow references; empty
    for a text-only record), the question (``<image>`` placeholders where the images go), the
    solution, key-step groups, the reference response (SFT), its index and ``source:line``."""

    images: list
    question: str
    solution: str
    key_steps: list[list[str]]
    response: str | None
    index: int
    source: str

    def __init__(self, image_path: Any = None, question: str = "", solution: str = "",
                 key_steps: list | None = None, response: str | None = None, index: int = 0,
                 source: str = "", *, images: list | None = None) -> None:
        if images is None:
            images = [] if image_path is None else [pathlib.Path(image_path)]
        self.images = list(images)
        self.question, self.solution = question, solution
        self.key_steps = list(key_steps or [])
        self.response, self.index, self.source = response, index, source

    @property
    def image_path(self) -> pathlib.Path | None:
        """The image file of a one-image record whose image is a file (older callers)."""
        if len(self.images) == 1 and isinstance(self.images[0], pathlib.Path):
            return self.images[0]
        return None


@dataclasses.dataclass
class LoadReport:
    """What ``read_records`` found: the good records, one line per bad one, the layout."""

    records: list[Record]
    bad: list[str]
    layout: str
    total: int
    bad_rows: list[int] = dataclasses.field(default_factory=list)  # ordinal of each bad line
    record_rows: list[int] = dataclasses.field(default_factory=list)  # ordinal of each record


def load_records(path, *, require_response: bool = False, column_map: Any = None,
                 skip_bad: bool = False, min_pixels: int = DEFAULT_MIN_PIXELS,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Record]:
    """Read and check every record of ``path`` (any source of sources.py).

    Raises ValueError listing the bad records (``source:line: field ...``, up to 10 shown);
    ``skip_bad``: warn with their count and return the rest instead.
    """
    report = read_records(path, require_response=require_response, column_map=column_map,
                          min_pixels=min_pixels, max_pixels=max_pixels)
    if report.bad:
        shown = "\n  ".join(report.bad[:_MAX_REPORTED_ERRORS])
        more = (f"\n  ... and {len(report.bad) - _MAX_REPORTED_ERRORS} more"
                if len(report.bad) > _MAX_REPORTED_ERRORS else "")
        if not skip_bad:
            raise ValueError(f"{len(report.bad)} invalid record(s) in {path} (skip_bad_records: "
                             f"true trains on the rest):\n  {shown}{more}")
        warnings.warn(f"skip_bad_records: skipped {len(report.bad)} of {report.total} records "
                      f"of {path}:\n  {shown}{more}", stacklevel=2)
    if not report.records:
        raise ValueError(f"{path}: no records" + (" left" if report.bad else ""))
    return report.records


def read_records(path, *, require_response: bool = False, column_map: Any = None,
                 min_pixels: int = DEFAULT_MIN_PIXELS, max_pixels: int = DEFAULT_MAX_PIXELS,
                 check_images: bool = True) -> LoadReport:
    """Every record of ``path`` checked: the good ones and one line per bad one."""
    source = open_source(path)
    mapping = parse_column_map(column_map)
    layout = detect_layout(source.columns, mapping) if source.columns is not None else None
    records, bad, total = [], [], 0
    bad_rows, record_rows = [], []
    for where, raw in source.rows():
        total += 1
        try:
            if not isinstance(raw, dict):
                raise ValueError(f"expected a JSON object, got {type(raw).__name__}")  # noqa: TRY004
            row_layout = layout or detect_layout(raw.keys(), mapping)
            row = canonical_row(raw, row_layout, mapping)
            records.append(_check_row(row, base_dir=source.base_dir, index=len(records),
                                      where=where, require_response=require_response,
                                      check_images=check_images, min_pixels=min_pixels,
                                      max_pixels=max_pixels))
            record_rows.append(total - 1)
            layout = layout if source.columns is not None else (layout or row_layout)
        except ValueError as err:
            bad.append(f"{where}: {err}")
            bad_rows.append(total - 1)
    return LoadReport(records, bad, layout or "unknown", total, bad_rows, record_rows)


def _check_row(row: dict, *, base_dir: pathlib.Path, index: int, where: str,
               require_response: bool, check_images: bool, min_pixels: int,
               max_pixels: int) -> Record:
    images = [_resolve(src, base_dir) for src in row["images"]]
    for k, src in enumerate(images):
        field = "image" if len(images) == 1 else f"images[{k}]"
        if isinstance(src, pathlib.Path) and not src.is_file():
            raise ValueError(f"field '{field}': image file {str(src)!r} not found")
        if check_images:
            try:
                problem = size_problem(*image_size(src), min_pixels=min_pixels,
                                       max_pixels=max_pixels)
            except ImageDecodeError as err:
                raise ValueError(f"field '{field}': {err}") from None
            if problem:
                raise ValueError(f"field '{field}': {problem}")

    question = row["question"]
    if not isinstance(question, str) or not question.replace(IMAGE_PLACEHOLDER, "").strip():
        raise ValueError("field 'question' (or 'problem') missing or not a non-empty string")
    placeholders = question.count(IMAGE_PLACEHOLDER)
    if placeholders and placeholders != len(images):
        raise ValueError(f"field 'question' has {placeholders} {IMAGE_PLACEHOLDER} "
                         f"placeholder(s) for {len(images)} image(s)")

    solution = row["solution"]
    if solution is None and require_response:
        solution = ""  # SFT learns the response; the answer is not needed
    if isinstance(solution, bool) or not isinstance(solution, (str, int, float)) or (
            not require_response and not str(solution).strip()):
        raise ValueError("field 'solution' (or 'answer') missing or not a non-empty string/number")

    key_steps = normalize_key_steps(row["key_steps"] if row["key_steps"] is not None else [],
                                    "key_steps")
    response = row["response"]
    if response is not None and not isinstance(response, str):
        raise ValueError(f"field 'response' must be a string, got {type(response).__name__}")
    if require_response and not (response and response.strip()):
        raise ValueError("field 'response' (the reference reasoning) is required for SFT")
    return Record(question=question, solution=str(solution), key_steps=key_steps,
                  response=response, index=index, source=where, images=images)


def _resolve(src: Any, base_dir: pathlib.Path) -> Any:
    """A path (relative to the data) as an absolute pathlib.Path; a {"bytes", "path"} entry as
    its bytes or its path; lazy references and bytes unchanged."""
    if isinstance(src, dict):
        if src.get("bytes") is not None:
            return src["bytes"]
        src = src.get("path")
        if not src:
            raise ValueError("field 'images': an entry has neither 'bytes' nor 'path'")
    if isinstance(src, (str, os.PathLike)):
        path = pathlib.Path(src).expanduser()
        return path if path.is_absolute() else base_dir / path
    if isinstance(src, (int, float, list)):
        raise ValueError(f"field 'image': expected a path or an image, got {src!r}")
    return src


def normalize_key_steps(value, where: str = "key_steps") -> list[list[str]]:
    """list of groups (list of str, or a bare str) or {"Steps": [...]} -> list[list[str]]."""
    prefix = "" if where == "key_steps" else f"{where}: "
    if isinstance(value, dict):
        if set(value) != {"Steps"}:
            raise ValueError(
                f"{prefix}field 'key_steps' dict must have exactly the key 'Steps', got {sorted(value)}"
            )
        value = value["Steps"]
    if not isinstance(value, list):
        raise ValueError(  # noqa: TRY004 (bad data, reported as ValueError)
            f"{prefix}field 'key_steps' must be a list of groups or {{'Steps': [...]}}, "
            f"got {type(value).__name__}"
        )
    groups = []
    for i, group in enumerate(value):
        if isinstance(group, str):
            group = [group]
        if (
            not isinstance(group, list)
            or not group
            or not all(isinstance(f, str) and f.strip() for f in group)
        ):
            raise ValueError(
                f"{prefix}field 'key_steps[{i}]' must be a non-empty string or a non-empty "
                f"list of non-empty strings, got {group!r}"
            )
        groups.append(list(group))
    return groups


def load_record_images(record: Record) -> list:
    """The record's images as RGB PIL images (ImageDecodeError naming the record and image)."""
    out = []
    for k, src in enumerate(record.images):
        try:
            out.append(_images.load_image(src))
        except ImageDecodeError as err:
            field = "image" if len(record.images) == 1 else f"images[{k}]"
            raise ImageDecodeError(f"{record.source}: field '{field}': {err}") from None
    return out


def load_image(src: Any):
    """A record's (first) image as RGB (kept for older callers), or ``images.load_image(src)``
    for any other source."""
    if isinstance(src, Record):
        if not src.images:
            raise ValueError(f"{src.source}: the record has no image")
        return load_record_images(Record(images=src.images[:1], source=src.source))[0]
    return _images.load_image(src)


def record_options(config: Any) -> dict[str, Any]:
    """``load_records`` options from a training config: column_map, skip_bad_records and the
    processor's min_pixels / max_pixels (the size checks)."""
    return {
        "column_map": getattr(config, "column_map", None),
        "skip_bad": bool(getattr(config, "skip_bad_records", False)),
        "min_pixels": getattr(config, "min_pixels", DEFAULT_MIN_PIXELS),
        "max_pixels": getattr(config, "max_pixels", DEFAULT_MAX_PIXELS),
    }
