"""`stepgrpo reward`: scores, summary, --out, malformed lines (skipped / --strict), progress bar."""
import json
from pathlib import Path

import pytest
from rewards_cases import GOOD, KEY_STEPS

from stepgrpo_fast.cli import main
from stepgrpo_fast.rewards import match_key_steps, step_accuracy_reward, step_validity_reward

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_rewards.jsonl"


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("mode", ["paper", "official"])
def test_sample_file_scores_match_the_api(tmp_path, capsys, mode):
    out = tmp_path / "scores.jsonl"
    assert main(["reward", "--data", str(SAMPLE), "--mode", mode, "--out", str(out)]) == 0
    summary = capsys.readouterr().out
    records = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, len(records) + 1))
    all_rewards = []
    for record, row in zip(records, rows):
        many = "completions" in record
        comps = record["completions"] if many else [record["completion"]]
        n = len(comps)
        acc = step_accuracy_reward(comps, [record["solution"]] * n, [record["key_steps"]] * n, mode=mode)
        val = step_validity_reward(comps, mode=mode)
        k = match_key_steps(comps, [record["key_steps"]] * n, mode=mode)
        got = row if many else {name: [row[name]] for name in ("accuracy", "validity", "key_step_match", "reward")}
        assert got["accuracy"] == acc and got["validity"] == val and got["key_step_match"] == k
        assert got["reward"] == [a + v for a, v in zip(acc, val)]
        all_rewards += got["reward"]
    assert "records scored: 9" in summary and "completions: 12" in summary
    assert f"{sum(all_rewards) / len(all_rewards):.4f}" in summary
    # the sample holds both good and flawed completions
    assert max(all_rewards) == pytest.approx(2.1) and min(all_rewards) < 1.5


def test_malformed_lines_are_reported_and_skipped(tmp_path, capsys):
    good = json.dumps({"completion": GOOD, "solution": "3", "key_steps": KEY_STEPS})
    data = _write(tmp_path / "d.jsonl", [
        good, "{not json", json.dumps({"completion": GOOD}), "",
        json.dumps({"completion": 5, "solution": "3"}),
        json.dumps({"completion": GOOD, "solution": "3", "key_steps": "AD"}),
        json.dumps([1, 2]), good])
    assert main(["reward", "--data", str(data)]) == 0
    captured = capsys.readouterr()
    for line, words in [(2, "invalid JSON"), (3, "missing 'solution'"), (5, "completions[0]"),
                        (6, "key_steps[0]"), (7, "JSON object")]:
        assert f"{data}:{line}: " in captured.err and words in captured.err
    assert f"{data}:1:" not in captured.err and f"{data}:8:" not in captured.err
    assert "records scored: 2" in captured.out and "malformed lines skipped: 5" in captured.out


def test_strict_stops_with_nonzero_status(tmp_path, capsys):
    good = json.dumps({"completion": GOOD, "solution": "3"})
    data = _write(tmp_path / "d.jsonl", [good, "{oops", good])
    assert main(["reward", "--data", str(data), "--strict"]) == 1
    assert f"{data}:2: invalid JSON" in capsys.readouterr().err


def test_missing_file_and_bad_utf8(tmp_path, capsys):
    assert main(["reward", "--data", str(tmp_path / "nope.jsonl")]) == 2
    data = tmp_path / "bin.jsonl"
    data.write_bytes(b'{"completion": "\xff", "solution": "1"}\n')
    assert main(["reward", "--data", str(data), "--strict"]) == 1
    assert f"{data}:1:" in capsys.readouterr().err


def test_large_file_shows_a_progress_bar(tmp_path, capsys, monkeypatch):
    from stepgrpo_fast.rewards import cli

    monkeypatch.setattr(cli, "PROGRESS_MIN_BYTES", 1)
    line = json.dumps({"completions": [GOOD, GOOD.replace("is:\n3", "is:\n4")], "solution": "3",
                       "key_steps": KEY_STEPS})
    data = _write(tmp_path / "big.jsonl", [line] * 300)
    assert main(["reward", "--data", str(data), "--batch-size", "64", "--num-threads", "2"]) == 0
    captured = capsys.readouterr()
    assert "scoring" in captured.err  # tqdm's bar
    assert "records scored: 300" in captured.out and "completions: 600" in captured.out
    assert "accuracy (StepRAR)  0.5750" in captured.out  # mean of 1.075 and 0.075


def test_nothing_scored_exits_nonzero_with_the_summary(tmp_path, capsys):
    data = _write(tmp_path / "bad.jsonl", ["{oops", json.dumps({"completion": GOOD}), ""])
    assert main(["reward", "--data", str(data)]) == 1
    captured = capsys.readouterr()
    assert "records scored: 0" in captured.out and "malformed lines skipped: 2" in captured.out
    assert f"{data}: nothing was scored (all 2 non-empty lines were malformed)" in captured.err
    empty = _write(tmp_path / "empty.jsonl", [""])
    assert main(["reward", "--data", str(empty)]) == 1
    assert "nothing was scored (it holds no records)" in capsys.readouterr().err
