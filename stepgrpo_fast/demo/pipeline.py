"""The demo pipeline: data + tiny model -> SFT -> held-out eval -> StepGRPO (and the ablation
variants) from the SFT checkpoint -> held-out eval -> DIR/report.json, DIR/report.md and PNGs."""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stepgrpo_fast.trainer.logging import read_metrics

from .report import plot_ablation, plot_before_after, plot_reward_curve, report_markdown
from .settings import METRICS, RL_VARIANTS, DemoSettings, load_stage_configs, prepare_out_dir


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


def _metrics_rows(metrics_jsonl: Path) -> list[dict[str, Any]]:
    """The rows of a finished run's metrics.jsonl, read by the trainer's own reader."""
    if not Path(metrics_jsonl).is_file():
        raise FileNotFoundError(f"{metrics_jsonl}: no metrics file (the training run wrote none)")
    return read_metrics(metrics_jsonl)


def read_curve(metrics_jsonl: Path) -> list[dict[str, float]]:
    """Per-step RL metrics (step, reward, accuracy, validity, key_step_match, kl)."""
    keep = ("step", "reward", "accuracy", "validity", "key_step_match", "kl", "completion_length")
    return [{k: row[k] for k in keep if isinstance(row.get(k), (int, float))}
            for row in _metrics_rows(metrics_jsonl)]


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
    from stepgrpo_fast.synthetic.task import write_dataset
    from stepgrpo_fast.synthetic.tiny_model import build_tiny_checkpoint

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
    """Per-step SFT loss (step, loss)."""
    return [{"step": row["step"], "loss": row["loss"]} for row in _metrics_rows(metrics_jsonl)]


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
