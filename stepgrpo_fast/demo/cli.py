"""`stepgrpo demo` command line: arguments and the run that prints the held-out numbers."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .pipeline import run_demo
from .report import summary_markdown
from .seeds import run_seeds
from .settings import make_settings, split_overrides


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
