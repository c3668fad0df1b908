"""Bad data fails before any model is loaded, naming file, line and field; a corrupt checkpoint on
resume gives a clear error and leaves the previous good checkpoint as it was."""

import json
import shutil

import pytest

from stepgrpo_fast.trainer.checkpoint import CorruptCheckpointError, verify_checkpoint
from stepgrpo_fast.trainer.cli import main
from stepgrpo_fast.trainer.config import SFTConfig, StepGRPOConfig
from stepgrpo_fast.trainer.loop import run_sft, run_stepgrpo

NO_MODEL = "/nonexistent/model/dir"  # loading it would fail differently: data must be checked first


def _good_rows(synthetic_data, n=3):
    rows = [json.loads(line) for line in synthetic_data["rl"].read_text().splitlines()[:n]]
    for row in rows:
        row["image"] = str(synthetic_data["dir"] / row["image"])
    return rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _broken(kind, row, tmp_path):
    row = dict(row)
    if kind == "missing_image":
        row["image"] = str(tmp_path / "nope.png")
        return row, r"field 'image'.*not found"
    if kind == "unreadable_image":
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"not a png at all")
        row["image"] = str(bad)
        return row, r"field 'image'.*cannot read image"
    if kind == "missing_question":
        row.pop("question")
        return row, r"field 'question'"
    if kind == "missing_solution":
        row.pop("solution")
        return row, r"field 'solution'"
    if kind == "key_steps_type":
        row["key_steps"] = 42
        return row, r"field 'key_steps'"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    ["missing_image", "unreadable_image", "missing_question", "missing_solution", "key_steps_type"],
)
def test_bad_record_fails_before_training(kind, tmp_path, synthetic_data):
    rows = _good_rows(synthetic_data)
    rows[1], pattern = _broken(kind, rows[1], tmp_path)
    data = _write(tmp_path / "train.jsonl", rows)
    config = StepGRPOConfig(
        model_name_or_path=NO_MODEL,
        train_data=str(data),
        output_dir=str(tmp_path / "out"),
        progress_bar=False,
    )
    with pytest.raises(ValueError, match=rf"train\.jsonl:2: {pattern}"):
        run_stepgrpo(config)
    assert not (tmp_path / "out").exists()  # nothing started


def test_sft_needs_a_response(tmp_path, synthetic_data):
    data = _write(tmp_path / "sft.jsonl", _good_rows(synthetic_data))  # RL rows: no "response"
    config = SFTConfig(
        model_name_or_path=NO_MODEL, train_data=str(data), output_dir=str(tmp_path / "out")
    )
    with pytest.raises(ValueError, match=r"sft\.jsonl:1: field 'response'"):
        run_sft(config)


def test_cli_reports_bad_data_and_exits_2(tmp_path, synthetic_data, capsys):
    rows = _good_rows(synthetic_data)
    rows[2], _ = _broken("missing_solution", rows[2], tmp_path)
    data = _write(tmp_path / "train.jsonl", rows)
    code = main(
        [
            "train",
            "--set",
            f"model_name_or_path={NO_MODEL}",
            "--set",
            f"train_data={data}",
            "--set",
            f"output_dir={tmp_path / 'out'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "train.jsonl:3" in err and "'solution'" in err


def test_cli_reports_config_errors(tmp_path, capsys):
    assert main(["train", "--set", "num_generatoins=4"]) == 2
    assert "did you mean num_generations" in capsys.readouterr().err


def test_too_few_records_for_one_global_batch(tmp_path, synthetic_data, tiny_rl_config):
    data = _write(tmp_path / "train.jsonl", _good_rows(synthetic_data, n=3))
    config = tiny_rl_config(tmp_path / "o", train_data=str(data), per_device_batch_size=4)
    with pytest.raises(ValueError, match="has 3 records, fewer than one global batch"):
        run_stepgrpo(config)


def _tree_bytes(path):
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def test_corrupt_checkpoint_on_resume(tmp_path, tiny_rl_config, capsys):
    out = tmp_path / "run"
    base = dict(max_new_tokens=8, save_steps=1, beta=0.0)
    run_stepgrpo(tiny_rl_config(out, **base, max_steps=2))
    good, bad = out / "checkpoint-1", out / "checkpoint-2"
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a torn write
    good_before = _tree_bytes(good)

    longer = tiny_rl_config(out, **base, max_steps=3)
    with pytest.raises(CorruptCheckpointError) as info:
        run_stepgrpo(longer, resume=True)
    message = str(info.value)
    assert str(bad) in message and "model.safetensors" in message
    assert str(good) in message and "not touched" in message
    assert _tree_bytes(good) == good_before

    # the CLI says the same in one line and exits 2
    longer.to_yaml(tmp_path / "longer.yaml")
    code = main(["train", "--config", str(tmp_path / "longer.yaml"), "--resume"])
    assert code == 2 and "corrupt" in capsys.readouterr().err
    assert _tree_bytes(good) == good_before

    # resuming explicitly from the good checkpoint works and rewrites step 2 cleanly
    summary = run_stepgrpo(longer, resume=str(good))
    assert summary["start_step"] == 1
    verify_checkpoint(out / "checkpoint-3")
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_resume_path_must_be_a_checkpoint(tmp_path, tiny_ckpt, tiny_rl_config):
    config = tiny_rl_config(tmp_path / "o")
    fake = tmp_path / "checkpoint-9"
    shutil.copytree(tiny_ckpt, fake)  # a model dir, but no manifest
    with pytest.raises(CorruptCheckpointError, match="manifest.json is missing"):
        run_stepgrpo(config, resume=str(fake))
