"""SFT warm-up end to end on the tiny model: weights move, loss falls, files appear; evaluation."""

import json

import pytest
import torch
from safetensors.torch import load_file

from stepgrpo_fast.trainer.config import SFTConfig
from stepgrpo_fast.trainer.loop import run_sft


@pytest.fixture(scope="module")
def sft_run(tiny_ckpt, synthetic_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft")
    config = SFTConfig(
        model_name_or_path=str(tiny_ckpt),
        train_data=str(synthetic_data["sft"]),
        output_dir=str(out),
        per_device_batch_size=4,
        max_steps=6,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        warmup_ratio=0.0,
        save_steps=3,
        save_total_limit=1,
        progress_bar=False,
        seed=0,
    )
    return config, run_sft(config)


def test_sft_changes_language_weights_not_the_frozen_tower(sft_run, tiny_ckpt):
    config, summary = sft_run
    before = load_file(tiny_ckpt / "model.safetensors")
    after = load_file(f"{summary['final_model']}/model.safetensors")
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any("language_model" in k or "embed_tokens" in k for k in changed)
    assert not any(
        ".visual." in k or k.startswith("visual.") or "model.visual" in k for k in changed
    )


def test_sft_loss_falls_and_metrics_are_logged(sft_run):
    config, summary = sft_run
    rows = [json.loads(line) for line in open(f"{config.output_dir}/metrics.jsonl")]
    assert [r["step"] for r in rows] == list(range(1, 7))
    losses = [r["loss"] for r in rows]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.5
    for key in ("grad_norm", "learning_rate", "tokens_per_s", "epoch", "step_time"):
        assert key in rows[0]
    assert rows[-1]["epoch"] == pytest.approx(6 * 4 / 16)
    header = open(f"{config.output_dir}/metrics.csv").readline().strip().split(",")
    assert header[0] == "step" and "loss" in header
    assert summary["curve"] and open(summary["curve"], "rb").read(8).startswith(b"\x89PNG")


def test_sft_checkpoints_keep_last_one(sft_run):
    from stepgrpo_fast.trainer.checkpoint import list_checkpoints, verify_checkpoint

    config, summary = sft_run
    kept = list_checkpoints(config.output_dir)
    assert [p.name for p in kept] == ["checkpoint-6"]
    verify_checkpoint(kept[0])
    state = json.loads((kept[0] / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["samples_seen"] == 24 and state["kind"] == "sft"


def test_cosine_warmup_schedule(tiny_ckpt, synthetic_data, tmp_path):
    config = SFTConfig(
        model_name_or_path=str(tiny_ckpt),
        train_data=str(synthetic_data["sft"]),
        output_dir=str(tmp_path),
        per_device_batch_size=8,
        num_epochs=2.0,
        learning_rate=1e-3,
        warmup_ratio=0.3,
        save_steps=0,
        progress_bar=False,
    )  # 16 records / 8 x 2 epochs = 4 steps
    summary = run_sft(config)
    lrs = [json.loads(line)["learning_rate"] for line in open(tmp_path / "metrics.jsonl")]
    assert summary["steps"] == 4 and len(lrs) == 4
    assert lrs[0] < lrs[1]  # warm-up (1 step)
    assert lrs[1] > lrs[2] > lrs[3]  # cosine decay


def test_evaluate_final_model(sft_run, synthetic_data, tmp_path):
    from stepgrpo_fast.trainer.evaluate import evaluate

    _, summary = sft_run
    preds = tmp_path / "preds.jsonl"
    result = evaluate(
        summary["final_model"],
        synthetic_data["eval"],
        batch_size=4,
        max_new_tokens=24,
        limit=4,
        predictions_path=preds,
    )
    assert result["num_examples"] == 4
    for key in ("accuracy", "validity", "key_step_match", "reward_accuracy", "reward_validity"):
        assert 0.0 <= result[key] <= 1.1
    assert 0.0 <= result["reward"] <= 2.1 and 1 <= result["completion_length"] <= 24
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(rows) == 4 and {"completion", "reward", "answer_correct", "source"} <= set(rows[0])


def test_eval_cli_writes_json(sft_run, synthetic_data, tmp_path, capsys):
    from stepgrpo_fast.trainer.cli import main

    _, summary = sft_run
    out = tmp_path / "metrics.json"
    code = main(
        [
            "eval",
            "--model",
            summary["final_model"],
            "--data",
            str(synthetic_data["eval"]),
            "--limit",
            "2",
            "--max-new-tokens",
            "8",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    assert json.loads(out.read_text())["num_examples"] == 2.0
    assert '"accuracy"' in capsys.readouterr().out


def test_logger_resume_cuts_back_to_the_checkpoint_step(tmp_path):
    from stepgrpo_fast.trainer.logging import RunLogger

    log = RunLogger(tmp_path, progress_bar=False)
    for step in (1, 2, 3):
        log.log(step, {"loss": float(step), "kl": torch.tensor(0.5)})
    log.log_samples(2, [{"completion": "x"}])
    log.log_samples(3, [{"completion": "y"}])
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')  # a line torn by a kill
    resumed = RunLogger(tmp_path, resume=True, start_step=2, progress_bar=False)
    resumed.log(3, {"loss": 30.0, "new_key": 1})
    resumed.close()
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    assert rows[0]["kl"] == 0.5
    csv_lines = open(tmp_path / "metrics.csv").read().splitlines()
    assert csv_lines[0] == "step,loss,kl,new_key" and len(csv_lines) == 4
    assert [json.loads(line)["step"] for line in open(tmp_path / "samples.jsonl")] == [2]


def test_tensorboard_is_an_optional_import(tmp_path):
    import importlib.util

    from stepgrpo_fast.trainer.logging import RunLogger

    if importlib.util.find_spec("tensorboard") is not None:
        log = RunLogger(tmp_path, report_to="tensorboard", progress_bar=False)
        log.log(1, {"loss": 1.0})
        log.close()
        assert (tmp_path / "tensorboard").is_dir()
    else:
        with pytest.raises(ImportError, match="pip install tensorboard"):
            RunLogger(tmp_path, report_to="tensorboard", progress_bar=False)
    assert (
        RunLogger(tmp_path, enabled=False, report_to="wandb").log(1, {"x": 1}) is None
    )  # other ranks: no-op


def test_metrics_reach_accelerate_trackers(tmp_path, monkeypatch):
    """report_to goes through accelerate's tracker API: every tracker named is started, gets the
    run config (as scalars) once and every logged step's numeric metrics, and is finished."""
    from accelerate import tracking

    from stepgrpo_fast.trainer.logging import RunLogger

    calls = []

    class Recording(tracking.GeneralTracker):
        name, requires_logging_directory = "recording", False

        def __init__(self, *args, **kwargs):
            super().__init__()
            calls.append(("init", args, kwargs))

        @property
        def tracker(self):
            return self

        def start(self):
            calls.append(("start",))

        def store_init_configuration(self, values):
            calls.append(("config", values))

        def log(self, values, step=None, **kwargs):
            calls.append(("log", step, values))

        def finish(self):
            calls.append(("finish",))

    monkeypatch.setitem(tracking.LOGGER_TYPE_TO_CLASS, "wandb", Recording)
    monkeypatch.setitem(tracking.LOGGER_TYPE_TO_CLASS, "mlflow", Recording)
    log = RunLogger(tmp_path / "run", report_to="wandb, mlflow", run_name="r1",
                    config={"lr": 1e-6, "reward_weights": [1.0, 1.0]}, progress_bar=False)
    log.log(3, {"reward": 1.5, "note": "text"})
    log.close()
    assert calls[0] == ("init", ("stepgrpo_fast",), {"name": "r1", "dir": str(tmp_path / "run"),
                                                     "resume": "allow"})
    assert ("init", ("stepgrpo_fast",), {"run_name": "r1"}) in calls  # mlflow's experiment / run
    assert ("config", {"lr": 1e-6, "reward_weights": "[1.0, 1.0]"}) in calls
    assert [c for c in calls if c[0] == "log"] == [("log", 3, {"reward": 1.5})] * 2
    assert calls.count(("start",)) == 2 and calls.count(("finish",)) == 2
    with pytest.raises(ValueError, match="report_to must be one of"):
        RunLogger(tmp_path / "bad", report_to="wandb,nope", progress_bar=False)
