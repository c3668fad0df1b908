"""Markdown tables of a run (written next to the CSV as <prefix>.md; the README copies them)."""
from __future__ import annotations

from .rows import ok

MB = 2 ** 20


def _mb(x) -> str:
    return f"{x / MB:,.1f}" if isinstance(x, (int, float)) and x != "" else "-"


def _s(x) -> str:
    if not isinstance(x, (int, float)):
        return "-"
    return f"{x:.3f}" if x >= 0.1 else f"{x * 1e3:.2f} ms"


def _ratio(x) -> str:
    return f"{x:.3g}x" if isinstance(x, (int, float)) else "-"


def _table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in line) + " |" for line in lines]
    return "\n".join(out)


def _linear(rows: list[dict], op: str) -> str:
    main = [r for r in rows if r["group"] == op and not r["sweep"]]
    if not main:
        return ""
    r0 = main[0]
    parts = [f"### {op} (N={r0['N']}, H={r0['H']}, V={r0['V']}, {r0['dtype']})", ""]
    lines = []
    for r in main:
        if ok(r):
            lines.append([r["mode"], r["provider"], _s(r["p50_s"]),
                          f"{_s(r['p20_s'])} - {_s(r['p80_s'])}", _ratio(r["x_baseline_p50"]),
                          _mb(r["peak_bytes"]), _mb(r["workspace_bytes"])])
        else:
            lines.append([r["mode"], r["provider"], r["status"], "", "", "", ""])
    parts.append(_table(["mode", "provider", "p50 s", "p20 - p80", "time vs naive",
                         "peak MB", "workspace MB"], lines))
    if op == "linear_grpo_loss":
        parts += ["", ("ours and liger compute dH and dW inside the forward pass (the loss is "
                       "known there), so their bwd only scales the stored gradients.")]
    for sweep in ("N", "V"):
        sw = [r for r in rows if r["group"] == op and r["sweep"] == sweep and ok(r)]
        if not sw:
            continue
        providers = list(dict.fromkeys(r["provider"] for r in sw))
        values = sorted({r[sweep] for r in sw})
        fixed = "H={H}, V={V}".format(**sw[0]) if sweep == "N" else "H={H}, N={N}".format(**sw[0])
        parts += ["", f"Scaling in {sweep} (full = fwd+bwd, {fixed}):", ""]
        get = {(r["provider"], r[sweep]): r for r in sw}
        header = [sweep] + [f"{p} s" for p in providers] + [f"{p} workspace MB" for p in providers]
        lines = [[f"{v:,}"] + [_s(get[(p, v)]["p50_s"]) if (p, v) in get else "-" for p in providers]
                 + [_mb(get[(p, v)]["workspace_bytes"]) if (p, v) in get else "-"
                    for p in providers] for v in values]
        parts.append(_table(header, lines))
    return "\n".join(parts)


def _simple(rows: list[dict], group: str, title: str, rate: str) -> str:
    sel = [r for r in rows if r["group"] == group]
    if not sel:
        return ""
    lines = []
    for r in sel:
        if ok(r):
            speedup = (1 / r["x_baseline_p50"]) if isinstance(r["x_baseline_p50"], float) else ""
            lines.append([r["op"], r["shape"], r["provider"], r["threads"], _s(r["p50_s"]),
                          f"{_s(r['p20_s'])} - {_s(r['p80_s'])}", f"{r['items_per_s']:,.0f}",
                          _ratio(speedup), _mb(r["peak_bytes"]), r.get("note", "")])
        else:
            lines.append([r["op"], r["shape"], r["provider"], r["threads"], r["status"],
                          "", "", "", "", ""])
    return "\n".join([f"### {title}", "", _table(
        ["op", "case", "provider", "threads", "p50", "p20 - p80", rate,
         f"speed-up vs {sel[0]['baseline']}", "peak MB", "note"], lines)])


def markdown_report(rows: list[dict], meta: dict) -> str:
    m = meta.get("machine", {})
    v = m.get("versions", {})
    head = [
        "## Benchmarks",
        "",
        (f"Machine: {m.get('device')} ({m.get('cpu_count')} CPUs, {m.get('threads')} torch "
         f"threads), {m.get('platform')}; load average at start {m.get('load_average')}, at end "
         f"{meta.get('load_average_end')}."),
        "Versions: " + ", ".join(f"{k} {val or 'not installed'}" for k, val in v.items()) + ".",
        (f"Command: `{meta.get('command') or 'python -m bench'}` "
         f"({meta.get('seconds', {}).get('total')} s)."),
        ("Times are p50 over interleaved rounds (p20 - p80 alongside); memory is the peak above "
         "the start of the call; workspace = peak minus the op's own gradients dH and dW."),
    ]
    sections = [
        _linear(rows, "linear_logprobs"),
        _linear(rows, "linear_grpo_loss"),
        _simple(rows, "advantages", "Group advantages", "rewards/s"),
        _simple(rows, "rewards", "Key-step matcher (StepRAR k)", "completions/s"),
        _simple(rows, "train_step", "One StepGRPO training step, tiny Qwen2-VL", "gen. tokens/s"),
    ]
    return "\n".join(head) + "\n\n" + "\n\n".join(s for s in sections if s) + "\n"
