"""PNG plots of a run (matplotlib, Agg): one per group present, plus the scaling sweeps.

    <prefix>-linear_logprobs.png, <prefix>-linear_grpo_loss.png   main case: time / workspace per mode
    <prefix>-sweeps.png       time and workspace vs N and vs V, both ops, log-log
    <prefix>-advantages.png, <prefix>-rewards.png, <prefix>-train_step.png   throughput bars
"""
from __future__ import annotations

from pathlib import Path

from .rows import ok

MB = 2 ** 20


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(ax, groups: list[str], series: dict[str, list[float]], title: str, log=False) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [j + i * width for j in range(len(groups))]
        ax.bar(xs, values, width, label=name)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(groups))])
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_title(title, fontsize=9)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=7)


def _linear_main(rows: list[dict], op: str, path: Path, device: str) -> Path | None:
    main = [r for r in rows if r["group"] == op and not r["sweep"] and ok(r)]
    if not main:
        return None
    plt = _plt()
    modes = list(dict.fromkeys(r["mode"] for r in main))
    providers = list(dict.fromkeys(r["provider"] for r in main))
    get = {(r["provider"], r["mode"]): r for r in main}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _bars(axes[0], modes, {p: [get[(p, m)]["p50_s"] if (p, m) in get else 0 for m in modes]
                           for p in providers}, "time p50 (s)")
    _bars(axes[1], modes, {p: [max(get[(p, m)]["workspace_bytes"] / MB, 1e-3) if (p, m) in get
                               else 0 for m in modes] for p in providers},
          "workspace MB (peak - dH - dW), log", log=True)
    r0 = main[0]
    fig.suptitle(f"{op}: N={r0['N']} H={r0['H']} V={r0['V']} {r0['dtype']} on {device}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _sweeps(rows: list[dict], path: Path, device: str) -> Path | None:
    sw = [r for r in rows if r["sweep"] and ok(r)]
    if not sw:
        return None
    plt = _plt()
    ops = list(dict.fromkeys(r["op"] for r in sw))
    fig, axes = plt.subplots(len(ops), 4, figsize=(16, 3.6 * len(ops)), squeeze=False)
    for i, op in enumerate(ops):
        for j, sweep in enumerate(("N", "V")):
            sel = [r for r in sw if r["op"] == op and r["sweep"] == sweep]
            if not sel:
                continue
            fixed = ("H={H} V={V}" if sweep == "N" else "H={H} N={N}").format(**sel[0])
            for name in dict.fromkeys(r["provider"] for r in sel):
                pts = sorted((r[sweep], r["p50_s"], r["workspace_bytes"] / MB)
                             for r in sel if r["provider"] == name)
                xs = [p[0] for p in pts]
                axes[i][2 * j].plot(xs, [p[1] for p in pts], marker="o", label=name)
                axes[i][2 * j + 1].plot(xs, [max(p[2], 1e-3) for p in pts], marker="o",
                                        label=name)
            for k, what in ((2 * j, "time p50 s"), (2 * j + 1, "workspace MB")):
                ax = axes[i][k]
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_xlabel(sweep)
                ax.set_title(f"{op}: {what} vs {sweep} ({fixed})", fontsize=8)
                ax.legend(fontsize=7)
    fig.suptitle(f"scaling sweeps (fwd+bwd) on {device}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _throughput(rows: list[dict], group: str, path: Path, device: str, unit: str) -> Path | None:
    sel = [r for r in rows if r["group"] == group and ok(r)]
    if not sel:
        return None
    plt = _plt()
    cases = list(dict.fromkeys(f"{r['op']}\n{r['shape'][:40]}" for r in sel))
    providers = list(dict.fromkeys(r["provider"] for r in sel))
    get = {(r["provider"], f"{r['op']}\n{r['shape'][:40]}"): r for r in sel}
    fig, axes = plt.subplots(1, 2 if group == "train_step" else 1, figsize=(11, 4), squeeze=False)
    _bars(axes[0][0], cases, {p: [get[(p, c)]["items_per_s"] if (p, c) in get else 0
                                  for c in cases] for p in providers}, f"{unit} (p50)",
          log=group != "train_step")
    if group == "train_step":
        _bars(axes[0][1], cases, {p: [get[(p, c)]["p50_s"] if (p, c) in get else 0 for c in cases]
                                  for p in providers}, "seconds per optimizer step (p50)")
    fig.suptitle(f"{group} on {device}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(rows: list[dict], prefix: Path) -> list[Path]:
    device = next((r["device"] for r in rows if r.get("device")), "")
    name = lambda suffix: prefix.with_name(f"{prefix.name}-{suffix}.png")
    made = [
        _linear_main(rows, "linear_logprobs", name("linear_logprobs"), device),
        _linear_main(rows, "linear_grpo_loss", name("linear_grpo_loss"), device),
        _sweeps(rows, name("sweeps"), device),
        _throughput(rows, "advantages", name("advantages"), device, "rewards/s"),
        _throughput(rows, "rewards", name("rewards"), device, "completions/s"),
        _throughput(rows, "train_step", name("train_step"), device, "generated tokens/s"),
    ]
    return [p for p in made if p is not None]
