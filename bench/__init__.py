"""Benchmarks for stepgrpo_fast: ``python -m bench [--quick] [--groups ...]`` (see bench/runner.py).

Kineto (the torch profiler used for CPU peak memory) logs a line per profile to stderr unless its
log level is raised before it starts; the default set here keeps benchmark output readable.
"""
import os

os.environ.setdefault("KINETO_LOG_LEVEL", "99")
