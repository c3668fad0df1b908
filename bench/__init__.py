"""``python -m bench`` in a source checkout: a thin layer over the package's benchmark harness
(stepgrpo_fast/bench/, the same runner as ``stepgrpo bench``), writing to bench/results.

Kineto (the torch profiler used for CPU peak memory) logs a line per profile to stderr unless its
log level is raised before it starts; the default set here keeps benchmark output readable.
"""
import os
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "99")

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def main(argv=None) -> int:
    """``python -m bench [options]`` (stepgrpo_fast/bench/runner.py); results in bench/results."""
    from stepgrpo_fast.bench.runner import main as run_main

    return run_main(argv, prog="python -m bench", default_out=RESULTS_DIR)
