"""Kept for old commands: ``python -m bench.bench_linear_logprobs [runner options]`` is
``python -m bench --groups linear_logprobs [runner options]`` (stepgrpo_fast/bench/runner.py;
results go to bench/results/<machine>-<date>-linear_logprobs.*). Options: --quick, --out,
--device, --rounds/--repeats, --no-plots."""
import sys

from bench import main

if __name__ == "__main__":
    sys.exit(main(["--groups", "linear_logprobs", *sys.argv[1:]]))
