"""scripts/gpu_validate.sh: the --dry-run plan runs on a CPU (CI), and the report renders."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stepgrpo_fast.gpu import validate

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_validate.sh"


def test_dry_run_prints_the_plan_without_a_gpu():
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True,
                          timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "15 numerics checks" in out or "numerics checks" in out
    for n, h, v in validate.SHAPES:
        assert f"N={n}" in out and f"H={h}" in out
    assert out.count(" cce") == len(validate.SHAPES)          # CCE: log-probs only
    assert "| linear_grpo_loss | H100 SXM | 8192 x 4096 x 151936 |" in out
    assert "**MISSED**" not in out


def test_plan_covers_both_ops_every_provider_and_shape():
    p = validate.plan()
    keys = {(r["op"], tuple(r["shape"]), r["provider"]) for r in p["timing_rows"]}
    for op in validate.OPS:
        for shape in validate.SHAPES:
            for prov in validate.PROVIDERS:
                assert ((op, shape, prov) in keys) == (not (prov == "cce" and
                                                           op == "linear_grpo_loss"))
    assert any("bf16" in name for name in p["numerics_checks"])


def test_report_renders_ratios_errors_and_skips():
    rows = [{"op": "linear_grpo_loss", "provider": "bare_matmuls", "N": 8, "H": 4, "V": 16,
             "error": None, "fwd_ms": 1.0, "bwd_ms": 2.0, "peak_mem_gb": 0.5},
            {"op": "linear_grpo_loss", "provider": "ours", "N": 8, "H": 4, "V": 16,
             "error": None, "fwd_ms": 3.3, "bwd_ms": 0.1, "peak_mem_gb": 0.25},
            {"op": "linear_grpo_loss", "provider": "liger", "N": 8, "H": 4, "V": 16,
             "error": "ImportError: no liger"}]
    report = {"device": "test", "rows": rows, "skipped": ["linear_logprobs N=8 naive"],
              "model": validate.plan()["model_h100"][:2],
              "numerics": {"ok": False, "summary": "1 passed, 1 failed", "failed": ["x-bf16"]},
              "determinism": [{"op": "linear_grpo_loss", "ok": True}]}
    text = validate.render_report(report)
    assert "| linear_grpo_loss | 8 | 4 | 16 | ours | 3.30 | 0.10 | 3.40 | 1.13 | 0.25 |" in text
    assert "ImportError: no liger" in text and "Skipped (time budget): 1 rows" in text
    assert "## Numerics: FAIL" in text and "- FAIL `x-bf16`" in text
