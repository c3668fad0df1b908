"""`stepgrpo demo`: a tiny end-to-end run (data -> tiny model -> SFT -> eval -> StepGRPO -> eval,
with the ablation variants) whose report must be well formed and agree with the predictions
files, re-scored here with the reward functions; plus the command-line surface."""
import argparse
import json
import math

import pytest
from PIL import Image

from stepgrpo_fast import demo

# A few steps of everything: checks plumbing and report consistency, not learning.
TINY = [
    "demo.n_sft=32", "demo.n_rl=16", "demo.n_eval=8", "demo.eval_max_new_tokens=24",
    "demo.eval_batch_size=4",
    "sft.max_steps=4", "sft.per_device_batch_size=8",
    "rl.max_steps=2", "rl.per_device_batch_size=2", "rl.num_generations=2", "rl.max_new_tokens=16",
    "demo.processes=1",   # in-process; test_two_processes_match_one_process launches 2
]


def _parse(argv):
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return parser.parse_args(argv)


def _tiny_kwargs(extra=()):
    groups = demo.split_overrides([*TINY, *extra])
    return {"settings": demo.make_settings(groups["demo"]), "sft_overrides": groups["sft"],
            "rl_overrides": groups["rl"], "progress": False}


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    report = demo.run_demo(out, seed=3, ablation=True, **_tiny_kwargs())
    return out, report


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_report_structure_and_ranges(tiny_demo):
    out, report = tiny_demo
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert {"sft", "stepgrpo", "delta", "config", "timings", "seed", "training", "ablation"} <= set(on_disk)
    assert on_disk["seed"] == 3
    for stage in ("sft", "stepgrpo"):
        result = on_disk[stage]
        assert result["num_examples"] == 8
        for key in ("accuracy", "validity", "key_step_match"):
            assert 0.0 <= result[key] <= 1.0, (stage, key, result[key])
        assert 0.0 <= result["reward"] <= 2.1 + 1e-6
        assert math.isclose(result["reward"], result["reward_accuracy"] + result["reward_validity"], abs_tol=1e-5)
        assert set(result["per_kind_accuracy"]) == set(on_disk["config"]["demo"]["kinds"])
    for key in demo.METRICS:
        assert math.isclose(on_disk["delta"][key], on_disk["stepgrpo"][key] - on_disk["sft"][key], abs_tol=1e-9)
    # the configured stages really ran
    assert on_disk["config"]["sft"]["max_steps"] == 4
    assert on_disk["config"]["stepgrpo"]["num_generations"] == 2
    assert [r["step"] for r in on_disk["training"]["stepgrpo_curve"]] == [1, 2]
    assert [r["step"] for r in on_disk["training"]["sft_loss"]] == [1, 2, 3, 4]
    t = on_disk["timings"]
    stages = [v for k, v in t.items() if k != "total_s"]
    assert all(v > 0 for v in stages) and t["total_s"] >= sum(stages) - 0.5


def test_report_numbers_match_rescored_predictions(tiny_demo):
    from stepgrpo_fast import rewards

    out, report = tiny_demo
    records = _rows(out / "data" / "eval.jsonl")
    for stage, path in (("sft", out / "predictions_sft.jsonl"), ("stepgrpo", out / "predictions_stepgrpo.jsonl")):
        preds = _rows(path)
        assert len(preds) == len(records) == 8
        texts = [p["completion"] for p in preds]
        r_acc = rewards.step_accuracy_reward(texts, solution=[r["solution"] for r in records],
                                             key_steps=[r["key_steps"] for r in records], alpha=0.1)
        r_val = rewards.step_validity_reward(texts)
        k = rewards.match_key_steps(texts, [r["key_steps"] for r in records])
        result = report[stage]
        assert math.isclose(result["reward"], sum(a + v for a, v in zip(r_acc, r_val)) / 8, abs_tol=1e-5)
        assert math.isclose(result["validity"], sum(r_val) / 8, abs_tol=1e-6)
        assert math.isclose(result["key_step_match"], sum(k) / 8, abs_tol=1e-6)
        correct = [float(a - 0.1 * m > 0.5) for a, m in zip(r_acc, k)]
        assert math.isclose(result["accuracy"], sum(correct) / 8, abs_tol=1e-6)
        by_kind = {}
        for rec, c in zip(records, correct):
            by_kind.setdefault(rec["kind"], []).append(c)
        assert result["per_kind_accuracy"] == pytest.approx({kd: sum(v) / len(v) for kd, v in by_kind.items()})


def test_report_files_plots_and_ablation(tiny_demo):
    out, report = tiny_demo
    for name in ("reward_curve.png", "before_after.png", "ablation.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] > 100
    md = (out / "report.md").read_text()
    assert f"| StepGRPO | {report['stepgrpo']['accuracy']:.3f} |" in md
    assert "paper Table 2" in md and "paper Table 4" in md
    table2, table4 = report["ablation"]["table2"], report["ablation"]["table4"]
    assert table2[0]["method"] == "SFT warm-up only" and len(table2) == 4 and len(table4) == 2
    assert table2[0]["reward"] == report["sft"]["reward"]
    assert table2[-1]["reward"] == report["stepgrpo"]["reward"] == table4[-1]["reward"]
    for name in ("step_rar", "step_rvr", "outcome"):
        assert (out / "ablation" / name / "final_model" / "config.json").is_file()
        assert len(_rows(out / "ablation" / name / "predictions.jsonl")) == 8
    # each variant trained with its own reward (the trainer saves the config it ran with)
    import yaml

    used = {name: yaml.safe_load((out / "ablation" / name / "config.yaml").read_text())
            for name in ("step_rar", "step_rvr", "outcome")}
    assert [used[n]["reward_weights"] for n in ("step_rar", "step_rvr", "outcome")] == [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]
    assert (used["step_rar"]["alpha"], used["outcome"]["alpha"]) == (0.1, 0.0)


def test_rerun_into_demo_dir_and_refusal_of_foreign_dir(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        demo.prepare_out_dir(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    made = demo.prepare_out_dir(tmp_path / "new")
    (made / "report.json").write_text("{}")
    (made / "extra.txt").write_text("user file")
    demo.prepare_out_dir(made)                       # a demo dir is cleared of the demo's own files only
    assert not (made / "report.json").exists() and (made / "extra.txt").exists()


def test_cli_arguments_and_errors(tmp_path, capsys):
    args = _parse(["--out", str(tmp_path / "d"), "--seed", "2", "--ablation", "--set", "rl.beta=0.0",
                   "--set", "demo.n_eval=5"])
    assert (args.seed, args.seeds, args.ablation, args.no_progress) == (2, None, True, False)
    assert demo.split_overrides(args.overrides) == {"sft": [], "rl": ["beta=0.0"], "demo": ["n_eval=5"]}
    defaults = _parse([])
    assert defaults.out == "outputs/demo" and defaults.seed is None and not defaults.ablation
    assert demo.run(_parse(["--seed", "1", "--seeds", "0,1"])) == 2
    assert "not both" in capsys.readouterr().err
    assert demo.run(_parse(["--out", str(tmp_path / "x"), "--set", "rl.no_such_option=1"])) == 2
    assert "no_such_option" in capsys.readouterr().err
    assert demo.run(_parse(["--out", str(tmp_path / "x"), "--set", "demo.max_value=12"])) == 2
    assert "max_value" in capsys.readouterr().err
    assert demo.run(_parse(["--out", str(tmp_path / "x"), "--set", "demo.sft_carry_slip=1.2"])) == 2
    assert "sft_carry_slip" in capsys.readouterr().err
    with pytest.raises(ValueError, match="STAGE.KEY=VALUE"):
        demo.split_overrides(["beta=0"])
    with pytest.raises(ValueError, match="unknown demo setting"):
        demo.make_settings(["n_evals=3"])
    with pytest.raises(TypeError, match="n_eval"):
        demo.make_settings(["n_eval=many"])
    assert demo.parse_seeds("0, 1,2") == [0, 1, 2]
    for bad in ("", "a,b", "1,1", "-1"):
        with pytest.raises(ValueError, match="--seeds"):
            demo.parse_seeds(bad)


def test_summarize_seeds_mean_std_and_spread():
    def fake(seed, sft_acc, rl_acc):
        base = {"accuracy": sft_acc, "validity": 1.0, "key_step_match": 0.5, "reward": 1.0 + sft_acc}
        after = {**base, "accuracy": rl_acc, "reward": 1.0 + rl_acc}
        return {"seed": seed, "sft": base, "stepgrpo": after, "timings": {"total_s": 100.0 + seed}}

    summary = demo.summarize_seeds([fake(0, 0.2, 0.5), fake(1, 0.3, 0.5), fake(2, 0.4, 0.8)])
    assert summary["seeds"] == [0, 1, 2]
    assert summary["sft"]["accuracy"]["mean"] == pytest.approx(0.3)
    assert summary["sft"]["accuracy"]["std"] == pytest.approx(0.1)            # sample std (n - 1)
    assert summary["delta"]["accuracy"]["values"] == pytest.approx([0.3, 0.2, 0.4])
    assert summary["beats_spread"]["accuracy"] is True                      # 0.3 > max(0.1, 0.173)
    assert summary["beats_spread"]["validity"] is False                     # no change at all
    assert "| accuracy | 0.300 +- 0.100 | 0.600 +- 0.173 |" in demo.summary_markdown(summary)


def test_two_processes_match_one_process(tiny_demo, tmp_path):
    """The default demo trains on 2 local processes (accelerate + gloo) with the same global
    batches: from the same start, the SFT weights equal the in-process run's up to float
    rounding. (StepGRPO then starts from SFT weights that differ by that rounding, which can flip
    a sampled token; 1 vs 2 processes from one start is tests/trainer/test_ddp.py.)"""
    from safetensors.torch import load_file

    one, _ = tiny_demo
    report = demo.run_demo(tmp_path / "two", seed=3, **_tiny_kwargs(["demo.processes=2"]))
    assert report["config"]["demo"]["processes"] == 2
    assert report["config"]["sft"]["per_device_batch_size"] == 8  # the global batch, as configured
    start = load_file(one / "model" / "model.safetensors")
    a = load_file(one / "sft" / "final_model" / "model.safetensors")
    b = load_file(tmp_path / "two" / "sft" / "final_model" / "model.safetensors")
    update = max((a[k] - start[k]).abs().max().item() for k in a)
    mismatch = max((a[k] - b[k]).abs().max().item() for k in a)
    assert update > 1e-3
    assert mismatch < 5e-5, f"SFT on 1 vs 2 processes differs by {mismatch:.2e}"
    # what each of the 2 processes ran: half of the global batch
    import yaml

    launched = yaml.safe_load((tmp_path / "two" / "stepgrpo.yaml").read_text())
    assert launched["per_device_batch_size"] == 1 and launched["output_dir"] == str(tmp_path / "two" / "stepgrpo")
    assert (tmp_path / "two" / "stepgrpo" / "final_model" / "model.safetensors").is_file()
    assert set(report["stepgrpo"]["per_kind_accuracy"]) == set(report["config"]["demo"]["kinds"])
    with pytest.raises(ValueError, match="not divisible by 3 processes"):
        demo.run_demo(tmp_path / "three", seed=3, **_tiny_kwargs(["demo.processes=3"]))
