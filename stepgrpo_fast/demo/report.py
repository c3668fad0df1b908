"""The demo's report: PNG plots (reward curve, before / after, ablation) and the markdown of
report.md (one seed) and summary.md (several seeds)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .settings import METRICS, RL_VARIANTS


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
