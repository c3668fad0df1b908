"""The ahead-of-time compile report of the "ci" tier (stepgrpo_fast.gpu.aot.run_subprocess), built
once per session and shared by test_gpu_aot.py, test_gpu_launches.py and test_gpu_kernel_table.py:
one subprocess with TRITON_INTERPRET unset (tests/conftest.py turns the interpreter on for this
process), 2 workers, Triton's on-disk cache (TRITON_CACHE_DIR if set)."""
import pytest


@pytest.fixture(scope="session")
def report(tmp_path_factory):
    from stepgrpo_fast.gpu import aot

    pytest.importorskip("triton")
    out = tmp_path_factory.mktemp("aot") / "report.json"
    return aot.run_subprocess(out, tier="ci", workers=2)
