"""Kept for old commands: ``python -m bench.bench_rewards [runner options]`` is
``python -m bench --groups rewards [runner options]`` (stepgrpo_fast/bench/runner.py;
results go to bench/results/<machine>-<date>-rewards.*). Options: --quick, --out,
--device, --rounds/--repeats, --no-plots."""
import sys

from bench import main

if __name__ == "__main__":
    sys.exit(main(["--groups", "rewards", *sys.argv[1:]]))
