"""The suite's temporary directories do not pile up (stop 33 failed CI with ENOSPC): under the
project's pytest settings a passing test's tmp_path is removed as soon as it passes, a failing
test's is kept for the post-mortem, and only the newest run's base directory survives."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

INNER = '''
def test_passes(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"0" * 1024)

def test_fails(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"0" * 1024)
    assert False, "kept for the post-mortem"
'''


def _run_inner(test_file: Path, temp_root: Path) -> None:
    env = dict(os.environ, PYTEST_DEBUG_TEMPROOT=str(temp_root))
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-c", str(ROOT / "pyproject.toml"), str(test_file)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one test fails on purpose
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout


def test_only_failing_tests_leave_their_temp_dirs_and_only_from_the_newest_run(tmp_path):
    test_file = tmp_path / "inner" / "test_inner.py"
    test_file.parent.mkdir()
    test_file.write_text(INNER)
    temp_root = tmp_path / "temproot"
    temp_root.mkdir()

    for _ in range(3):
        _run_inner(test_file, temp_root)

    (user_root,) = temp_root.iterdir()  # pytest-of-<user>
    runs = sorted(user_root.glob("pytest-[0-9]*"))
    assert len(runs) == 1, f"older runs kept: {[r.name for r in runs]}"
    left = sorted(p.parent.name for p in runs[0].rglob("weights.bin"))
    assert left == ["test_fails0"], left
