"""Benchmark-format eval (`stepgrpo eval --format mathvista|mcq|open`): MathVista's answer rules,
record / completion errors, metrics per question type and source, the CLI, and one greedy run of
the tiny model. Everything except the last test runs without a model."""
from __future__ import annotations

import json

import pytest

from stepgrpo_fast.rewards.benchmark_formats import judge
from stepgrpo_fast.rewards.benchmark_records import load_benchmark, load_completions
from stepgrpo_fast.trainer.cli import main
from stepgrpo_fast.trainer.evaluate import benchmark_prompt, evaluate_benchmark

HEADER = "### Step 1:\nreasoning\n### The final answer is:\n"


def mathvista(pid, answer, question_type="free_form", answer_type="integer", **fields):
    """A record with MathVista's own fields (as in its testmini.json)."""
    record = {
        "pid": pid, "question": f"question {pid}", "image": f"images/{pid}.jpg",
        "choices": None, "unit": None, "precision": None, "answer": answer,
        "question_type": question_type, "answer_type": answer_type,
        "metadata": {"source": "Geometry3K", "split": "testmini"},
    }
    record.update(fields)
    return record


def item_of(record, fmt="mathvista", tmp_path=None):
    return _load([record], fmt, tmp_path)[0]


def _load(records, fmt, tmp_path):
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return load_benchmark(path, fmt)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------ answer rules
MC = mathvista("1", "8", "multi_choice", "integer", choices=["6", "8", "10"])
YES_NO = mathvista("2", "Yes", "multi_choice", "text", choices=["Yes", "No"])
INTEGER = mathvista("3", "12", unit="cm")
ODD_UNIT = mathvista("4", "7", unit="apples")
FLOAT = mathvista("5", "1.4", answer_type="float", precision=1.0)
FLOAT2 = mathvista("6", "0.33", answer_type="float", precision=2.0)
TEXT = mathvista("7", "Yes", answer_type="text")
LIST = mathvista("8", "[2, 3]", answer_type="list")

MATHVISTA_CASES = [
    # multiple choice: letter <-> option text
    (MC, HEADER + "B", True),                      # letter vs option text "8"
    (MC, HEADER + "8", True),                      # the option text itself
    (MC, HEADER + "**B**", True),
    (MC, HEADER + "$\\boxed{B}$", True),
    (MC, HEADER + "\\boxed{B}", True),
    (MC, HEADER + "b", True),                      # lower-case letter
    (MC, HEADER + "(b)", True),
    (MC, HEADER + "(B) 8", True),
    (MC, HEADER + "B: 8", True),
    (MC, HEADER + "8.0", True),                    # same number as one option
    (MC, "The final answer is: B", True),          # answer line without "###"
    (MC, "reasoning\n**The final answer is:** B", True),
    (MC, "B", True),                               # a bare one-line answer
    (MC, HEADER + "A", False),
    (MC, HEADER + "D", False),                     # no fourth option
    (MC, HEADER + "B or C", False),                # hedges stay wrong
    (MC, HEADER + "8 or 10", False),
    (MC, HEADER + "B, C", False),
    (MC, HEADER + "(B) or (C)", False),            # the letter alone would pick B
    (MC, HEADER + "B: 8, not 10", False),
    (MC, "reasoning without an answer line\nmore text", False),
    (YES_NO, HEADER + "yes", True),                # "yes" vs "Yes"
    (YES_NO, HEADER + "A", True),
    (YES_NO, HEADER + "No", False),
    # integers, units ignored
    (INTEGER, HEADER + "12", True),
    (INTEGER, HEADER + "12 cm", True),
    (INTEGER, HEADER + "x = 12", True),
    (INTEGER, HEADER + "$\\boxed{12}$", True),
    (INTEGER, HEADER + "12.0", True),
    (INTEGER, HEADER + "13", False),
    (INTEGER, HEADER + "12.5", False),
    (INTEGER, HEADER + "12 or 13", False),
    (INTEGER, HEADER + "12 (not 13)", False),
    (ODD_UNIT, HEADER + "7 apples", True),         # the record's own unit
    (ODD_UNIT, HEADER + "8 apples", False),
    # floats rounded to the precision
    (FLOAT, HEADER + "1.43", True),                # 1.43 -> 1.4 at precision 1
    (FLOAT, HEADER + "1.4", True),
    (FLOAT, HEADER + "1.40 cm", True),
    (FLOAT, HEADER + "1.46", False),               # -> 1.5
    (FLOAT, HEADER + "1.43 or 1.5", False),
    (FLOAT2, HEADER + "\\frac{1}{3}", True),       # 0.333... -> 0.33
    (FLOAT2, HEADER + "0.34", False),
    # text and lists
    (TEXT, HEADER + "yes", True),
    (TEXT, HEADER + "**Yes.**", True),
    (TEXT, HEADER + "No", False),
    (TEXT, HEADER + "yes or no", False),
    (LIST, HEADER + "[2, 3]", True),
    (LIST, HEADER + "2, 3", True),
    (LIST, HEADER + "[3, 2]", False),
    (LIST, HEADER + "[2, 3, 4]", False),
    (LIST, HEADER + "[2, 3] or [3, 4]", False),
]


@pytest.mark.parametrize("record,completion,expected", MATHVISTA_CASES,
                         ids=[f"{r['pid']}-{c.removeprefix(HEADER)}"
                              for r, c, _ in MATHVISTA_CASES])
def test_mathvista_rules(record, completion, expected, tmp_path):
    assert judge(item_of(record, tmp_path=tmp_path), completion, "mathvista").correct is expected


@pytest.mark.parametrize("completion,expected", [
    ("C", True), ("(c)", True), ("triangle", True), ("Triangle.", True), ("B", False),
    ("C or B", False),
])
def test_mcq_answer_given_as_letter(completion, expected, tmp_path):
    record = {"pid": 1, "question": "Which shape?", "choices": ["circle", "square", "triangle"],
              "answer": "C"}
    item = item_of(record, "mcq", tmp_path)
    assert item.gold_index == 2 and item.question_type == "multi_choice"
    assert judge(item, HEADER + completion, "mcq").correct is expected


@pytest.mark.parametrize("completion,answer,expected", [
    ("\\frac{1}{2}", "0.5", True), ("12 cm", "12", True), ("45°", "45", True),
    ("5 or 7", "7", False), ("3, 4", "4", False), ("5 (not 3)", "3", False), ("6", "7", False),
])
def test_open_format_uses_the_paper_answer_rules(completion, answer, expected, tmp_path):
    item = item_of({"pid": "a", "question": "q", "answer": answer}, "open", tmp_path)
    assert judge(item, HEADER + completion, "open").correct is expected


def test_prompts_list_options_and_ask_for_the_layout(tmp_path):
    item = item_of(MC, tmp_path=tmp_path)
    for style in ("training", "released"):
        text = benchmark_prompt(item, style)
        assert text.startswith("question 1\nChoices:\n(A) 6\n(B) 8\n(C) 10\n")
        assert "letter" in text and "### The final answer is:" in text
        assert "### Step 1:" in text and "### Image Description:" in text
    assert benchmark_prompt(item, "training") != benchmark_prompt(item, "released")
    assert "2 decimal place" in benchmark_prompt(item_of(FLOAT2, tmp_path=tmp_path), "released")
    with pytest.raises(ValueError, match="prompt must be one of"):
        benchmark_prompt(item, "mystery")


# ---------------------------------------------------------------------------- record errors
@pytest.mark.parametrize("fmt,record,message", [
    ("mathvista", mathvista("1", "8", question_type=None), "field 'question_type'"),
    ("mathvista", mathvista("1", "8", answer_type="number"), "field 'answer_type'"),
    ("mathvista", mathvista("1", "1.5", answer_type="float"), "field 'precision'"),
    ("mathvista", mathvista("1", "8", "multi_choice"), "field 'choices'"),
    ("mathvista", mathvista("1", "9", "multi_choice", choices=["6", "8"]), "not one of the option"),
    ("mathvista", mathvista("1", "eight"), "is not a number"),
    ("mathvista", {**mathvista("1", "8"), "pid": None}, "field 'pid'"),
    ("mathvista", {**mathvista("1", "8"), "question": ""}, "field 'question'"),
    ("mcq", {"pid": "1", "question": "q", "answer": "A"}, "field 'choices'"),
    ("mcq", {"pid": "1", "question": "q", "choices": ["x"], "answer": "B"},
     "option text or letter"),
    ("open", {"pid": "1", "question": "q"}, "field 'answer'"),
])
def test_record_without_needed_fields_names_file_and_line(fmt, record, message, tmp_path):
    path = write_jsonl(tmp_path / "bench.jsonl", [mathvista("0", "1"), record])
    with pytest.raises(ValueError, match=message) as err:
        load_benchmark(path, fmt)
    assert f"{path}:2:" in str(err.value)


def test_gold_option_matched_up_to_case_and_blanks(tmp_path):
    item = item_of(mathvista("1", "yes ", "multi_choice", "text", choices=["No", "Yes"]),
                   tmp_path=tmp_path)
    assert item.gold_index == 1 and judge(item, HEADER + "B", "mathvista").correct


def test_duplicated_record_pid_names_both_lines(tmp_path):
    path = write_jsonl(tmp_path / "bench.jsonl", [mathvista("1", "3"), mathvista("1", "4")])
    with pytest.raises(ValueError, match=rf"{path}:2: pid '1' also at {path}:1"):
        load_benchmark(path, "mathvista")


def test_mathvista_object_layout_keys_are_pids_and_lines_are_reported(tmp_path):
    records = {"1": mathvista("1", "3"), "2": {k: v for k, v in mathvista("2", "4").items()
                                                if k != "pid"}}
    path = tmp_path / "testmini.json"
    path.write_text(json.dumps(records, indent=1))
    items = load_benchmark(path, "mathvista")
    assert [i.pid for i in items] == ["1", "2"] and items[1].source == "Geometry3K"
    records["2"]["answer_type"] = "number"
    path.write_text(json.dumps(records, indent=1))
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1)
                if text.startswith(' "2"'))
    with pytest.raises(ValueError, match=rf"{path}:{line}: field 'answer_type'"):
        load_benchmark(path, "mathvista")


# ------------------------------------------------------------------------ completion errors
def test_completion_errors(tmp_path):
    items = _load([mathvista("1", "3"), mathvista("2", "4")], "mathvista", tmp_path)
    unknown = write_jsonl(tmp_path / "c1.jsonl", [{"pid": "1", "completion": "3"},
                                                  {"pid": "2", "completion": "4"},
                                                  {"pid": "99", "completion": "5"}])
    with pytest.raises(ValueError, match=rf"{unknown}:3: pid '99' has no record"):
        load_completions(unknown, items)
    dup = write_jsonl(tmp_path / "c2.jsonl", [{"pid": 1, "completion": "3"},
                                              {"pid": "1", "completion": "4"}])
    with pytest.raises(ValueError, match=rf"{dup}:2: pid '1' also at {dup}:1"):
        load_completions(dup, items)
    missing = write_jsonl(tmp_path / "c3.jsonl", [{"pid": "1", "completion": "3"}])
    with pytest.raises(ValueError, match=r"no completion for 1 record\(s\): pid '2'"):
        load_completions(missing, items)
    bad = write_jsonl(tmp_path / "c4.jsonl", [{"pid": "1"}])
    with pytest.raises(ValueError, match=rf"{bad}:1: field 'completion'"):
        load_completions(bad, items)
    broken = tmp_path / "c5.jsonl"
    broken.write_text('{"pid": "1", "completion": "3"}\n{"pid": \n')
    with pytest.raises(ValueError, match=rf"{broken}:2: bad JSON"):
        load_completions(broken, items)


# ------------------------------------------------------------------- metrics, predictions, CLI
def _small_benchmark(tmp_path):
    records = [
        MC, YES_NO, INTEGER, {**FLOAT, "metadata": {"source": "ChartQA"}},
        {**TEXT, "metadata": {"source": "ChartQA"}},
    ]
    completions = [
        {"pid": "1", "completion": HEADER + "B"},          # right
        {"pid": "2", "completion": HEADER + "No"},         # wrong
        {"pid": "3", "completion": "The final answer is 12 cm"},  # right
        {"pid": "5", "completion": HEADER + "1.43"},       # right
        {"pid": "7", "completion": "no answer here\nat all"},      # wrong, unanswered
    ]
    # the images do not exist: scoring given completions must not open them
    return (write_jsonl(tmp_path / "bench.jsonl", records),
            write_jsonl(tmp_path / "completions.jsonl", completions))


def test_metrics_per_question_type_and_source(tmp_path):
    data, completions = _small_benchmark(tmp_path)
    preds = tmp_path / "preds.jsonl"
    result = evaluate_benchmark(data, "mathvista", completions_path=completions,
                                predictions_path=preds)
    assert result["num_examples"] == 5 and result["accuracy"] == pytest.approx(3 / 5)
    assert result["answered"] == pytest.approx(4 / 5)
    assert result["by_question_type"] == {
        "free_form": {"num_examples": 3, "accuracy": pytest.approx(2 / 3)},
        "multi_choice": {"num_examples": 2, "accuracy": 0.5},
    }
    assert result["by_source"] == {
        "ChartQA": {"num_examples": 2, "accuracy": 0.5},
        "Geometry3K": {"num_examples": 3, "accuracy": pytest.approx(2 / 3)},
    }
    assert result["by_answer_type"]["float"] == {"num_examples": 1, "accuracy": 1.0}
    assert result["answer_check_timeouts"] == 0
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["pid"] for r in rows] == ["1", "2", "3", "5", "7"]
    assert [r["correct"] for r in rows] == [True, False, True, True, False]
    assert rows[0]["choices"] == ["6", "8", "10"] and rows[0]["answer_line"] == "B"
    assert rows[4]["answer_line"] is None
    again = evaluate_benchmark(data, "mathvista", completions_path=preds)  # predictions re-scored
    assert again == result


def test_eval_cli_scores_completions_without_a_model(tmp_path, capsys):
    data, completions = _small_benchmark(tmp_path)
    out = tmp_path / "metrics.json"
    code = main(["eval", "--format", "mathvista", "--data", str(data),
                 "--completions", str(completions), "--output", str(out)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text()) and printed["accuracy"] == pytest.approx(0.6)


@pytest.mark.parametrize("argv,message", [
    (["--format", "mathvista"], "--format needs --model DIR"),
    (["--completions", "x.jsonl"], "--completions needs --format"),
    ([], "--model DIR is required"),
    (["--format", "mathvista", "--completions", "c.jsonl", "--model", "m"], "not both"),
])
def test_eval_cli_argument_errors(argv, message, tmp_path, capsys):
    data, _ = _small_benchmark(tmp_path)
    assert main(["eval", "--data", str(data), *argv]) == 2
    assert message in capsys.readouterr().err


def test_eval_cli_bad_record_is_one_error_line(tmp_path, capsys):
    data = write_jsonl(tmp_path / "bench.jsonl", [mathvista("1", "1.5", answer_type="float")])
    completions = write_jsonl(tmp_path / "c.jsonl", [{"pid": "1", "completion": "1.5"}])
    assert main(["eval", "--format", "mathvista", "--data", str(data),
                 "--completions", str(completions)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{data}:1: field 'precision'" in err


def test_model_run_needs_images_before_loading_a_model(tmp_path):
    data, _ = _small_benchmark(tmp_path)
    with pytest.raises(ValueError, match=rf"{data}:1: field 'image': file .*1.jpg' not found"):
        evaluate_benchmark(data, "mathvista", model_dir=tmp_path / "no_such_model")


# --------------------------------------------------------------------------- the model path
def test_greedy_run_of_the_tiny_model(tiny_ckpt, synthetic_data, tmp_path):
    image = min((synthetic_data["dir"] / "images").glob("eval_*.png"))
    records = [
        {**MC, "image": str(image)},
        {**INTEGER, "image": str(image), "metadata": {"source": "FunctionQA"}},
    ]
    data = write_jsonl(tmp_path / "bench.jsonl", records)
    preds = tmp_path / "preds.jsonl"
    result = evaluate_benchmark(data, "mathvista", model_dir=tiny_ckpt, prompt="released",
                                max_new_tokens=6, batch_size=2, predictions_path=preds)
    assert result["num_examples"] == 2 and 1 <= result["completion_length"] <= 6
    assert 0.0 <= result["validity"] <= 1.0
    assert set(result["by_source"]) == {"FunctionQA", "Geometry3K"}
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["pid"] for r in rows] == ["1", "3"] and all(isinstance(r["completion"], str)
                                                          for r in rows)
    rescored = evaluate_benchmark(data, "mathvista", completions_path=preds)
    assert rescored["accuracy"] == result["accuracy"]
    assert [r["correct"] for r in rows] == [
        judge(item, r["completion"], "mathvista").correct
        for item, r in zip(load_benchmark(data, "mathvista"), rows)
    ]
