"""stepgrpo_fast.textio.read_utf8_text: the one reader of UTF-8 data files, and its three users."""
import json
import subprocess
import sys

import pytest

from stepgrpo_fast.textio import read_utf8_text


def test_non_ascii_text_round_trips_and_newlines_read_as_lf(tmp_path):
    text = '{"q": "Ω ≈ 3·π — naïve 数学 🙂"}\n{"q": "b"}\n'
    f = tmp_path / "d.jsonl"
    f.write_bytes(text.replace("\n", "\r\n").encode())
    assert read_utf8_text(f) == text
    f.write_bytes(b"a\rb\r\nc")
    assert read_utf8_text(str(f)) == "a\nb\nc"


@pytest.mark.parametrize("prefix, line, column", [
    (b"", 1, 1),
    (b'{"a": "x"}\n{"a": "', 2, 8),
    ('{"a": "é"}\r\n\r\n{"é": "'.encode(), 3, 9),  # columns count bytes; CRLF is one line end
])
def test_bad_byte_names_file_line_and_byte_column(tmp_path, prefix, line, column):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(prefix + b'\xff"}\n{"a": 1}\n')
    with pytest.raises(ValueError) as info:
        read_utf8_text(f)
    assert str(info.value) == (f"{f}:{line}: not UTF-8 text (byte 0xff at byte column {column}: "
                               f"invalid start byte)")


def test_truncated_multibyte_character_at_the_end(tmp_path):
    f = tmp_path / "cut.json"
    f.write_bytes("[1,\n2, 'é".encode()[:-1])
    with pytest.raises(ValueError, match=r"cut.json:2: not UTF-8 text \(byte 0xc3 at byte column 5"):
        read_utf8_text(f)


def test_byte_order_mark_is_named_not_reported_as_bad_json(tmp_path):
    f = tmp_path / "bom.json"
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"a": 1}]).encode())
    with pytest.raises(ValueError, match=r"bom.json:1: starts with a UTF-8 byte-order mark"):
        read_utf8_text(f)


def test_missing_file_and_directory_use_the_callers_message(tmp_path):
    with pytest.raises(ValueError, match=r"^file '.*nope.jsonl' does not exist$"):
        read_utf8_text(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match=r"^--data 'x': no such file$"):
        read_utf8_text(tmp_path, missing="--data 'x': no such file")


def test_the_three_loaders_report_a_bad_byte_with_its_line(tmp_path):
    from stepgrpo_fast.keysteps.jsonl import read_rows
    from stepgrpo_fast.rewards.benchmark_records import load_benchmark
    from stepgrpo_fast.data.records import load_records

    f = tmp_path / "d.jsonl"
    f.write_bytes(b'{"a": 1}\n{"a": "\xfe"}\n')
    for load in (lambda: load_records(f), lambda: read_rows(f, "reasoning", False),
                 lambda: load_benchmark(f, "mcq")):
        with pytest.raises(ValueError, match=rf"^{f}:2: not UTF-8 text \(byte 0xfe at byte column 8"):
            load()


def test_textio_and_its_torch_free_users_import_without_torch():
    code = ("import sys\nsys.modules['torch'] = None\n"
            "import stepgrpo_fast.textio, stepgrpo_fast.rewards.benchmark_records\n"
            "import stepgrpo_fast.keysteps.jsonl, stepgrpo_fast.trainer.data\n")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_json_records_carry_their_line_in_each_layout(tmp_path):
    from stepgrpo_fast.textio import iter_json_records

    f = tmp_path / "d.json"
    f.write_text('\n{"a": 1}\n\n{"a": 2}\n')
    assert list(iter_json_records(f)) == [(2, None, {"a": 1}), (4, None, {"a": 2})]
    f.write_text('[\n  {"a": 1},\n\n  {"a": 2}\n]\n')
    assert list(iter_json_records(f)) == [(2, None, {"a": 1}), (4, None, {"a": 2})]
    f.write_text('{\n "p1": {"a": 1},\n "p2": {"a": 2}\n}\n')
    assert list(iter_json_records(f, keyed=True)) == [(2, "p1", {"a": 1}), (3, "p2", {"a": 2})]
    with pytest.raises(ValueError, match=r"d.json:1: bad JSON \(Expecting property name"):
        list(iter_json_records(f))  # not keyed: read as JSONL, whose line 1 is a lone "{"
    f.write_text('[\n  {"a": 1},\n  {"a": 2}\n')
    with pytest.raises(ValueError, match=r"d.json:4: bad JSON \(unterminated list: expected ','"):
        list(iter_json_records(f))


def test_streamed_json_across_chunk_boundaries(tmp_path, monkeypatch):
    """A tiny read size puts chunk edges inside strings, numbers, literals and multi-byte
    characters: every layout still reads the same values at the same lines."""
    import json

    from stepgrpo_fast import textio
    from stepgrpo_fast.textio import iter_json_records

    monkeypatch.setattr(textio._TextStream, "CHUNK", 5)
    records = [{"a": i, "s": "x\u00e9\u4e2d" * i, "n": 1234567 + i, "t": True} for i in range(7)]
    f = tmp_path / "d.json"
    for text in (json.dumps(records, indent=1), json.dumps(records),
                 "\r\n".join(json.dumps(r) for r in records)):
        f.write_text(text, encoding="utf-8", newline="")
        got = list(iter_json_records(f))
        assert [v for _, _, v in got] == records
        assert [line for line, _, _ in got] == [
            n for n, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1)
            if line.strip().startswith("{")
        ] or text.startswith("[{")
    f.write_text("[1, 22, 333, 4444, true, null]")
    assert [v for _, _, v in iter_json_records(f)] == [1, 22, 333, 4444, True, None]
    f.write_text(json.dumps(records) + ", {\"x\": oops}")  # compact: one long line
    with pytest.raises(ValueError, match=r"d.json:1: bad JSON \(extra data after the list"):
        list(iter_json_records(f))
    f.write_text(json.dumps(records)[:-1] + ", {\"x\": oops}]")
    with pytest.raises(ValueError, match=rf"d.json:1: bad JSON \(Expecting value at column "
                                         rf"{len(json.dumps(records)) + 8}\)"):
        list(iter_json_records(f))


def test_json_list_lines_are_counted_in_linear_time(tmp_path, monkeypatch):
    """The newlines scanned to give every record its line add up to about the file's size
    (counting from the start for each record, as before, scanned n^2 / 2 lines)."""
    import json

    from stepgrpo_fast import textio

    scanned = []
    count = str.count

    class Counting(str):
        def count(self, sub, start=0, end=None):
            end = len(self) if end is None else end
            scanned.append(end - start)
            return count(self, sub, start, end)

    monkeypatch.setattr(textio._TextStream, "CHUNK", 4096)
    real_more = textio._TextStream.more

    def more(self, at_least=0):
        grew = real_more(self, at_least)
        self.buf = Counting(self.buf)
        return grew

    real_drop = textio._TextStream.drop_before

    def drop_before(self, pos):
        pos = real_drop(self, pos)
        self.buf = Counting(self.buf)
        return pos

    monkeypatch.setattr(textio._TextStream, "more", more)
    monkeypatch.setattr(textio._TextStream, "drop_before", drop_before)
    f = tmp_path / "d.json"
    f.write_text(json.dumps([{"a": i, "q": "question " * 5} for i in range(3000)], indent=1))
    assert sum(1 for _ in textio.iter_json_records(f)) == 3000
    assert sum(scanned) <= 2 * len(f.read_text())
