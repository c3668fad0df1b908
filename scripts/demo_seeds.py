"""Run `stepgrpo demo` for several seeds and print mean +- std of SFT vs StepGRPO.

    python scripts/demo_seeds.py [--out DIR] [--seeds 0,1,2] [--jobs 3] [--ablation] [--set STAGE.KEY=VALUE ...]

Each seed runs the full demo (stepgrpo_fast.demo.run_demo) into DIR/seed_S; with --jobs > 1 the
seeds run in parallel processes (one torch thread each). DIR/summary.json and DIR/summary.md hold
the table; the wall time of each seed is its own report's total (inflated when seeds share cores).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from stepgrpo_fast import demo


def _one_seed(out: str, seed: int, ablation: bool, overrides: list[str], progress: bool) -> dict:
    groups = demo.split_overrides(overrides)
    return demo.run_demo(Path(out) / f"seed_{seed}", seed=seed, ablation=ablation,
                         settings=demo.make_settings(groups["demo"]), sft_overrides=groups["sft"],
                         rl_overrides=groups["rl"], progress=progress)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/demo_seeds")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes")
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        seeds = demo.parse_seeds(args.seeds)
        groups = demo.split_overrides(args.overrides)          # fail early on a bad override
        demo.make_settings(groups["demo"])
        demo.load_stage_configs(groups["sft"], groups["rl"])
        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
        out = demo.prepare_out_dir(args.out)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    jobs = [(str(out), s, args.ablation, args.overrides, args.jobs == 1) for s in seeds]
    if args.jobs == 1:
        reports = [_one_seed(*job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            reports = list(pool.map(_one_seed, *zip(*jobs)))
    summary = demo.summarize_seeds(reports)
    summary["elapsed_s"] = round(time.perf_counter() - t0, 1)
    summary["command"] = " ".join(["python", "scripts/demo_seeds.py", *(argv if argv is not None else sys.argv[1:])])
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = demo.summary_markdown(summary) + f"\nElapsed: {summary['elapsed_s']} s with --jobs {args.jobs}\n"
    (out / "summary.md").write_text(text)
    print(text)
    for r in reports:
        print(f"seed {r['seed']}: SFT acc {r['sft']['accuracy']:.3f} reward {r['sft']['reward']:.3f} -> "
              f"StepGRPO acc {r['stepgrpo']['accuracy']:.3f} reward {r['stepgrpo']['reward']:.3f} "
              f"({r['timings']['total_s']:.0f} s)  per kind {r['stepgrpo']['per_kind_accuracy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
