"""bench/linear_ops.py: the GRPO-family variants time side by side with plain grpo."""
from stepgrpo_fast.bench import linear_ops


def test_every_algorithm_variant_runs_and_is_timed_against_grpo():
    lines = []
    out = linear_ops.time_algorithms(16, 8, 64, rounds=1, log=lines.append)
    assert set(out) == set(linear_ops.ALGORITHM_VARIANTS)
    assert out["grpo"]["ratio"] == 1.0 and out["grpo"]["cpu_ratio"] == 1.0
    assert all(r["p50_s"] > 0 and r["cpu_p50_s"] >= 0 for r in out.values())
    assert len(lines) == len(out) and all("of grpo" in line for line in lines)


def test_a_subset_always_includes_the_grpo_baseline():
    out = linear_ops.time_algorithms(16, 8, 64, rounds=1, variants=["cispo"], log=lambda _: None)
    assert list(out) == ["grpo", "cispo"]
