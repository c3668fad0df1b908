"""Kept for old commands: ``python -m bench.bench_grpo_loss [runner options]`` is
``python -m bench --groups linear_grpo_loss [runner options]`` (stepgrpo_fast/bench/runner.py;
results go to bench/results/<machine>-<date>-linear_grpo_loss.*). Options: --quick, --out,
--device, --rounds/--repeats, --no-plots."""
import sys

from bench import main

if __name__ == "__main__":
    sys.exit(main(["--groups", "linear_grpo_loss", *sys.argv[1:]]))
