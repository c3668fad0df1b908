"""The demo reads training curves with the trainer's metrics reader (trainer.logging.read_metrics):
what RunLogger wrote is what the report's curves hold; no training is run here."""
import pytest
import torch

from stepgrpo_fast import demo
from stepgrpo_fast.trainer.logging import RunLogger, read_metrics


def _log(run_dir, rows):
    log = RunLogger(run_dir, progress_bar=False)
    for row in rows:
        log.log(row["step"], {k: v for k, v in row.items() if k != "step"})
    log.close()
    return run_dir / "metrics.jsonl"


def test_read_metrics_takes_the_file_or_the_run_dir_and_stops_at_a_torn_line(tmp_path):
    path = _log(tmp_path, [{"step": 1, "loss": 2.5, "kl": torch.tensor(0.25)},
                           {"step": 2, "loss": 1.5, "kl": 0.125}])
    with open(path, "a") as f:
        f.write('{"step": 3, "lo')  # a line torn by a kill mid-write
    rows = read_metrics(tmp_path)
    assert [(r["step"], r["loss"], r["kl"]) for r in rows] == [(1, 2.5, 0.25), (2, 1.5, 0.125)]
    assert read_metrics(path) == rows
    assert read_metrics(tmp_path / "no_run") == []


def test_demo_curves_come_from_the_logged_rows(tmp_path):
    rl = _log(tmp_path / "rl", [
        {"step": 1, "reward": 0.5, "accuracy": 0.25, "validity": 1.0, "key_step_match": 0.5,
         "kl": 0.0, "completion_length": 12.0, "learning_rate": 1e-4, "note": "x"},
        {"step": 2, "reward": 1.25, "accuracy": 0.75, "kl": float("nan")},
    ])
    curve = demo.read_curve(rl)
    assert curve[0] == {"step": 1, "reward": 0.5, "accuracy": 0.25, "validity": 1.0,
                        "key_step_match": 0.5, "kl": 0.0, "completion_length": 12.0}
    assert curve[1] == {"step": 2, "reward": 1.25, "accuracy": 0.75}  # nan is logged as a string
    sft = _log(tmp_path / "sft", [{"step": 1, "loss": 3.0, "grad_norm": 1.0}, {"step": 2, "loss": 2.0}])
    assert demo.read_loss_curve(sft) == [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}]
    with pytest.raises(FileNotFoundError, match="no metrics file"):
        demo.read_curve(tmp_path / "missing" / "metrics.jsonl")
