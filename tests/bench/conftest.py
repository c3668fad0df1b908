"""The ``bench`` marker (tests/bench/test_bench_ops.py, pytest-benchmark timings): such tests are
skipped unless selected, by ``-m`` naming bench or by ``--benchmark-only``, so the project's test
command (``python -m pytest -q``) does not spend minutes timing. Selected, they also need
``TRITON_INTERPRET=0`` (tests/conftest.py turns the interpreter on by default): under the
interpreter Triton providers such as Liger would run interpreted on the CPU, which times nothing
that ``python -m bench`` times."""
import pytest

from stepgrpo_fast.utils import triton_interpret

BENCH_COMMAND = "TRITON_INTERPRET=0 python -m pytest tests/bench -m bench --benchmark-only"


def _selected(config) -> bool:
    return "bench" in (config.getoption("markexpr", "") or "") or bool(
        config.getoption("benchmark_only", False))


def pytest_collection_modifyitems(config, items):
    if not _selected(config):
        reason = f"benchmark timings: run with -m bench ({BENCH_COMMAND})"
    elif triton_interpret():
        reason = f"TRITON_INTERPRET is on: benchmarks time compiled kernels ({BENCH_COMMAND})"
    else:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if item.get_closest_marker("bench") is not None:
            item.add_marker(skip)
