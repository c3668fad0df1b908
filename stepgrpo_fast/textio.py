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
    keyed object (``keyed=True``). ``missing`` as for ``read_utf8_text``.

    The file is streamed (a bounded text buffer, lines counted incrementally): time is linear
    in the file's size and memory holds a window of the text, not all of it."""
    path = pathlib.Path(path)
    stream = _TextStream(path, missing)
    try:
        first = stream.first_char()
        if first == "[":
            yield from _iter_container(stream, "[", "]")
        elif keyed and first == "{" and _is_keyed_object(read_utf8_text(path)):
            yield from _iter_container(stream, "{", "}")
        else:
            yield from _iter_lines(stream)
    finally:
        stream.close()


class _TextStream:
    """A file read as UTF-8 text in chunks (universal newlines), with the line of any position
    of the current window. A bad byte or a BOM is reported by ``read_utf8_text``'s rules."""

    CHUNK = 1 << 20  # characters per read

    def __init__(self, path: pathlib.Path, missing: str | None) -> None:
        self.path = path
        if not path.is_file():
            raise ValueError(missing if missing is not None else f"file {str(path)!r} does not exist")
        try:
            with open(path, "rb") as f:
                head = f.read(len(codecs.BOM_UTF8))
            self._file = open(path, encoding="utf-8", newline=None)  # noqa: SIM115
        except OSError as err:
            raise ValueError(f"{path}: cannot be read ({err.strerror or err})") from err
        if head == codecs.BOM_UTF8:
            self._file.close()
            read_utf8_text(path)  # raises the BOM error
        self.buf = ""
        self.eof = False
        self._base_line = 1  # line of buf[0]
        self._mark = (0, 1)  # (position in buf, its line): lines are counted forward from it
        self._col0 = 0  # characters of buf[0]'s line that were dropped before it

    def close(self) -> None:
        self._file.close()

    def _read(self, n: int) -> str:
        try:
            return self._file.read(n)
        except UnicodeDecodeError:
            self._file.close()
            read_utf8_text(self.path)  # raises the error naming the line and byte
            raise

    def more(self, at_least: int = 0) -> bool:
        """Append at least one chunk (and at least ``at_least`` characters); False at the end."""
        if self.eof:
            return False
        piece = self._read(max(self.CHUNK, at_least))
        if not piece:
            self.eof = True
            return False
        self.buf += piece
        return True

    def has(self, pos: int) -> bool:
        """Whether ``buf[pos]`` exists, reading on as needed."""
        while pos >= len(self.buf):
            if not self.more():
                return False
        return True

    def drop_before(self, pos: int) -> int:
        """Forget the text before ``pos`` (once it is most of the window); the new position."""
        if pos < self.CHUNK or pos < len(self.buf) // 2:
            return pos
        self._base_line = self.line_of(pos)
        newline = self.buf.rfind("\n", 0, pos)
        self._col0 = pos - newline - 1 if newline != -1 else self._col0 + pos
        self.buf = self.buf[pos:]
        self._mark = (0, self._base_line)
        return 0

    def line_of(self, pos: int) -> int:
        mark, line = self._mark
        if pos < mark:
            mark, line = 0, self._base_line
        line += self.buf.count("\n", mark, pos)
        self._mark = (pos, line)
        return line

    def column_of(self, pos: int) -> int:
        newline = self.buf.rfind("\n", 0, pos)
        return pos - newline if newline != -1 else self._col0 + pos + 1

    def first_char(self) -> str:
        pos = self.skip(0)
        return self.buf[pos] if pos < len(self.buf) else ""

    def skip(self, pos: int) -> int:
        while self.has(pos) and self.buf[pos] in " \t\r\n":
            pos += 1
        return pos

    def lines(self) -> Iterator[str]:
        """The lines of the whole file (the window first, then the rest)."""
        piece, pending = self.buf, ""
        self.buf = ""
        while True:
            *complete, rest = piece.split("\n")
            if complete:
                yield pending + complete[0]
                yield from complete[1:]
                pending = rest
            else:
                pending += rest
            piece = self._read(self.CHUNK)
            if not piece:
                if pending:
                    yield pending
                return


def _iter_lines(stream: _TextStream) -> Iterator[tuple[int, None, Any]]:
    for line_no, line in enumerate(stream.lines(), start=1):
        if line.strip():
            try:
                yield line_no, None, json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{stream.path}:{line_no}: bad JSON ({err.msg} at column {err.colno})"
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


def _decode(stream: _TextStream, pos: int) -> tuple[Any, int]:
    """The JSON value at ``pos`` and the position after it, reading on while the value may run
    past the window (a value must be followed by a character or the end of the file)."""
    decoder = json.JSONDecoder()
    while True:
        try:
            value, end = decoder.raw_decode(stream.buf, pos)
        except json.JSONDecodeError as err:
            near_end = err.pos >= len(stream.buf) - 8 or err.msg.startswith("Unterminated")
            if near_end and stream.more(len(stream.buf)):
                continue
            raise
        if end >= len(stream.buf) and stream.more(len(stream.buf)):
            continue  # a number or literal may go on in the next chunk
        return value, end


def _iter_container(stream: _TextStream, opening: str, closing: str):
    """The members of the one JSON list (or keyed object) of the file, each with its line, so a
    bad record is reported where it stands rather than at the list's first line."""
    path = stream.path
    kind = "list" if opening == "[" else "object"

    def fail(msg: str, i: int):
        raise ValueError(f"{path}:{stream.line_of(i)}: bad JSON ({msg})")

    def char(i: int) -> str:
        return stream.buf[i] if stream.has(i) else ""

    pos = stream.skip(stream.skip(0) + 1)
    if char(pos) == closing:
        pos += 1
    else:
        while True:
            pos = stream.drop_before(stream.skip(pos))
            key = None
            try:
                if opening == "{":
                    key, pos = _decode(stream, pos)
                    pos = stream.skip(pos)
                    if char(pos) != ":":
                        fail("expected ':' after a key", pos)
                    pos = stream.skip(pos + 1)
                value, end = _decode(stream, pos)
            except json.JSONDecodeError as err:
                fail(f"{err.msg} at column {stream.column_of(err.pos)}", err.pos)
            yield stream.line_of(pos), key, value
            pos = stream.skip(end)
            if not char(pos):
                fail(f"unterminated {kind}: expected ',' or {closing!r}", pos)
            if char(pos) == closing:
                pos += 1
                break
            if char(pos) != ",":
                fail(f"expected ',' or {closing!r}, got {char(pos)!r}", pos)
            pos += 1
    pos = stream.skip(pos)
    if char(pos):
        fail(f"extra data after the {kind}", pos)
