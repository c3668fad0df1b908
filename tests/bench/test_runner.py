"""The benchmark runner end to end: ``python -m bench --quick`` (the checkout's thin layer over
stepgrpo_fast/bench) writes CSV / JSON / MD / PNGs with every group, sane numbers, ratios against
the baselines, and the fixed-workspace property of our fused ops in the scaling sweeps. Plus
``stepgrpo bench`` (the same runner, no checkout needed) and argument errors."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GROUPS = {"linear_logprobs", "linear_grpo_loss", "advantages", "rewards", "train_step"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_quick")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("TRITON_INTERPRET", None)  # the runner uses impl="auto": the torch path on a CPU
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(f"python -m bench --quick: {seconds:.1f} s")
    return out, seconds


def _files(out: Path, suffix: str) -> list[Path]:
    return sorted(out.glob(f"*-quick{suffix}"))


def _rows(out: Path) -> list[dict]:
    (json_path,) = _files(out, ".json")
    return json.loads(json_path.read_text())["rows"]


def test_writes_csv_json_markdown_and_plots(quick_run):
    out, _ = quick_run
    (csv_path,), (json_path,), (md_path,) = (_files(out, s) for s in (".csv", ".json", ".md"))
    payload = json.loads(json_path.read_text())
    with open(csv_path) as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(payload["rows"]) > 20
    assert {"provider", "op", "mode", "p20_s", "p50_s", "p80_s", "peak_bytes", "workspace_bytes",
            "device", "torch", "triton", "transformers", "trl", "liger"} <= set(csv_rows[0])
    assert payload["machine"]["versions"]["torch"] and payload["quick"] is True
    assert set(payload["seconds"]) == GROUPS | {"total"}
    pngs = sorted(p.name.rsplit("-", 1)[1] for p in out.glob("*-quick-*.png"))
    assert pngs == sorted(f"{g}.png" for g in GROUPS | {"sweeps"})
    text = md_path.read_text()
    for heading in ("### linear_logprobs", "### linear_grpo_loss", "### Group advantages",
                    "### Key-step matcher", "### One StepGRPO training step"):
        assert heading in text


def test_every_group_has_sane_positive_numbers(quick_run):
    rows = _rows(quick_run[0])
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["group"] for r in ok} == GROUPS
    for r in ok:
        assert 0 < r["p20_s"] <= r["p50_s"] <= r["p80_s"] < 600, r
        assert r["items_per_s"] > 0 and r["device"].startswith(("cpu:", "cuda:")), r
        if r["group"] in ("linear_logprobs", "linear_grpo_loss", "advantages"):
            assert r["peak_bytes"] >= r["workspace_bytes"] >= 0, r
    for r in rows:
        assert r["status"] == "ok" or r["status"].startswith(("unavailable: ", "failed: ")), r
        assert not r["status"].startswith("failed"), r
    providers = {(r["group"], r["provider"]) for r in ok}
    for group, names in {
        "linear_logprobs": ("ours", "naive", "bare_matmuls"),
        "linear_grpo_loss": ("ours", "naive", "liger", "bare_matmuls"),
        "advantages": ("ours", "plain_torch"),
        "rewards": ("python_fallback",),
        "train_step": ("ours", "trl_ours_head", "trl"),
    }.items():
        assert {(group, n) for n in names} <= providers, group
    modes = {r["mode"] for r in ok if r["group"] == "linear_logprobs" and not r["sweep"]}
    assert modes == {"fwd", "bwd", "full"}


def test_liger_logprobs_is_recorded_unavailable_on_cpu_not_faked(quick_run):
    import torch

    if torch.cuda.is_available():
        pytest.skip("Liger's fused linear CE runs on CUDA")
    liger = [r for r in _rows(quick_run[0])
             if r["group"] == "linear_logprobs" and r["provider"] == "liger"]
    assert liger and all(r["status"].startswith("unavailable: ") and r["p50_s"] == ""
                         for r in liger)


def test_ratios_are_against_the_baseline_of_the_same_case(quick_run):
    rows = [r for r in _rows(quick_run[0]) if r["status"] == "ok"]
    for r in rows:
        if r["provider"] == r["baseline"]:
            assert r["x_baseline_p50"] == 1.0, r
    ours = next(r for r in rows if r["group"] == "linear_logprobs" and r["provider"] == "ours"
                and r["mode"] == "full" and not r["sweep"])
    naive = next(r for r in rows if r["group"] == "linear_logprobs" and r["provider"] == "naive"
                 and r["mode"] == "full" and not r["sweep"])
    assert ours["x_baseline_p50"] == pytest.approx(ours["p50_s"] / naive["p50_s"], rel=1e-2)


@pytest.mark.parametrize("op", ["linear_logprobs", "linear_grpo_loss"])
@pytest.mark.parametrize("sweep", ["N", "V"])
def test_sweep_workspace_stays_within_the_ops_budget_and_grows_for_naive(quick_run, op, sweep):
    """ours never holds more than its fp32 logits budget (ops/chunking.py: the 48 MiB tiles of
    linear_logprobs, the 160 MiB row block of linear_grpo_loss) and is flat in N and V once the
    sweep fills it; naive's logits grow linearly. (The quick sweep's linear_grpo_loss shapes fit
    one 160 MiB block whole, so there ours grows with the sweep up to the budget.)"""
    from stepgrpo_fast.ops import chunking

    rows = [r for r in _rows(quick_run[0])
            if r["group"] == op and r["sweep"] == sweep and r["status"] == "ok"]

    def workspace(provider):
        pts = sorted((r[sweep], r["workspace_bytes"]) for r in rows if r["provider"] == provider)
        assert len(pts) >= 2, (provider, pts)
        return pts

    budget = {"linear_logprobs": chunking.DEFAULT_WORKSPACE_BYTES,
              "linear_grpo_loss": chunking.LOGITS_CHUNK_BYTES}[op]
    ours, naive = workspace("ours"), workspace("naive")
    grow = ours[-1][0] / ours[0][0]
    assert all(w <= 1.1 * budget for _, w in ours), (budget, ours)  # never past its budget
    if ours[0][1] >= budget / 2:                                     # the budget binds: flat
        assert ours[-1][1] <= 1.25 * ours[0][1], ours
    assert naive[-1][1] >= 0.8 * grow * naive[0][1], naive    # linear in N (or V)
    assert ours[-1][1] < naive[-1][1] / 2.5


def test_unknown_group_is_an_error():
    from stepgrpo_fast.bench.runner import main, parse_groups

    with pytest.raises(ValueError, match="unknown group.*choose from linear_logprobs"):
        parse_groups("rewards,nope")
    assert main(["--groups", "nope"]) == 2


def test_stepgrpo_bench_is_the_package_runner(tmp_path):
    """``stepgrpo bench`` parses the runner's options and runs the package's runner."""
    from stepgrpo_fast.bench import cli
    from stepgrpo_fast.bench.options import default_out_dir
    from stepgrpo_fast.cli import build_parser

    args = build_parser("bench").parse_args(["bench", "--quick", "--groups", "rewards"])
    assert args.quick and args.groups == "rewards" and args._run is cli.run
    assert default_out_dir(ROOT) == ROOT / "bench" / "results"        # a source checkout
    assert default_out_dir(tmp_path) == tmp_path / "bench_results"    # anywhere else


def test_stepgrpo_bench_runs_outside_a_checkout(tmp_path):
    """From a folder that is not a checkout (no bench/ around), with the package alone on the
    path: one quick group, its result files in ./bench_results."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", "import sys; from stepgrpo_fast.cli import main; "
                           "sys.exit(main())", "bench", "--quick", "--groups", "rewards",
                           "--no-plots"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (json_path,) = (tmp_path / "bench_results").glob("*-quick-rewards.json")
    rows = json.loads(json_path.read_text())["rows"]
    assert {r["group"] for r in rows} == {"rewards"}
    assert any(r["provider"] == "python_fallback" and r["status"] == "ok" for r in rows)
    assert "bench" not in {m.split(".")[0] for m in _imported_top_level(tmp_path, env)}


def _imported_top_level(cwd: Path, env: dict) -> list[str]:
    """Top-level module names imported by ``stepgrpo bench --help``'s parser and the runner."""
    code = ("import sys; import stepgrpo_fast.bench.runner, stepgrpo_fast.gpu.check; "
            "print('\\n'.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    return done.stdout.split()
