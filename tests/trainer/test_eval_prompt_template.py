"""`stepgrpo eval` / evaluate() prompt the model with the layout it was trained with.

prompt_template (config): "default" = question, then the reasoning instruction; "r1vl" = the
instruction, then the question (the released layout). evaluate(prompt_template=None) takes it from
the model dir's training_config.yaml (checkpoint-N/, final_model/) or config.yaml (output_dir, the
trainer's eval_at_end); an explicit value or `--prompt-template` wins. Checked on the token ids
the model is actually given (decoded), on the tiny model.
"""

import json
import shutil

import pytest
import yaml

from stepgrpo_fast.trainer import cli
from stepgrpo_fast.data import prompts as data
from stepgrpo_fast.data.records import load_records
from stepgrpo_fast.data.prompts import REASONING_PROMPT
from stepgrpo_fast.trainer.evaluate import evaluate, trained_prompt_template


@pytest.fixture
def seen_prompts(monkeypatch):
    """Decoded prompt text of every row evaluate() encodes, with the template it asked for."""
    seen = []
    real = data.encode_prompts

    def spy(processor, records, *, template="default"):
        batch = real(processor, records, template=template)
        texts = processor.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
        seen.extend((template, text) for text in texts)
        return batch

    monkeypatch.setattr(data, "encode_prompts", spy)
    return seen


def _model_dir(tiny_ckpt, tmp_path, name, **saved):
    out = tmp_path / "model"
    shutil.copytree(tiny_ckpt, out)
    if name is not None:
        (out / name).write_text(yaml.safe_dump({"learning_rate": 1e-6, **saved}))
    return out


def _layout(text, question):
    """'r1vl' when the instruction comes before the question, 'default' when after."""
    q, r = text.index(question.strip()), text.index(REASONING_PROMPT.strip())
    return "r1vl" if r < q else "default"


def _run(model_dir, synthetic_data, **kw):
    return evaluate(
        model_dir, synthetic_data["eval"], batch_size=2, max_new_tokens=2, limit=2, **kw
    )


@pytest.mark.parametrize(
    "saved_in, saved, given, want",
    [
        ("training_config.yaml", "r1vl", None, "r1vl"),  # stepgrpo eval --model OUT/final_model
        ("config.yaml", "r1vl", None, "r1vl"),  # eval_at_end: model_dir is the output_dir
        ("training_config.yaml", "default", None, "default"),
        ("training_config.yaml", "r1vl", "default", "default"),  # explicit wins
        (None, None, None, "default"),  # a plain HF checkpoint
        (None, None, "r1vl", "r1vl"),
    ],
)
def test_evaluate_prompts_with_the_trained_template(
    tiny_ckpt, synthetic_data, tmp_path, seen_prompts, saved_in, saved, given, want
):
    extra = {} if saved is None else {"prompt_template": saved}
    model_dir = _model_dir(tiny_ckpt, tmp_path, saved_in, **extra)
    result = _run(model_dir, synthetic_data, prompt_template=given)
    assert result["num_examples"] == 2.0
    records = load_records(synthetic_data["eval"], require_response=False)[:2]
    assert len(seen_prompts) == 2
    for record, (template, text) in zip(records, seen_prompts):
        assert data.OWN_INSTRUCTION_MARKER not in record.question  # the template applies
        assert template == want and _layout(text, record.question) == want


def test_cli_eval_reads_the_template_and_the_flag_overrides_it(
    tiny_ckpt, synthetic_data, tmp_path, seen_prompts, capsys
):
    model_dir = _model_dir(tiny_ckpt, tmp_path, "training_config.yaml", prompt_template="r1vl")
    argv = ["eval", "--model", str(model_dir), "--data", str(synthetic_data["eval"]),
            "--limit", "1", "--max-new-tokens", "2", "--device", "cpu"]  # fmt: skip
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["num_examples"] == 1.0
    assert cli.main([*argv, "--prompt-template", "default"]) == 0
    assert [t for t, _ in seen_prompts] == ["r1vl", "default"]
    record = load_records(synthetic_data["eval"], require_response=False)[0]
    assert [_layout(text, record.question) for _, text in seen_prompts] == ["r1vl", "default"]


def test_unknown_saved_template_names_the_file(tiny_ckpt, synthetic_data, tmp_path):
    model_dir = _model_dir(tiny_ckpt, tmp_path, "training_config.yaml", prompt_template="llava")
    with pytest.raises(ValueError, match=r"training_config\.yaml: prompt_template .* 'llava'"):
        trained_prompt_template(model_dir)
    with pytest.raises(ValueError, match="prompt_template must be one of"):
        _run(model_dir, synthetic_data, prompt_template="chatml")


def test_cli_eval_column_map_reads_other_columns(tiny_ckpt, synthetic_data, tmp_path, capsys):
    """`stepgrpo eval --column-map question=query ...` evaluates a file whose columns have other
    names; without the map the same file is refused naming the missing field."""
    src = [json.loads(line) for line in open(synthetic_data["eval"])][:2]
    renamed = tmp_path / "renamed.jsonl"
    base = synthetic_data["eval"].parent
    with open(renamed, "w") as f:
        for r in src:
            f.write(json.dumps({"query": r["question"], "gt": r["solution"],
                                "img": str((base / r["image"]).resolve()),
                                "steps": r["key_steps"]}) + "\n")
    argv = ["eval", "--model", str(tiny_ckpt), "--data", str(renamed), "--max-new-tokens", "4",
            "--device", "cpu"]
    assert cli.main([*argv, "--column-map", "question=query", "solution=gt", "image=img",
                     "key_steps=steps"]) == 0
    assert json.loads(capsys.readouterr().out)["num_examples"] == 2
    assert cli.main(argv) != 0
    assert "renamed.jsonl:1" in capsys.readouterr().err
