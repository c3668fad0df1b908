"""Training records: loading + validation (spec §5).

``load_records`` reads JSON (a list) or JSONL in either layout of docs/METHOD.md §5 and checks
every record (image file readable, question/solution present, key_steps well-typed) before
returning, raising ValueError that names file:line and the field. Chat prompts and tensor
encoding of records live in data/prompts.py.
"""

from __future__ import annotations

import dataclasses
import pathlib

from stepgrpo_fast.textio import iter_json_records


_MAX_REPORTED_ERRORS = 10


@dataclasses.dataclass
class Record:
    image_path: pathlib.Path
    question: str
    solution: str
    key_steps: list[list[str]]
    response: str | None = None
    index: int = 0
    source: str = ""  # "file:line"


def load_records(path, *, require_response: bool = False) -> list[Record]:
    """Read and validate every record of a JSON list / JSONL file.

    Accepts {"image", "question", "solution", "key_steps"[, "response"]} and the released
    {"image_path", "problem", "solution", "key_steps": {"Steps": [...]}} layout (a key-step group
    may be a bare string). Image paths are relative to the data file. Raises ValueError naming
    file:line and field for each bad record (up to 10 listed).
    """
    path = pathlib.Path(path)
    records, errors = [], []
    missing = f"data file {str(path)!r} does not exist"
    for line, _, raw in iter_json_records(path, missing=missing):
        where = f"{path}:{line}"
        try:
            records.append(
                _parse_record(
                    raw,
                    base_dir=path.parent,
                    where=where,
                    index=len(records),
                    require_response=require_response,
                )
            )
        except ValueError as err:
            errors.append(str(err))
    if errors:
        shown = "\n  ".join(errors[:_MAX_REPORTED_ERRORS])
        more = (
            f"\n  ... and {len(errors) - _MAX_REPORTED_ERRORS} more"
            if len(errors) > _MAX_REPORTED_ERRORS
            else ""
        )
        raise ValueError(f"{len(errors)} invalid record(s) in {path}:\n  {shown}{more}")
    if not records:
        raise ValueError(f"{path}: no records")
    return records


def _first_present(raw: dict, names: tuple[str, ...]):
    for name in names:
        if name in raw and raw[name] is not None:
            return name, raw[name]
    return names[0], None


def _parse_record(
    raw, *, base_dir: pathlib.Path, where: str, index: int, require_response: bool
) -> Record:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(raw).__name__}")  # noqa: TRY004

    field, image = _first_present(raw, ("image", "image_path"))
    if not isinstance(image, str) or not image.strip():
        raise ValueError(
            f"{where}: field 'image' (or 'image_path') missing or not a non-empty string"
        )
    image_path = pathlib.Path(image).expanduser()
    if not image_path.is_absolute():
        image_path = base_dir / image_path
    _check_image(image_path, where, field)

    field, question = _first_present(raw, ("question", "problem"))
    if not isinstance(question, str) or not question.strip():
        raise ValueError(
            f"{where}: field 'question' (or 'problem') missing or not a non-empty string"
        )

    solution = raw.get("solution")
    if (
        isinstance(solution, bool)
        or not isinstance(solution, (str, int, float))
        or not str(solution).strip()
    ):
        raise ValueError(f"{where}: field 'solution' missing or not a non-empty string/number")

    key_steps = normalize_key_steps(raw.get("key_steps", []), where)

    response = raw.get("response")
    if response is not None and not isinstance(response, str):
        raise ValueError(
            f"{where}: field 'response' must be a string, got {type(response).__name__}"
        )
    if require_response and not (response and response.strip()):
        raise ValueError(f"{where}: field 'response' (the reference reasoning) is required for SFT")

    return Record(
        image_path=image_path,
        question=question,
        solution=str(solution),
        key_steps=key_steps,
        response=response,
        index=index,
        source=where,
    )


def normalize_key_steps(value, where: str = "key_steps") -> list[list[str]]:
    """list of groups (list of str, or a bare str) or {"Steps": [...]} -> list[list[str]]."""
    if isinstance(value, dict):
        if set(value) != {"Steps"}:
            raise ValueError(
                f"{where}: field 'key_steps' dict must have exactly the key 'Steps', got {sorted(value)}"
            )
        value = value["Steps"]
    if not isinstance(value, list):
        raise ValueError(  # noqa: TRY004 (bad data, reported as ValueError)
            f"{where}: field 'key_steps' must be a list of groups or {{'Steps': [...]}}, "
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
                f"{where}: field 'key_steps[{i}]' must be a non-empty string or a non-empty "
                f"list of non-empty strings, got {group!r}"
            )
        groups.append(list(group))
    return groups


def _check_image(image_path: pathlib.Path, where: str, field: str) -> None:
    from PIL import Image

    if not image_path.is_file():
        raise ValueError(f"{where}: field '{field}': image file {str(image_path)!r} not found")
    try:
        with Image.open(image_path) as img:
            img.verify()
    except Exception as err:  # PIL raises many types for corrupt files
        raise ValueError(
            f"{where}: field '{field}': cannot read image {str(image_path)!r} ({err})"
        ) from err


def load_image(record: Record):
    """The record's image as an RGB PIL image."""
    from PIL import Image

    with Image.open(record.image_path) as img:
        return img.convert("RGB")
