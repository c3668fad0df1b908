"""`stepgrpo demo`: an offline end-to-end StepGRPO run on the synthetic visual-reasoning task.

    synthetic data (sft / rl / eval JSONL + PNG)  ->  tiny Qwen2-VL with its own tokenizer
    ->  SFT warm-up  ->  held-out greedy eval  ->  StepGRPO from the SFT checkpoint (which is also
    the frozen KL reference)  ->  held-out greedy eval  ->  DIR/report.md, DIR/report.json, PNGs

    stepgrpo demo [--out DIR] [--seed S | --seeds 0,1,2] [--ablation] [--set STAGE.KEY=VALUE ...]

Hyperparameters live in the demo's own configs, demo scale (large learning rates, few steps,
short completions), never in the library defaults:
    stepgrpo_fast/configs/demo_sft.yaml       SFTConfig of the warm-up
    stepgrpo_fast/configs/demo_stepgrpo.yaml  StepGRPOConfig of the RL stage
    DemoSettings (below)                      data sizes, task mix, model size, eval, CPU threads
``--set sft.max_steps=40``, ``--set rl.learning_rate=1e-4``, ``--set demo.n_eval=32`` override
any of them. ``--ablation`` adds the paper's Table 2 (StepRAR only / StepRVR only / both) and
Table 4 (outcome-only reward vs step-wise reward) as extra RL runs from the same SFT checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import time
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SFT_CONFIG = CONFIG_DIR / "demo_sft.yaml"
RL_CONFIG = CONFIG_DIR / "demo_stepgrpo.yaml"
MARKER = ".stepgrpo_demo"            # marks a directory the demo created (safe to overwrite)
OWNED_ENTRIES = ("data", "model", "sft", "stepgrpo", "ablation", "sft.yaml", "stepgrpo.yaml",
                 "report.md", "report.json",
                 "reward_curve.png", "before_after.png", "ablation.png", "predictions_sft.jsonl",
                 "predictions_stepgrpo.jsonl", "summary.md", "summary.json")
METRICS = ("accuracy", "validity", "key_step_match", "reward")
STAGES = ("sft", "rl", "demo")

# RL variants of the ablation: name -> (label, StepGRPOConfig overrides). "stepgrpo" is the main run.
RL_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "stepgrpo": ("StepRAR + StepRVR (StepGRPO)", {}),
    "step_rar": ("StepRAR only", {"reward_weights": [1.0, 0.0]}),
    "step_rvr": ("StepRVR only", {"reward_weights": [0.0, 1.0]}),
    "outcome": ("outcome-only reward (answer correct: 1, else 0)",
                {"reward_weights": [1.0, 0.0], "alpha": 0.0}),
}


@dataclass
class DemoSettings:
    """Data, model and evaluation sizes of the demo (``--set demo.KEY=VALUE``)."""

    n_sft: int = 512                   # SFT records (with reference reasoning)
    n_rl: int = 256                    # RL prompts (question, solution, key steps)
    n_eval: int = 256                  # held-out problems (disjoint from SFT / RL), greedy decoding
    # "count" is left out by default: the tiny vision tower does not learn to count within the
    # demo's budget (SFT answers one constant count), so its accuracy is chance and only adds
    # seed noise; ``--set demo.kinds=[add,area,count,compare]`` puts it back.
    kinds: list[str] = field(default_factory=lambda: ["add", "area", "compare"])
    text_hints: bool = True            # add / area questions also state the numbers
    max_value: int = 9                 # operands 1..max_value (2..9): 81 sums, 64 areas, 72 bar pairs
    # The SFT traces come from a weak teacher that drops the carry in this share of the carrying
    # sums ("7 + 8 = 5"); RL's verifiable reward (answer + key step "7 + 8 = 15") has to repair it.
    sft_carry_slip: float = 0.7
    # ... and breaks the "###" layout of this share of its traces (misnumbered steps, no
    # Rationales section, the answer before the steps; data.synthetic.break_layout), so that
    # StepRVR has something to reward. 0 (the default) leaves the traces as they were. Each
    # broken trace gets one of ``sft_layout_faults`` (uniformly): with all three, none is ever the
    # majority, so greedy decoding after SFT stays valid and only sampled completions break;
    # one fault at a share above 0.5 makes the SFT model's greedy layout invalid too.
    sft_layout_break: float = 0.0
    sft_layout_faults: list[str] = field(
        default_factory=lambda: ["misnumbered", "no_rationales", "answer_first"])
    # The RL records' key steps: "generator" (the task generator's own) or "extracted" (what
    # `stepgrpo keysteps` extracts, rule-based, from each RL problem's reference reasoning).
    # Evaluation always scores against the generator's key steps.
    key_steps: str = "generator"
    hidden_size: int = 64
    num_layers: int = 2
    vocab_size: int = 1024
    phrase_merges: bool = True         # tokenizer merges across spaces: ~20-token responses
    eval_max_new_tokens: int = 40
    eval_batch_size: int = 16
    threads: int = 1                   # torch CPU threads per process (0 = leave torch's default)
    # SFT and StepGRPO run as this many local data-parallel processes (accelerate + gloo) with the
    # same global batch: the tiny model's step is per-op overhead, so a second core helps only as
    # a second process. A fixed default (not the core count) keeps results machine-independent.
    processes: int = 2

    def __post_init__(self) -> None:
        from stepgrpo_fast.data.synthetic import KINDS

        for name in ("n_sft", "n_rl", "n_eval", "hidden_size", "num_layers", "vocab_size",
                     "eval_max_new_tokens", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"demo.{name} must be >= 1, got {getattr(self, name)}")
        if self.threads < 0:
            raise ValueError(f"demo.threads must be >= 0, got {self.threads}")
        if self.processes < 1:
            raise ValueError(f"demo.processes must be >= 1, got {self.processes}")
        if not 2 <= self.max_value <= 9:
            raise ValueError(f"demo.max_value must be in 2..9, got {self.max_value}")
        if not 0.0 <= self.sft_carry_slip <= 1.0:
            raise ValueError(f"demo.sft_carry_slip must be in [0, 1], got {self.sft_carry_slip}")
        if not 0.0 <= self.sft_layout_break <= 1.0:
            raise ValueError(f"demo.sft_layout_break must be in [0, 1], got {self.sft_layout_break}")
        from stepgrpo_fast.data.synthetic import LAYOUT_FAULTS

        if not self.sft_layout_faults or any(f not in LAYOUT_FAULTS for f in self.sft_layout_faults):
            raise ValueError(f"demo.sft_layout_faults must be a non-empty subset of {LAYOUT_FAULTS}, "
                             f"got {self.sft_layout_faults}")
        if self.key_steps not in ("generator", "extracted"):
            raise ValueError(f"demo.key_steps must be 'generator' or 'extracted', got {self.key_steps!r}")
        bad = [k for k in self.kinds if k not in KINDS]
        if not self.kinds or bad:
            raise ValueError(f"demo.kinds must be a non-empty subset of {KINDS}, got {self.kinds}")


# ----------------------------------------------------------------------------------------
# configuration

def split_overrides(items: Sequence[str]) -> dict[str, list[str]]:
    """['sft.max_steps=5', 'rl.beta=0'] -> {'sft': ['max_steps=5'], 'rl': ['beta=0'], 'demo': []}."""
    out: dict[str, list[str]] = {stage: [] for stage in STAGES}
    for item in items:
        stage, dot, rest = str(item).partition(".")
        if not dot or stage not in STAGES or "=" not in rest:
            raise ValueError(f"override {item!r} must look like STAGE.KEY=VALUE with STAGE one of "
                             f"{', '.join(STAGES)} (e.g. rl.learning_rate=1e-4)")
        out[stage].append(rest)
    return out


def make_settings(overrides: Sequence[str] = ()) -> DemoSettings:
    """DemoSettings with ``key=value`` overrides (values parsed as YAML, type-checked)."""
    from stepgrpo_fast.trainer.config import coerce_value, parse_override

    hints = typing.get_type_hints(DemoSettings)
    names = [f.name for f in dataclasses.fields(DemoSettings)]
    values: dict[str, Any] = {}
    for item in overrides:
        key, value = parse_override(item)
        if key not in names:
            raise ValueError(f"unknown demo setting {key!r} (valid: {', '.join(names)})")
        values[key] = coerce_value(f"demo.{key}", value, hints[key])
    return DemoSettings(**values)


def load_stage_configs(sft_overrides: Sequence[str] = (), rl_overrides: Sequence[str] = ()):
    """(SFTConfig, StepGRPOConfig) from the demo YAMLs plus overrides (paths filled in later)."""
    from stepgrpo_fast.trainer.config import SFTConfig, StepGRPOConfig

    return (SFTConfig.from_yaml(SFT_CONFIG, overrides=list(sft_overrides)),
            StepGRPOConfig.from_yaml(RL_CONFIG, overrides=list(rl_overrides)))


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` or clear what an earlier demo run left in it; refuse a non-empty
    directory the demo did not create."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ValueError(f"--out {out} is not empty and was not made by `stepgrpo demo`; "
                         "choose a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    for entry in list(out.iterdir()):
        if entry.name in OWNED_ENTRIES or entry.name.startswith("seed_"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    (out / MARKER).write_text("created by `stepgrpo demo`; its contents are rewritten by the next run\n")
    return out


def _set_offline_and_threads(settings: DemoSettings) -> int:
    """Offline environment variables; torch CPU threads -> settings.threads. Returns the previous
    thread count. One thread is the default: on a 2-core machine shared with other processes the
    tiny model's many small ops run 10-50x slower with 2 OpenMP threads (spin-waiting)."""
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    previous = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    return previous


# ----------------------------------------------------------------------------------------
# stages

def evaluate_checkpoint(model_dir: Path, eval_path: Path, settings: DemoSettings, rl_config,
                        predictions: Path) -> dict[str, Any]:
    """Held-out greedy evaluation with the full StepGRPO reward (StepRAR + StepRVR, alpha 0.1
    whatever the training reward was) plus accuracy per problem kind."""
    from stepgrpo_fast.trainer.evaluate import evaluate

    result = evaluate(model_dir, eval_path, batch_size=settings.eval_batch_size,
                      max_new_tokens=settings.eval_max_new_tokens, reward_mode=rl_config.reward_mode,
                      alpha=0.1, reward_weights=(1.0, 1.0), predictions_path=predictions,
                      dtype=rl_config.dtype, min_pixels=rl_config.min_pixels, max_pixels=rl_config.max_pixels)
    result["per_kind_accuracy"] = per_kind_accuracy(predictions, eval_path)
    return result


def per_kind_accuracy(predictions: Path, eval_path: Path) -> dict[str, float]:
    """Mean answer_correct of a predictions JSONL grouped by the eval records' "kind"."""
    kinds = [json.loads(line).get("kind", "all") for line in Path(eval_path).read_text().splitlines()
             if line.strip()]
    totals: dict[str, list[float]] = {}
    for line in Path(predictions).read_text().splitlines():
        row = json.loads(line)
        line_no = int(str(row["source"]).rsplit(":", 1)[1])
        totals.setdefault(kinds[line_no - 1], []).append(float(row["answer_correct"]))
    return {kind: sum(v) / len(v) for kind, v in sorted(totals.items())}


def train_rl_variant(name: str, base_config, sft_model: Path, rl_data: Path,
                     output_dir: Path, seed: int, progress: bool, settings: DemoSettings):
    """One StepGRPO run from the SFT checkpoint (policy start and KL reference); returns
    (config, final_model directory)."""
    from stepgrpo_fast.trainer.launch import run_stage

    _, overrides = RL_VARIANTS[name]
    config = dataclasses.replace(base_config, model_name_or_path=str(sft_model), train_data=str(rl_data),
                                 output_dir=str(output_dir), seed=seed,
                                 progress_bar=progress, **overrides)
    return config, run_stage("train", config, processes=settings.processes, threads=settings.threads)


def read_curve(metrics_jsonl: Path) -> list[dict[str, float]]:
    """Per-step RL metrics (step, reward, accuracy, validity, key_step_match, kl)."""
    keep = ("step", "reward", "accuracy", "validity", "key_step_match", "kl", "completion_length")
    rows = []
    for line in Path(metrics_jsonl).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows.append({k: row[k] for k in keep if isinstance(row.get(k), (int, float))})
    return rows


def run_demo(out_dir: str | Path, *, seed: int = 0, ablation: bool = False,
             settings: DemoSettings | None = None, sft_overrides: Sequence[str] = (),
             rl_overrides: Sequence[str] = (), progress: bool = True) -> dict[str, Any]:
    """Run the whole pipeline into ``out_dir``; returns the report dict (also DIR/report.json).

    report keys: "sft" and "stepgrpo" (held-out accuracy, validity, key_step_match, reward,
    reward_accuracy, reward_validity, completion_length, num_examples, per_kind_accuracy),
    "delta", "seed", "config", "timings" (seconds), "training" (loss / reward curves),
    "machine", and "ablation" (table2 / table4 rows) when ``ablation``.
    """
    t_start = time.perf_counter()
    settings = settings or DemoSettings()
    sft_base, rl_base = load_stage_configs(sft_overrides, rl_overrides)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    out = prepare_out_dir(out_dir)
    previous_threads = _set_offline_and_threads(settings)
    try:
        return _run_pipeline(out, seed, ablation, settings, sft_base, rl_base, progress, t_start)
    finally:
        import torch

        torch.set_num_threads(previous_threads)


def _run_pipeline(out: Path, seed: int, ablation: bool, settings: DemoSettings, sft_base, rl_base,
                  progress: bool, t_start: float) -> dict[str, Any]:
    from tqdm.auto import tqdm

    variants = ["stepgrpo", "step_rar", "step_rvr", "outcome"] if ablation else ["stepgrpo"]
    stages = tqdm(total=3 + 2 * len(variants), desc="demo", disable=not progress, position=0)
    timings: dict[str, float] = {}

    def stage_done(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 2)
        stages.update(1)

    # 1. data and the tiny model
    from stepgrpo_fast.data.synthetic import write_dataset
    from stepgrpo_fast.data.tiny_model import build_tiny_checkpoint

    stages.set_description("demo: data + tiny model")
    t0 = time.perf_counter()
    data = write_dataset(out / "data", seed=seed, n_sft=settings.n_sft, n_rl=settings.n_rl,
                         n_eval=settings.n_eval, kinds=tuple(settings.kinds), text_hints=settings.text_hints,
                         max_value=settings.max_value, sft_carry_slip=settings.sft_carry_slip,
                         sft_layout_break=settings.sft_layout_break,
                         sft_layout_faults=tuple(settings.sft_layout_faults),
                         rl_response=settings.key_steps == "extracted")
    if settings.key_steps == "extracted":  # RL key steps from the RL problems' reference reasoning
        from stepgrpo_fast.keysteps import extract_file

        extraction = extract_file(data["rl"], data["rl"])
        (out / "data" / "rl_keysteps.txt").write_text("\n".join(extraction.lines()) + "\n")
    model_dir = build_tiny_checkpoint(out / "model", seed=seed, vocab_size=settings.vocab_size,
                                      phrase_merges=settings.phrase_merges, hidden_size=settings.hidden_size,
                                      num_layers=settings.num_layers, min_pixels=sft_base.min_pixels,
                                      max_pixels=sft_base.max_pixels)
    stage_done("data_and_model_s", t0)

    # 2. SFT warm-up
    from stepgrpo_fast.trainer.launch import run_stage

    stages.set_description("demo: SFT warm-up")
    t0 = time.perf_counter()
    sft_config = dataclasses.replace(sft_base, model_name_or_path=str(model_dir), train_data=str(data["sft"]),
                                     output_dir=str(out / "sft"), seed=seed,
                                     progress_bar=progress)
    sft_model = run_stage("sft", sft_config, processes=settings.processes, threads=settings.threads)
    stage_done("sft_s", t0)

    stages.set_description("demo: eval SFT")
    t0 = time.perf_counter()
    sft_eval = evaluate_checkpoint(sft_model, data["eval"], settings, rl_base, out / "predictions_sft.jsonl")
    stage_done("sft_eval_s", t0)

    # 3. StepGRPO (and the ablation variants) from the SFT checkpoint
    runs: dict[str, dict[str, Any]] = {}
    rl_config = None
    for name in variants:
        run_dir = out / "stepgrpo" if name == "stepgrpo" else out / "ablation" / name
        stages.set_description(f"demo: RL {name}")
        t0 = time.perf_counter()
        config, final_model = train_rl_variant(name, rl_base, sft_model, data["rl"], run_dir, seed,
                                               progress, settings)
        rl_config = config if name == "stepgrpo" else rl_config
        stage_done(f"{name}_s", t0)
        stages.set_description(f"demo: eval {name}")
        t0 = time.perf_counter()
        predictions = out / "predictions_stepgrpo.jsonl" if name == "stepgrpo" else run_dir / "predictions.jsonl"
        result = evaluate_checkpoint(final_model, data["eval"], settings, rl_base, predictions)
        stage_done(f"{name}_eval_s", t0)
        runs[name] = {"eval": result, "curve": read_curve(run_dir / "metrics.jsonl"),
                      "train_s": timings[f"{name}_s"], "config": config}
    stages.close()

    timings["total_s"] = round(time.perf_counter() - t_start, 2)
    main = runs["stepgrpo"]
    report: dict[str, Any] = {
        "seed": seed,
        "sft": sft_eval,
        "stepgrpo": main["eval"],
        "delta": {k: main["eval"][k] - sft_eval[k] for k in METRICS},
        "timings": timings,
        "training": {
            "sft_loss": read_loss_curve(out / "sft" / "metrics.jsonl"),
            "stepgrpo_curve": main["curve"],
        },
        "config": {"demo": dataclasses.asdict(settings), "sft": sft_config.to_dict(),
                   "stepgrpo": rl_config.to_dict()},
        "machine": machine_summary(),
        "paths": {"data": str(out / "data"), "sft_model": str(sft_model),
                  "stepgrpo_model": str(out / "stepgrpo" / "final_model")},
    }
    if ablation:
        report["ablation"] = ablation_tables(sft_eval, runs)
    plot_reward_curve(runs, out / "reward_curve.png")
    plot_before_after(sft_eval, main["eval"], out / "before_after.png")
    if ablation:
        plot_ablation(report["ablation"], out / "ablation.png")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(report))
    return report


def read_loss_curve(metrics_jsonl: Path) -> list[dict[str, float]]:
    rows = []
    for line in Path(metrics_jsonl).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows.append({"step": row["step"], "loss": row["loss"]})
    return rows


def ablation_tables(sft_eval: dict[str, Any], runs: dict[str, dict[str, Any]]) -> dict[str, list[dict]]:
    """Rows of the paper's Table 2 (reward components) and Table 4 (outcome vs step-wise)."""
    def row(label: str, result: dict[str, Any], train_s: float | None) -> dict[str, Any]:
        return {"method": label, **{k: result[k] for k in METRICS}, "train_s": train_s}

    table2 = [row("SFT warm-up only", sft_eval, None)]
    table2 += [row("+ " + RL_VARIANTS[n][0], runs[n]["eval"], runs[n]["train_s"])
               for n in ("step_rar", "step_rvr", "stepgrpo")]
    table4 = [row(RL_VARIANTS["outcome"][0], runs["outcome"]["eval"], runs["outcome"]["train_s"]),
              row("step-wise reward: " + RL_VARIANTS["stepgrpo"][0], runs["stepgrpo"]["eval"],
                  runs["stepgrpo"]["train_s"])]
    return {"table2": table2, "table4": table4}


def machine_summary() -> dict[str, Any]:
    """Where a report was made. Results to the last digit depend on the CPU model (torch's CPU
    kernels pick AVX2 / AVX-512 / AMX code by instruction set), so it is recorded."""
    import torch

    from stepgrpo_fast.bench.machine import cpu_model

    return {"platform": platform.platform(), "cpu": cpu_model(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}


# ----------------------------------------------------------------------------------------
# several seeds

def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """{"mean", "std" (sample std, 0 for one value), "values"}."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std of no values")
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "values": values}


def summarize_seeds(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean +- std over seeds of SFT and StepGRPO metrics, the paired deltas, and whether
    StepGRPO beats SFT by more than the seed-to-seed spread (delta mean > both stds)."""
    if not reports:
        raise ValueError("summarize_seeds needs at least one report")
    summary: dict[str, Any] = {"seeds": [r["seed"] for r in reports]}
    for stage in ("sft", "stepgrpo"):
        summary[stage] = {k: mean_std([r[stage][k] for r in reports]) for k in METRICS}
    summary["delta"] = {k: mean_std([r["stepgrpo"][k] - r["sft"][k] for r in reports]) for k in METRICS}
    summary["beats_spread"] = {
        k: summary["delta"][k]["mean"] > max(summary["sft"][k]["std"], summary["stepgrpo"][k]["std"])
        for k in METRICS}
    summary["wall_s"] = mean_std([r["timings"]["total_s"] for r in reports])
    return summary


def run_seeds(out_dir: str | Path, seeds: Sequence[int], **kwargs) -> dict[str, Any]:
    """run_demo for each seed into DIR/seed_S, then DIR/summary.json and DIR/summary.md."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and non-empty, got {list(seeds)}")
    out = prepare_out_dir(out_dir)
    reports = [run_demo(out / f"seed_{s}", seed=s, **kwargs) for s in seeds]
    summary = summarize_seeds(reports)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(summary))
    return summary


# ----------------------------------------------------------------------------------------
# plots and report

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_reward_curve(runs: dict[str, dict[str, Any]], path: Path) -> Path:
    """Training reward (StepRAR + StepRVR of the sampled completions) per RL step, raw and
    smoothed, one line per RL variant; accuracy of the samples underneath."""
    plt = _pyplot()
    fig, (ax_r, ax_a) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for name, run in runs.items():
        steps = [r["step"] for r in run["curve"]]
        if not steps:
            continue
        window = max(1, len(steps) // 10)
        for ax, key in ((ax_r, "reward"), (ax_a, "accuracy")):
            values = [r.get(key, float("nan")) for r in run["curve"]]
            (line,) = ax.plot(steps, _moving_average(values, window), label=RL_VARIANTS[name][0])
            ax.plot(steps, values, color=line.get_color(), alpha=0.25, linewidth=0.8)
    ax_r.set_ylabel("train reward (0 .. 2.1)")
    ax_a.set_ylabel("train accuracy")
    ax_a.set_xlabel("RL step")
    ax_r.legend(fontsize=8)
    for ax in (ax_r, ax_a):
        ax.grid(alpha=0.3)
    fig.suptitle("StepGRPO on the synthetic task (sampled completions, moving average)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_before_after(sft_eval: dict[str, Any], rl_eval: dict[str, Any], path: Path) -> Path:
    """Held-out metrics of the SFT and StepGRPO checkpoints side by side."""
    plt = _pyplot()
    fig, (ax_m, ax_r) = plt.subplots(1, 2, figsize=(8, 3.6), gridspec_kw={"width_ratios": [3, 1]})
    names = ("accuracy", "validity", "key_step_match")
    width = 0.38
    for offset, (label, result) in zip((-width / 2, width / 2), (("SFT", sft_eval), ("StepGRPO", rl_eval))):
        xs = [i + offset for i in range(len(names))]
        bars = ax_m.bar(xs, [result[k] for k in names], width, label=label)
        ax_m.bar_label(bars, fmt="%.2f", fontsize=8)
        bar = ax_r.bar([offset], [result["reward"]], width, label=label)
        ax_r.bar_label(bar, fmt="%.2f", fontsize=8)
    ax_m.set_xticks(range(len(names)), names)
    ax_m.set_ylim(0, 1.1)
    ax_m.legend(fontsize=8)
    ax_r.set_xticks([0], ["reward"])
    ax_r.set_ylim(0, 2.2)
    fig.suptitle(f"held-out greedy eval ({int(sft_eval['num_examples'])} problems)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_ablation(tables: dict[str, list[dict]], path: Path) -> Path:
    plt = _pyplot()
    rows = tables["table2"] + tables["table4"][:1]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    labels = [r["method"].split(" (")[0].replace("+ ", "+") for r in rows]
    bars = ax.bar(range(len(rows)), [r["reward"] for r in rows])
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(range(len(rows)), labels, rotation=15, fontsize=8)
    ax.set_ylabel("held-out reward")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else str(v))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def report_markdown(report: dict[str, Any]) -> str:
    sft, rl, t = report["sft"], report["stepgrpo"], report["timings"]
    cfg_sft, cfg_rl, demo = report["config"]["sft"], report["config"]["stepgrpo"], report["config"]["demo"]
    rows = [{"checkpoint": name, **{k: result[k] for k in (*METRICS, "completion_length")}}
            for name, result in (("SFT warm-up", sft), ("StepGRPO", rl))]
    kinds = sorted(set(sft["per_kind_accuracy"]) | set(rl["per_kind_accuracy"]))
    kind_rows = [{"kind": k, "SFT": sft["per_kind_accuracy"].get(k), "StepGRPO": rl["per_kind_accuracy"].get(k)}
                 for k in kinds]
    machine = report["machine"]
    parts = [
        f"# StepGRPO demo (seed {report['seed']})\n",
        (f"Held-out greedy evaluation on {int(sft['num_examples'])} synthetic problems "
         f"({', '.join(demo['kinds'])}); reward = StepRAR (alpha 0.1) + StepRVR, range 0 .. 2.1.\n"),
        _table(rows, ("checkpoint", *METRICS, "completion_length")),
        "\nAccuracy per problem kind:\n",
        _table(kind_rows, ("kind", "SFT", "StepGRPO")),
        "\n![reward curve](reward_curve.png)\n\n![before / after](before_after.png)\n",
        "## Setup\n",
        (f"- data: {demo['n_sft']} SFT / {demo['n_rl']} RL / {demo['n_eval']} eval records, operands "
         f"1..{demo['max_value']}, text hints {demo['text_hints']}, SFT teacher drops the carry in "
         f"{demo.get('sft_carry_slip', 0.0):.0%} of carrying sums"),
        (f"- model: tiny Qwen2-VL, hidden {demo['hidden_size']}, {demo['num_layers']} layers, vocab "
         f"{demo['vocab_size']} (phrase merges {demo['phrase_merges']}), vision tower frozen {cfg_rl['freeze_vision']}"),
        (f"- SFT: {cfg_sft['max_steps']} steps x batch {cfg_sft['per_device_batch_size']}, lr "
         f"{cfg_sft['learning_rate']} ({cfg_sft['lr_scheduler_type']})"),
        (f"- StepGRPO: {cfg_rl['max_steps']} steps x {cfg_rl['per_device_batch_size']} prompts x M="
         f"{cfg_rl['num_generations']}, lr {cfg_rl['learning_rate']} ({cfg_rl['lr_scheduler_type']}), beta "
         f"{cfg_rl['beta']}, temperature {cfg_rl['temperature']}, max_new_tokens {cfg_rl['max_new_tokens']}, "
         f"reward weights {cfg_rl['reward_weights']}"),
        (f"- machine: {machine['cpu_count']} CPU cores ({machine.get('cpu', '?')}), torch "
         f"{machine['torch']}; training on {demo.get('processes', 1)} process(es) x "
         f"{machine['torch_threads']} torch thread(s) (global batches as above)\n"),
        "## Wall time (s)\n",
        _table([{"stage": k[:-2], "seconds": v} for k, v in t.items()], ("stage", "seconds")),
    ]
    if "ablation" in report:
        cols = ("method", *METRICS, "train_s")
        parts += ["\n## Ablation: reward components (paper Table 2 shape)\n",
                  _table(report["ablation"]["table2"], cols),
                  "\n## Ablation: outcome-only vs step-wise reward (paper Table 4 shape)\n",
                  _table(report["ablation"]["table4"], cols),
                  "\n![ablation](ablation.png)\n"]
    return "\n".join(parts) + "\n"


def summary_markdown(summary: dict[str, Any]) -> str:
    def fmt(ms: dict[str, Any]) -> str:
        return f"{ms['mean']:.3f} +- {ms['std']:.3f}"

    rows = [{"metric": k, "SFT": fmt(summary["sft"][k]), "StepGRPO": fmt(summary["stepgrpo"][k]),
             "delta (paired)": fmt(summary["delta"][k]),
             "beats spread": "yes" if summary["beats_spread"][k] else "no"} for k in METRICS]
    return (f"# StepGRPO demo over seeds {summary['seeds']}\n\n"
            + _table(rows, ("metric", "SFT", "StepGRPO", "delta (paired)", "beats spread"))
            + f"\n\nWall time per seed: {fmt(summary['wall_s'])} s\n")


# ----------------------------------------------------------------------------------------
# command line

def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]."""
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must list distinct non-negative integers, got {text!r}")
    return seeds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="outputs/demo", help="output directory (default: outputs/demo)")
    parser.add_argument("--seed", type=int, default=None, help="seed of data, model and training (default 0)")
    parser.add_argument("--seeds", default=None, metavar="S1,S2,...",
                        help="run one demo per seed into OUT/seed_S and write OUT/summary.md (mean +- std)")
    parser.add_argument("--ablation", action="store_true",
                        help="also run StepRAR-only, StepRVR-only and outcome-only RL (paper Tables 2 and 4)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.KEY=VALUE",
                        help="override a setting: sft.*, rl.* (StepGRPOConfig) or demo.* (DemoSettings)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    try:
        if args.seed is not None and args.seeds is not None:
            raise ValueError("give --seed or --seeds, not both")
        groups = split_overrides(args.overrides)
        kwargs = {"ablation": args.ablation, "settings": make_settings(groups["demo"]),
                  "sft_overrides": groups["sft"], "rl_overrides": groups["rl"], "progress": not args.no_progress}
        if args.seeds is not None:
            summary = run_seeds(args.out, parse_seeds(args.seeds), **kwargs)
            print(summary_markdown(summary))
            print(f"summary: {Path(args.out) / 'summary.md'}")
            return 0
        report = run_demo(args.out, seed=0 if args.seed is None else args.seed, **kwargs)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name in ("sft", "stepgrpo"):
        r = report[name]
        print(f"{name:>9}: accuracy {r['accuracy']:.3f}  validity {r['validity']:.3f}  "
              f"key-step match {r['key_step_match']:.3f}  reward {r['reward']:.3f}")
    print(f"report: {Path(args.out) / 'report.md'}  ({report['timings']['total_s']:.0f} s)")
    return 0
