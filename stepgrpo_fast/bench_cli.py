"""``stepgrpo bench``: run the benchmark suite of a source checkout (same as ``python -m bench``).

The suite lives in the repository's ``bench/`` folder, which is not installed into site-packages.
This shim finds it next to the installed package (an editable install from a clone) or in the
current directory, and otherwise says to run ``python -m bench`` from a clone. The options are
defined here (light: no torch) and shared with ``bench/runner.py``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

GROUP_NAMES = ("linear_logprobs", "linear_grpo_loss", "advantages", "rewards", "train_step")
NOT_A_CLONE = (
    "stepgrpo bench: the benchmark suite is the bench/ folder of a source checkout and is not "
    "installed with the package. Clone the repository, install it (pip install -e .), and run "
    "`python -m bench [--quick]` (or `stepgrpo bench`) from the clone's root."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="CI-sized smoke run (tiny shapes)")
    parser.add_argument("--groups", default=None,
                        help=f"comma-separated subset of: {','.join(GROUP_NAMES)} (default: all)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: bench/results of the checkout)")
    parser.add_argument("--device", default=None,
                        help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--rounds", "--repeats", dest="rounds", type=int, default=None,
                        help="override the number of timed rounds")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def candidate_roots() -> list[Path]:
    """Folders that may hold bench/runner.py: the clone around this package, then the cwd."""
    return [Path(__file__).resolve().parents[1], Path.cwd()]


def find_runner():
    """The checkout's ``bench.runner`` module, or None when no checkout is around."""
    for root in candidate_roots():
        if (root / "bench" / "runner.py").is_file() and (root / "bench" / "__init__.py").is_file():
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            module = importlib.import_module("bench.runner")
            if hasattr(module, "run_from_args"):
                return module
    return None


def run(args: argparse.Namespace) -> int:
    runner = find_runner()
    if runner is None:
        print(NOT_A_CLONE, file=sys.stderr)
        return 2
    return runner.run_from_args(args, " ".join(["stepgrpo", *sys.argv[1:]]))
