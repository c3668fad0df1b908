"""Run logging: progress bar, per-step metrics (JSONL + CSV), samples, experiment trackers through
accelerate's tracker API (``report_to``: tensorboard, wandb, mlflow, trackio, ..., comma-separated),
and a reward (or loss) curve PNG at the end.

Files under ``output_dir``::

    metrics.jsonl   one JSON object per logged step: {"step": 3, "reward": 1.2, "kl": ..., ...}
    metrics.csv     the same rows; columns = every key seen so far (rewritten when a key appears)
    samples.jsonl   {"step", "question", "solution", "completion", "reward", ...} every N steps
    curve.png       reward components (RL) or loss (SFT) against step

Only the main process writes; other processes get a logger whose methods do nothing. On resume
the files are cut back to the resumed step, so a killed-and-resumed run ends with the same files
as an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
SAMPLES_JSONL = "samples.jsonl"
CURVE_PNG = "curve.png"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line torn by a kill mid-write: everything after it is dropped
    return rows


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl (``path``: the file, or the run's output_dir) in the
    order they were logged; [] when there is no file. A line torn by a kill mid-write ends the
    rows (as on resume)."""
    path = Path(path)
    return _read_jsonl(path / METRICS_JSONL if path.is_dir() else path)


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _clean(value: Any) -> Any:
    """Tensors / numpy scalars -> python floats, so json and csv accept them."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class RunLogger:
    """Writes metrics and samples; a no-op on non-main processes (``enabled=False``)."""

    def __init__(
        self,
        output_dir: str | Path,
        *,
        enabled: bool = True,
        total_steps: int = 0,
        start_step: int = 0,
        resume: bool = False,
        report_to: str = "none",
        run_name: str | None = None,
        config: dict[str, Any] | None = None,
        progress_bar: bool = True,
        bar_keys: tuple[str, ...] = ("reward", "kl", "step_time"),
        curve_keys: tuple[str, ...] = ("reward", "reward_accuracy", "reward_validity"),
    ) -> None:
        self.enabled = enabled
        self.dir = Path(output_dir)
        self.bar_keys = bar_keys
        self.curve_keys = curve_keys
        self.records: list[dict[str, Any]] = []
        self.columns: list[str] = []
        self._bar = None
        self._trackers: list[Any] = []
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        metrics, samples = self.dir / METRICS_JSONL, self.dir / SAMPLES_JSONL
        if resume:
            self.records = [r for r in _read_jsonl(metrics) if r.get("step", 0) <= start_step]
            kept_samples = [r for r in _read_jsonl(samples) if r.get("step", 0) <= start_step]
        else:
            kept_samples = []
        _write_jsonl(metrics, self.records)
        _write_jsonl(samples, kept_samples)
        for row in self.records:
            self._add_columns(row)
        self._rewrite_csv()
        self._open_trackers(report_to, run_name, config or {})
        if progress_bar and total_steps > 0:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total_steps, initial=start_step, desc="train", dynamic_ncols=True
            )

    # --------------------------------------------------------------------------------
    def _open_trackers(self, report_to: str, run_name: str | None, config: dict[str, Any]) -> None:
        self._trackers = open_trackers(report_to, run_name, config, self.dir)

    def _add_columns(self, row: dict[str, Any]) -> bool:
        new = [k for k in row if k not in self.columns]
        self.columns.extend(new)
        return bool(new)

    def _rewrite_csv(self) -> None:
        with open(self.dir / METRICS_CSV, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            for row in self.records:
                writer.writerow(row)

    # --------------------------------------------------------------------------------
    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Append one step's metrics to every sink."""
        if not self.enabled:
            return
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        self.records.append(row)
        with open(self.dir / METRICS_JSONL, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._add_columns(row):
            self._rewrite_csv()
        else:
            with open(self.dir / METRICS_CSV, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns).writerow(row)
        numeric = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        for tracker in self._trackers:
            tracker.log(numeric, step=step)
        if self._bar is not None:
            shown = {
                k: f"{row[k]:.4g}" for k in self.bar_keys if isinstance(row.get(k), (int, float))
            }
            self._bar.set_postfix(shown, refresh=False)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def log_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        if not self.enabled or not samples:
            return
        with open(self.dir / SAMPLES_JSONL, "a") as f:
            for s in samples:
                f.write(json.dumps({"step": step, **{k: _clean(v) for k, v in s.items()}}) + "\n")

    def close(self) -> Path | None:
        """Close sinks and draw the curve PNG; returns its path (None when nothing to plot)."""
        if not self.enabled:
            return None
        if self._bar is not None:
            self._bar.close()
        for tracker in self._trackers:
            tracker.finish()
        return plot_curves(self.records, self.curve_keys, self.dir / CURVE_PNG)


def plot_curves(
    records: list[dict[str, Any]], keys: Iterable[str], path: str | Path
) -> Path | None:
    """Line plot of each key in ``keys`` present in ``records`` against step (matplotlib, Agg)."""
    series = {}
    for key in keys:
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        if points:
            series[key] = points
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, points in series.items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=key)
    ax.set_xlabel("step")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------- trackers
PROJECT = "stepgrpo_fast"
# pip package that brings each tracker (where it differs from the tracker's name)
TRACKER_PACKAGES = {"comet_ml": "comet-ml", "dvclive": "dvclive", "aim": "aim"}


def tracker_names(report_to: str) -> list[str]:
    """"none" -> []; "tensorboard,wandb" -> ["tensorboard", "wandb"]."""
    names = [n.strip() for n in str(report_to).split(",") if n.strip()]
    return [] if names in ([], ["none"]) else names


def check_report_to(report_to: str) -> None:
    """ValueError naming an unknown tracker and the ones accelerate offers."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    unknown = [n for n in tracker_names(report_to) if n not in LOGGER_TYPE_TO_CLASS]
    if unknown or "none" in tracker_names(report_to):
        raise ValueError(
            f"report_to must be one of ('none', {', '.join(map(repr, LOGGER_TYPE_TO_CLASS))}) "
            f"or a comma-separated list of them, got {report_to!r}"
        )


def open_trackers(report_to: str, run_name: str | None, config: dict[str, Any],
                  output_dir: Path) -> list[Any]:
    """Start accelerate's trackers for ``report_to`` and store the run config in each.

    Every tracker is a project "stepgrpo_fast" run named ``run_name`` where the tracker has both
    notions (wandb, mlflow, trackio, ...); file-based ones write under ``output_dir``
    (TensorBoard: ``output_dir/tensorboard``). A tracker whose package is missing raises
    ImportError naming the pip package.
    """
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    check_report_to(report_to)
    name = run_name or output_dir.name
    trackers = []
    for kind in tracker_names(report_to):
        cls = LOGGER_TYPE_TO_CLASS[kind]
        if kind == "tensorboard":
            args, kwargs = ("tensorboard",), {"logging_dir": str(output_dir)}
        elif kind == "wandb":
            args, kwargs = (PROJECT,), {"name": name, "dir": str(output_dir), "resume": "allow"}
        elif kind == "mlflow":
            args, kwargs = (PROJECT,), {"run_name": name}
        elif cls.requires_logging_directory:
            args, kwargs = (name,), {"logging_dir": str(output_dir)}
        else:
            args, kwargs = (name,), {}
        tracker = cls(*args, **kwargs)
        try:
            tracker.start()
        except ImportError as exc:
            package = TRACKER_PACKAGES.get(kind, kind)
            raise ImportError(f"report_to={kind} needs its package: pip install {package}") from exc
        tracker.store_init_configuration(_scalars(config))
        trackers.append(tracker)
    return trackers


def _scalars(config: dict[str, Any]) -> dict[str, Any]:
    """Trackers store bool / str / int / float / None hyperparameters: anything else as text."""
    return {k: v if v is None or isinstance(v, (bool, str, int, float)) else str(v)
            for k, v in config.items()}
