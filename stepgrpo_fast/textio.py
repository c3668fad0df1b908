"""Read a UTF-8 data file (and its JSON records) or raise a ValueError naming file:line.

Used by the training-data loader (``data/records.py``), the key-step extractor
(``keysteps/jsonl.py``) and the benchmark loader (``rewards/benchmark_records.py``). It imports
only the standard library, so the torch-free packages (rewards, keysteps) can use it.

Errors, all ValueError (the callers' loaders raise ValueError for every bad input):
    missing file / a directory   the caller's ``missing`` message (default "file 'x' does not exist")
    unreadable (permissions...)  "x: cannot be read (Permission denied)"
    a byte that is not UTF-8     "x:LINE: not UTF-8 text (byte 0xff at byte column 3: invalid ...)"
    a UTF-8 byte-order mark      "x:1: starts with a UTF-8 byte-order mark (BOM); ..."
                                 (json rejects a BOM, so it is named here rather than reported
                                 as bad JSON on line 1)
    bad JSON                     "x:LINE: bad JSON (Expecting value at column 7)"

``iter_json_records`` reads JSONL (one value a line, blank lines skipped), a JSON list, or (with
``keyed=True``) one JSON object whose values are all objects (name -> record).
"""
from __future__ import annotations

import codecs
import json
import pathlib
from collections.abc import Iterator
from typing import Any

__all__ = ["iter_json_records", "read_utf8_text"]


def read_utf8_text(path: str | pathlib.Path, *, missing: str | None = None) -> str:
    """The text of ``path`` decoded as UTF-8, CRLF and lone CR read as LF (as ``open`` does).

    ``missing``: the error message when ``path`` is not a file (callers keep their own wording,
    e.g. "--data 'x': no such file"); by default "file 'x' does not exist".
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(missing if missing is not None else f"file {str(path)!r} does not exist")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err.strerror or err})") from err
    if raw.startswith(codecs.BOM_UTF8):
        raise ValueError(f"{path}:1: starts with a UTF-8 byte-order mark (BOM); save the file as "
                         f"UTF-8 without a BOM")
    try:
        return _universal_newlines(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        before = _universal_newlines(raw[:err.start].decode("utf-8"))  # valid up to err.start
        line = before.count("\n") + 1
        column = len(before[before.rfind("\n") + 1:].encode("utf-8")) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x} at byte "
                         f"column {column}: {err.reason})") from err


def _universal_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def iter_json_records(path: str | pathlib.Path, *, missing: str | None = None,
                      keyed: bool = False) -> Iterator[tuple[int, str | None, Any]]:
    """Yield (line, key, value) per record of ``path``: key is None except for the records of a
    keyed object (``keyed=True``). ``missing`` as for ``read_utf8_text``."""
    path = pathlib.Path(path)
    text = read_utf8_text(path, missing=missing)
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from _iter_container(path, text, "[", "]")
    elif keyed and stripped.startswith("{") and _is_keyed_object(text):
        yield from _iter_container(path, text, "{", "}")
    else:
        for line_no, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    yield line_no, None, json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(
                        f"{path}:{line_no}: bad JSON ({err.msg} at column {err.colno})"
                    ) from err


def _is_keyed_object(text: str) -> bool:
    """One JSON object whose values are all objects (pid -> record), as opposed to JSONL with
    one record per line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return False
    return isinstance(value, dict) and bool(value) and all(
        isinstance(v, dict) for v in value.values()
    )


def _iter_container(path: pathlib.Path, text: str, opening: str, closing: str):
    """The members of the one JSON list (or keyed object) in ``text``, each with its line, so a
    bad record is reported where it stands rather than at the list's first line."""
    decoder = json.JSONDecoder()
    kind = "list" if opening == "[" else "object"
    pos = text.index(opening) + 1

    def line_of(i: int) -> int:
        return text.count("\n", 0, i) + 1

    def fail(msg: str, i: int):
        raise ValueError(f"{path}:{line_of(i)}: bad JSON ({msg})")

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    pos = skip(pos)
    if pos < len(text) and text[pos] == closing:
        return
    while True:
        pos = skip(pos)
        key = None
        try:
            if opening == "{":
                key, pos = decoder.raw_decode(text, pos)
                pos = skip(pos)
                if pos >= len(text) or text[pos] != ":":
                    fail("expected ':' after a key", pos)
                pos = skip(pos + 1)
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            fail(f"{err.msg} at column {err.colno}", err.pos)
        yield line_of(pos), key, value
        pos = skip(end)
        if pos >= len(text):
            fail(f"unterminated {kind}: expected ',' or {closing!r}", pos)
        if text[pos] == closing:
            if text[pos + 1:].strip():
                fail(f"extra data after the {kind}", pos + 1)
            return
        if text[pos] != ",":
            fail(f"expected ',' or {closing!r}, got {text[pos]!r}", pos)
        pos += 1
