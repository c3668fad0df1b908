"""scripts/compare_grpo_cpu.py: loads linear_grpo_loss_chunked at a git revision and times it
beside the working tree's and the bare GEMMs (the issue #30 CPU bar's before/after table)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_compares_a_revision_with_the_working_tree():
    out = subprocess.run([sys.executable, "scripts/compare_grpo_cpu.py", "--rev", "HEAD",
                          "--n", "64", "--h", "16", "--v", "300", "--rounds", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    diffs = re.search(r"loss (\S+), dH (\S+), dW (\S+)", out.stdout).groups()
    assert all(float(d) < 1e-5 for d in diffs), out.stdout
    for name in ("revision", "working tree", "bare GEMMs", "bare, transposed"):
        assert re.search(rf"{name}\s+\d+\.\d+ s \(", out.stdout), out.stdout
