"""`stepgrpo keysteps` and extract_file: fields kept, key steps replaced, bad input named by
FILE:LINE, --skip-missing, reasoning without step sections counted, output trainable."""

import json
import shutil

import pytest

from stepgrpo_fast.cli import main
from stepgrpo_fast.keysteps import extract_file, extract_key_steps
from stepgrpo_fast.data.records import load_records

REASONING = ("### Image Description:\nTwo numbers.\n### Rationales:\nAdd them.\n"
             "### Let's think step by step.\n### Step 1:\nThe numbers are 6 and 2.\n"
             "### Step 2:\n6 + 2 = 8\n### The final answer is:\n8")
NO_STEPS = "### Image Description:\nTwo numbers.\n### The final answer is:\n8"


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_writes_key_steps_and_keeps_every_other_field(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"id": 1, "image": "a.png", "response": REASONING, "key_steps": [["6 + 2 = 8"]], "extra": {"x": [1]}},
        {"id": 2, "response": NO_STEPS, "solution": "8"},
    ])
    out = tmp_path / "sub" / "out.jsonl"
    assert main(["keysteps", "--data", str(src), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    rows = read_jsonl(out)
    assert [list(r) for r in rows] == [["id", "image", "response", "key_steps", "extra"],
                                        ["id", "response", "solution", "key_steps"]]
    assert rows[0]["extra"] == {"x": [1]} and rows[0]["response"] == REASONING
    assert rows[0]["key_steps"] == extract_key_steps(REASONING)
    assert rows[1]["key_steps"] == []
    assert "records: 2; with key steps: 1; groups: 2" in text
    assert "no step sections: 1; step sections but nothing extracted: 0" in text
    assert "vs the input's key_steps (1 records, 1 groups): recall 1.000, precision 0.500" in text


def test_missing_reasoning_is_an_error_naming_file_line_or_skipped(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"response": REASONING}, {"question": "q"},
                                              {"response": "  "}])
    out = tmp_path / "out.jsonl"
    assert main(["keysteps", "--data", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{src}:2: no reference reasoning: field 'response' is missing" in err
    assert f"{src}:3: no reference reasoning: field 'response' is blank" in err
    assert not out.exists()  # nothing written on bad input
    assert main(["keysteps", "--data", str(src), "--out", str(out), "--skip-missing"]) == 0
    assert "skipped (no reasoning): 2" in capsys.readouterr().out
    rows = read_jsonl(out)
    assert rows[1:] == [{"question": "q"}, {"response": "  "}]  # copied unchanged
    assert rows[0]["key_steps"]


@pytest.mark.parametrize("line, message", [
    ("{not json", ":1: bad JSON"),
    ("[1, 2]", ":1: expected a JSON object, got list"),
    ('{"response": 3}', ":1: field 'response' must be a string"),
    ('{"response": "x", "key_steps": 5}', ":1: field 'key_steps'"),
])
def test_bad_lines(tmp_path, capsys, line, message):
    src = tmp_path / "in.jsonl"
    src.write_text(line + "\n")
    assert main(["keysteps", "--data", str(src), "--out", str(tmp_path / "o.jsonl"), "--skip-missing"]) == 2
    assert f"{src}{message}" in capsys.readouterr().err


def test_other_field_in_place_and_max_groups(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"trace": REASONING, "n": 1}])
    summary = extract_file(src, src, reasoning_field="trace", max_groups=1)
    assert read_jsonl(src) == [{"trace": REASONING, "n": 1, "key_steps": [extract_key_steps(REASONING)[0]]}]
    assert summary.groups == 1 and summary.extractor == "rules"
    with pytest.raises(ValueError, match="no such file"):
        extract_file(tmp_path / "nope.jsonl", tmp_path / "o.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no records"):
        extract_file(empty, tmp_path / "o.jsonl")
    with pytest.raises(ValueError, match="max_groups"):
        extract_file(src, tmp_path / "o.jsonl", max_groups=0)


def test_synthetic_sft_file_round_trips_through_the_trainer_loader(synthetic_data, tmp_path, capsys):
    out = tmp_path / "sft_keysteps.jsonl"
    assert main(["keysteps", "--data", str(synthetic_data["sft"]), "--out", str(out)]) == 0
    assert "recall 1.000" in capsys.readouterr().out
    shutil.copytree(synthetic_data["dir"] / "images", tmp_path / "images")  # paths are relative
    before = load_records(synthetic_data["sft"], require_response=True)
    after = load_records(out, require_response=True)
    assert [r.response for r in after] == [r.response for r in before]
    assert all(r.key_steps for r in after)
    assert [r.key_steps for r in after] != [r.key_steps for r in before]
