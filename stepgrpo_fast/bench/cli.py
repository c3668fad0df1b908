"""``stepgrpo bench``: the benchmark runner (runner.py) behind the ``stepgrpo`` command."""
from __future__ import annotations

import argparse
import sys

from .options import add_arguments

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    from .runner import run_from_args

    return run_from_args(args, " ".join(["stepgrpo", *sys.argv[1:]]))
