"""Options of ``stepgrpo bench`` / ``python -m bench`` and the group names. Imports no torch, so
building the command-line parser stays cheap."""
from __future__ import annotations

import argparse
from pathlib import Path

GROUP_NAMES = ("linear_logprobs", "linear_grpo_loss", "advantages", "rewards", "train_step")


def default_out_dir(cwd: Path | None = None) -> Path:
    """bench/results when run from a source checkout (the folder holds bench/__init__.py),
    ./bench_results anywhere else."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    if (cwd / "bench" / "__init__.py").is_file():
        return cwd / "bench" / "results"
    return cwd / "bench_results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="CI-sized smoke run (tiny shapes)")
    parser.add_argument("--groups", default=None,
                        help=f"comma-separated subset of: {','.join(GROUP_NAMES)} (default: all)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: bench/results in a source checkout's root, "
                             "else ./bench_results)")
    parser.add_argument("--device", default=None,
                        help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--rounds", "--repeats", dest="rounds", type=int, default=None,
                        help="override the number of timed rounds")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
