"""StepGRPO end to end on the tiny model, and the episode (reward -> advantage) step.

A random tiny model never writes the response layout, so StepRAR / StepRVR are 0 for every
completion and the advantages would all be 0. The runs below add ``digit_share`` (share of digit
characters, TRL reward contract) through ``extra_reward_funcs`` so the groups have a real spread
and the update a real direction; the StepGRPO rewards are still computed and logged.
"""

import json

import pytest
import torch
from episode_samples import GOOD, WRONG, digit_share, record
from safetensors.torch import load_file

from stepgrpo_fast.trainer.rl.episodes import build_episodes, load_reward_function
from stepgrpo_fast.trainer.loop import run_stepgrpo

DIGIT_REWARD = f"{__name__}:digit_share"


def _config(tiny_rl_config, out, **overrides):
    values = dict(
        max_new_tokens=24,
        max_steps=2,
        learning_rate=1e-3,
        save_steps=1,
        save_total_limit=2,
        sample_log_steps=1,
        extra_reward_funcs=[DIGIT_REWARD],
        extra_reward_weights=[1.0],
    )
    values.update(overrides)
    return tiny_rl_config(out, **values)


@pytest.fixture(scope="module")
def rl_run(tiny_rl_config, tmp_path_factory):
    config = _config(  # freeze_vision: the tower must stay as it was (RL's default trains it)
        tiny_rl_config, tmp_path_factory.mktemp("rl"), freeze_vision=True
    )
    return config, run_stepgrpo(config)


def test_steps_change_the_policy_weights(rl_run, tiny_ckpt):
    _, summary = rl_run
    before = load_file(tiny_ckpt / "model.safetensors")
    after = load_file(f"{summary['final_model']}/model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and not any("visual" in k for k in changed)
    delta = max((after[k] - before[k]).abs().max().item() for k in changed)
    assert 1e-4 < delta < 1e-1


def test_every_metric_is_logged(rl_run):
    config, summary = rl_run
    rows = [json.loads(line) for line in open(f"{config.output_dir}/metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2]
    expected = {
        "reward",
        "reward_accuracy",
        "reward_validity",
        "reward_digit_share",
        "accuracy",
        "validity",
        "key_step_match",
        "kl",
        "clip_ratio",
        "completion_length",
        "tokens_per_s",
        "loss",
        "grad_norm",
        "learning_rate",
        "step_time",
        "frac_flat_groups",
    }
    assert expected <= set(rows[0])
    assert rows[0]["kl"] == 0.0  # policy == reference before the first update
    assert rows[1]["kl"] > 0.0  # and not after it
    assert rows[0]["ratio_mean"] == pytest.approx(1.0)  # num_iterations == 1: rho = 1
    assert rows[0]["reward"] == pytest.approx(
        rows[0]["reward_accuracy"] + rows[0]["reward_validity"] + rows[0]["reward_digit_share"],
        abs=1e-6,
    )
    assert 1 <= rows[0]["completion_length"] <= config.max_new_tokens
    assert rows[0]["grad_norm"] > 0 and rows[0]["tokens_per_s"] > 0
    samples = [json.loads(line) for line in open(f"{config.output_dir}/samples.jsonl")]
    assert len(samples) == 2 * config.num_generations and {
        "completion",
        "advantage",
        "step",
    } <= set(samples[0])
    assert summary["curve"].endswith(".png")


def test_num_iterations_reuses_rollouts_with_old_logprobs(tiny_rl_config, tmp_path):
    config = _config(
        tiny_rl_config,
        tmp_path,
        max_steps=1,
        num_iterations=2,
        learning_rate=5e-3,
        epsilon_low=0.001,
        epsilon_high=0.001,
        save_steps=0,
    )
    run_stepgrpo(config)
    row = json.loads(open(tmp_path / "metrics.jsonl").readline())
    assert row["ratio_max"] > 1.0 or row["ratio_min"] < 1.0  # second pass sees the moved policy
    assert row["clip_ratio"] > 0.0
    assert row["learning_rate"] == 5e-3


def test_gradient_accumulation_matches_a_larger_batch(tiny_rl_config, tmp_path):
    kw = dict(max_steps=1, save_steps=0, sample_log_steps=0)
    big = run_stepgrpo(
        _config(tiny_rl_config, tmp_path / "big", per_device_batch_size=4, **kw)
    )
    acc = run_stepgrpo(
        _config(
            tiny_rl_config,
            tmp_path / "acc",
            per_device_batch_size=2,
            gradient_accumulation_steps=2,
            **kw,
        )
    )
    a = load_file(f"{big['final_model']}/model.safetensors")
    b = load_file(f"{acc['final_model']}/model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 5e-5
    assert big["metrics"]["reward"] == pytest.approx(acc["metrics"]["reward"], abs=1e-6)


def test_starting_over_existing_checkpoints_needs_resume(rl_run):
    config, _ = rl_run
    with pytest.raises(ValueError, match="already holds checkpoints.*--resume"):
        run_stepgrpo(config)


# ------------------------------------------------------------------------------- episodes


BROKEN = "the answer is 5"


def test_episode_rewards_and_group_advantages():
    records = [record("5", [["2 + 3 = 5"]]), record("7", [["1 + 6 = 7"]])]
    texts = [GOOD, WRONG, BROKEN, BROKEN]  # group 1 spread, group 2 flat
    ep = build_episodes(texts, records, num_generations=2, reward_weights=(1.0, 1.0), alpha=0.1)
    assert ep.reward_accuracy.tolist() == pytest.approx([1.1, 0.1, 0.0, 0.0])
    assert ep.reward_validity.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert ep.key_step_match.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert ep.answer_correct.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert ep.reward.tolist() == pytest.approx([2.1, 1.1, 0.0, 0.0])
    std = torch.tensor([2.1, 1.1]).std().item()
    assert ep.advantages.tolist() == pytest.approx(
        [0.5 / (std + 1e-4), -0.5 / (std + 1e-4), 0.0, 0.0], rel=1e-5
    )
    m = ep.metrics()
    assert m["frac_flat_groups"] == 0.5 and m["accuracy"] == 0.25 and m["validity"] == 0.5


def test_episode_weights_and_extra_rewards():
    records = [record("5", [["2 + 3 = 5"]])]
    fn = load_reward_function(DIGIT_REWARD)
    ep = build_episodes(
        [GOOD, BROKEN],
        records,
        num_generations=2,
        reward_weights=(0.0, 2.0),
        extra_rewards=[("digit_share", fn, 0.5)],
    )
    digits = digit_share([GOOD, BROKEN])
    assert ep.reward.tolist() == pytest.approx([2.0 + 0.5 * digits[0], 0.5 * digits[1]])
    assert ep.metrics()["reward_digit_share"] == pytest.approx(sum(digits) / 2)


def test_episode_input_errors():
    with pytest.raises(ValueError, match="not a multiple of num_generations"):
        build_episodes(["a", "b", "c"], [record("1", [])], num_generations=2)
    with pytest.raises(ValueError, match="records for 4 completions"):
        build_episodes(["a"] * 4, [record("1", [])] * 3, num_generations=2)
    with pytest.raises(ValueError, match="cannot import module"):
        load_reward_function("no_such_module_xyz:fn")
    with pytest.raises(ValueError, match="no callable"):
        load_reward_function(f"{__name__}:missing_fn")


def test_qwen2_5_vl_step_and_final_eval(tiny_rl_config, tiny_ckpt_25, synthetic_data, tmp_path):
    config = _config(
        tiny_rl_config,
        tmp_path,
        model_name_or_path=str(tiny_ckpt_25),
        max_steps=1,
        save_steps=0,
        eval_data=str(synthetic_data["eval"]),
        eval_at_end=True,
        eval_limit=2,
        eval_max_new_tokens=8,
    )
    summary = run_stepgrpo(config)
    assert summary["metrics"]["grad_norm"] > 0
    assert summary["eval"]["num_examples"] == 2.0
    assert json.loads((tmp_path / "eval_results.json").read_text()) == summary["eval"]
    assert len((tmp_path / "eval_predictions.jsonl").read_text().splitlines()) == 2
