"""One benchmark runner for every group, on the current device.

    stepgrpo bench [--quick] [--groups linear_logprobs,rewards] [--out DIR]
                   [--device cpu|cuda] [--rounds R] [--no-plots]
    python -m bench [same options]          (in a source checkout: the same runner)

Groups (group_*.py): linear_logprobs, linear_grpo_loss (main case in fwd/bwd/full and the
N and V scaling sweeps), advantages, rewards (the key-step matcher), train_step (one StepGRPO
optimizer step, our trainer vs TRL). On CUDA the same code runs the Triton kernels (impl="auto"),
times with CUDA events and measures torch.cuda.max_memory_allocated; shapes grow to GPU size.

Writes <out>/<machine>-<date>[-quick][-<groups>].{csv,json,md} and one PNG per group (+ one for
the sweeps). Rows: see rows.py. Ratios are against each group's baseline provider
(BASELINES), on the same case and mode.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import torch

from . import group_advantages, group_linear, group_rewards, group_train_step, linear_ops
from .machine import machine_info, machine_slug, versions, write_results
from .options import GROUP_NAMES as GROUPS
from .options import add_arguments, default_out_dir
from .rows import COLUMNS, add_ratios

BASELINES = {
    "linear_logprobs": linear_ops.BASELINE,
    "linear_grpo_loss": linear_ops.BASELINE,
    "advantages": group_advantages.BASELINE,
    "rewards": group_rewards.BASELINE,
    "train_step": group_train_step.BASELINE,
}


def settings(quick: bool, device: str, rounds: int | None = None) -> dict:
    """Shapes and repeat counts per group: quick (CI smoke, any device), CPU full, CUDA full."""
    cuda = device.startswith("cuda")
    if quick:
        s = {
            "linear": group_linear.LinearSettings(
                main=(512, 32, 2048), modes=("fwd", "bwd", "full"),
                # big enough that the logits (N*V*4 bytes > 56 MB) outgrow our fixed workspace
                sweep_n=(2048, 4096), sweep_v=(16384, 32768), sweep_h=16,
                sweep_v_fixed=8192, sweep_n_fixed=1024, rounds=1),
            "advantages": {"sizes": (4096,), "rounds": 2},
            "rewards": {"problems": 32, "rounds": 2},
            "train_step": group_train_step.TrainSettings(
                prompts=2, generations=2, max_new_tokens=12, steps=1, rounds=1, memory=True),
        }
    elif cuda:
        s = {
            "linear": group_linear.LinearSettings(
                main=(4096, 4096, 151_936), modes=("fwd", "bwd", "full"),
                sweep_n=(512, 1024, 2048, 4096, 8192), sweep_v=(32_768, 65_536, 131_072, 262_144),
                sweep_h=2048, sweep_v_fixed=131_072, sweep_n_fixed=4096, rounds=10,
                dtype=torch.bfloat16),
            "advantages": {"sizes": (4096, 65536, 1_048_576), "rounds": 20},
            "rewards": {"problems": 1024, "rounds": 7},
            "train_step": group_train_step.TrainSettings(
                prompts=2, generations=4, max_new_tokens=64, steps=3, rounds=2, memory=True),
        }
    else:
        s = {
            "linear": group_linear.LinearSettings(
                main=(1024, 256, 32_768), modes=("fwd", "bwd", "full"),
                sweep_n=(512, 1024, 2048, 4096, 8192), sweep_v=(32_768, 65_536, 131_072, 262_144),
                sweep_h=128, sweep_v_fixed=32_768, sweep_n_fixed=1024, rounds=3),
            "advantages": {"sizes": (4096, 65536, 1_048_576), "rounds": 7},
            "rewards": {"problems": 1024, "rounds": 7},
            "train_step": group_train_step.TrainSettings(
                prompts=2, generations=4, max_new_tokens=64, steps=3, rounds=2, memory=True),
        }
    if rounds is not None:
        if rounds < 1:
            raise ValueError(f"--rounds must be >= 1, got {rounds}")
        lin = s["linear"]
        s["linear"] = group_linear.LinearSettings(**{**lin.__dict__, "rounds": rounds})
        s["advantages"]["rounds"] = s["rewards"]["rounds"] = rounds
        ts = s["train_step"]
        s["train_step"] = group_train_step.TrainSettings(**{**ts.__dict__, "rounds": rounds})
    return s


def run_one(group: str, s: dict, device: str, log) -> list[dict]:
    if group in ("linear_logprobs", "linear_grpo_loss"):
        return group_linear.run_group(group, s["linear"], device, log)
    if group == "advantages":
        return group_advantages.run_group(s["advantages"]["sizes"], s["advantages"]["rounds"],
                                          device, log)
    if group == "rewards":
        return group_rewards.run_group(s["rewards"]["problems"], s["rewards"]["rounds"], log)
    if group == "train_step":
        return group_train_step.run_group(s["train_step"], device, log)
    raise ValueError(f"unknown group {group!r}; choose from {', '.join(GROUPS)}")


def parse_groups(text: str | None) -> list[str]:
    if not text:
        return list(GROUPS)
    groups = [g.strip() for g in text.split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise ValueError(f"unknown group(s) {unknown or text!r}; choose from {', '.join(GROUPS)}")
    return groups


def output_prefix(out_dir: Path, device: str, quick: bool, groups: list[str]) -> Path:
    name = f"{machine_slug(device)}-{datetime.date.today().isoformat()}"
    if quick:
        name += "-quick"
    if list(groups) != list(GROUPS):
        name += "-" + "+".join(groups)
    return Path(out_dir) / name


def run(groups: list[str], *, quick: bool = False, out_dir: Path | None = None,
        device: str | None = None, rounds: int | None = None, plots: bool = True,
        command: str | None = None, log=print) -> dict:
    """Run ``groups``; write CSV/JSON/MD (+ PNGs) under ``out_dir`` (default: default_out_dir()).
    Returns {"rows", "paths", "seconds"}."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "99")  # the CPU memory profiler's per-run log line
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available here")
    s = settings(quick, device, rounds)
    info = machine_info(device)
    log(f"bench: device {info['device']}, {info['threads']} torch threads, "
        f"load average {info.get('load_average')}, versions {versions()}")
    rows, seconds = [], {}
    t_all = time.perf_counter()
    for group in groups:
        log(f"== {group}")
        t0 = time.perf_counter()
        group_rows = run_one(group, s, device, log)
        seconds[group] = round(time.perf_counter() - t0, 1)
        log(f"   {group}: {len(group_rows)} rows in {seconds[group]} s")
        rows += group_rows
    stamp = {"device": info["device"], **versions()}
    for r in rows:
        r.update({k: v for k, v in stamp.items() if k in COLUMNS})
    add_ratios(rows, BASELINES)
    prefix = output_prefix(out_dir or default_out_dir(), device, quick, groups)
    meta = {
        "machine": info,
        "command": command,
        "quick": quick,
        "groups": groups,
        "seconds": {**seconds, "total": round(time.perf_counter() - t_all, 1)},
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "settings": {k: (v.__dict__ if hasattr(v, "__dict__") else v) for k, v in s.items()},
    }
    csv_path, json_path = write_results(rows, prefix, columns=COLUMNS, meta=meta)
    paths = {"csv": csv_path, "json": json_path}
    from .report import markdown_report

    md_path = prefix.with_name(prefix.name + ".md")
    md_path.write_text(markdown_report(rows, meta))
    paths["md"] = md_path
    if plots:
        from .plots import plot_all

        paths["png"] = plot_all(rows, prefix)
    log(f"wrote {csv_path}, {json_path}, {md_path}"
        + (f" and {len(paths.get('png', []))} PNG(s)" if plots else ""))
    return {"rows": rows, "paths": paths, "seconds": meta["seconds"]}


def build_parser(prog: str = "python -m bench") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_arguments(p)
    return p


def main(argv: list[str] | None = None, *, prog: str = "python -m bench",
         default_out: Path | None = None) -> int:
    """Parse ``argv`` and run; ``default_out`` replaces default_out_dir() when --out is not given."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(prog).parse_args(argv)
    return run_from_args(args, " ".join([prog, *argv]), default_out)


def run_from_args(args: argparse.Namespace, command: str | None = None,
                  default_out: Path | None = None) -> int:
    try:
        groups = parse_groups(args.groups)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run(groups, quick=args.quick, out_dir=args.out or default_out, device=args.device,
        rounds=args.rounds, plots=not args.no_plots, command=command)
    return 0
