"""`stepgrpo kernel-table` (stepgrpo_fast.gpu.kernel_table): the markdown table of the AOT report
(conftest.py's ``report``) names every kernel on every architecture, one row per bf16 tile, and
``--from-json --full`` one row per binary."""
from __future__ import annotations

import json
import subprocess
import sys

from stepgrpo_fast.gpu.kernel_table import render


def test_kernel_table_renders_every_kernel_and_arch(report, tmp_path):
    text = render(report)
    for kernel in {r["kernel"] for r in report["results"]}:
        for arch in (80, 90):
            assert f"::{kernel}` on sm_{arch}" in text
    assert "| dtype | tiles w(arps) s(tages) | binaries | REG |" in text
    assert "| tensor cores | atomics | fenced atomics | fits |" in text
    bf16_tiles = {(r["kernel"], r["arch"], r["config"]) for r in report["results"]
                  if r["dtype"] == "bf16"}
    assert text.count("\n| bf16 |") == len(bf16_tiles)               # one row per tile
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    done = subprocess.run([sys.executable, "-m", "stepgrpo_fast.cli", "kernel-table", "--from-json",
                           str(path), "--full"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| dtype | tiles w(arps) s(tages) | flags | REG |" in done.stdout
    assert done.stdout.count("\n| ") > len(report["results"])       # one row per binary + heads
    assert "Performance model at the GRPO shape" in done.stdout
    assert "| linear_grpo_loss | H100 SXM | 8192 x 4096 x 151936 |" in done.stdout


def test_strict_fails_a_tensor_core_kernel_with_atomics(report, tmp_path):
    """--strict exits 1 when a tensor-core kernel's PTX has an atomic (a doctored report)."""
    import copy

    bad = copy.deepcopy(report)
    row = next(r for r in bad["results"] if r["kernel"] == "_fwd_kernel")
    row["atomics"], row["fenced_atomics"] = 4, 4
    for name, rep, want in (("ok.json", report, 0), ("bad.json", bad, 1)):
        path = tmp_path / name
        path.write_text(json.dumps(rep))
        done = subprocess.run([sys.executable, "-m", "stepgrpo_fast.cli", "kernel-table",
                               "--from-json", str(path), "--strict"], capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == want, done.stdout[-2000:] + done.stderr[-2000:]
    assert "4 atomic instruction(s) in a tensor-core kernel (4 fenced)" in done.stdout
