"""StepGRPO rewards as TRL reward functions: values, metrics, errors, and a real GRPOTrainer run."""

from __future__ import annotations

import math

import pytest

from stepgrpo_fast import rewards
from stepgrpo_fast.integrations.trl import StepAccuracyReward, StepValidityReward, make_reward_funcs


def conversational(texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


@pytest.mark.parametrize("mode", ["paper", "official"])
@pytest.mark.parametrize("as_messages", [False, True])
def test_reward_callables_equal_reward_functions(reward_batch, mode, as_messages):
    completions, solutions, key_steps = reward_batch
    given = conversational(completions) if as_messages else completions
    accuracy, validity = make_reward_funcs(mode)
    got_acc = accuracy(
        prompts=["q"] * 5,
        completions=given,
        completion_ids=[[1]] * 5,
        solution=solutions,
        key_steps=key_steps,
        trainer_state=None,
    )
    got_val = validity(
        prompts=["q"] * 5, completions=given, solution=solutions, key_steps=key_steps
    )
    assert got_acc == rewards.step_accuracy_reward(completions, solutions, key_steps, mode=mode)
    assert got_val == rewards.step_validity_reward(completions, mode=mode)
    assert all(isinstance(x, float) for x in got_acc + got_val)
    # the batch covers correct, wrong and missing answers, valid and invalid layouts
    assert len(set(got_acc)) >= 3 and set(got_val) == {0.0, 1.0}


def test_reward_names_follow_mode():
    assert [f.__name__ for f in make_reward_funcs("paper")] == ["step_accuracy", "step_validity"]
    assert [f.__name__ for f in make_reward_funcs("official")] == [
        "step_accuracy_official",
        "step_validity_official",
    ]
    assert StepAccuracyReward(name="acc").__name__ == "acc"


def test_accuracy_logs_components_through_log_metric(reward_batch):
    completions, solutions, key_steps = reward_batch
    logged = {}
    scores = StepAccuracyReward("paper")(
        completions=completions,
        solution=solutions,
        key_steps=key_steps,
        log_metric=lambda name, value: logged.setdefault(name, value),
    )
    k = rewards.match_key_steps(completions, key_steps, mode="paper")
    assert logged["step_accuracy/key_step_fraction"] == pytest.approx(sum(k) / len(k))
    # GOOD and OUT_OF_ORDER and NO_STEPS answer "3" correctly; WRONG_ANSWER and EMPTY do not
    assert logged["step_accuracy/answer_correct"] == pytest.approx(3 / 5)
    assert scores[0] == pytest.approx(1.0 + 0.1 * k[0])


def test_accuracy_without_key_steps_column_gives_no_bonus(reward_batch):
    completions, solutions, _ = reward_batch
    got = StepAccuracyReward("official")(completions=completions, solution=solutions)
    assert got == rewards.step_accuracy_reward(completions, solutions, None, mode="official")
    assert all(x in (0.0, 1.0) for x in got)


def test_reward_errors_are_clear(reward_batch):
    completions, solutions, key_steps = reward_batch
    with pytest.raises(ValueError, match="mode"):
        StepAccuracyReward("strict")
    with pytest.raises(ValueError, match="mode"):
        StepValidityReward("strict")
    with pytest.raises(ValueError, match="alpha"):
        StepAccuracyReward(alpha=0.7)
    with pytest.raises(ValueError, match="'solution' column"):
        StepAccuracyReward()(completions=completions, key_steps=key_steps)
    with pytest.raises(ValueError, match="solution"):
        StepAccuracyReward()(completions=completions, solution=solutions[:2], key_steps=key_steps)
    with pytest.raises((TypeError, ValueError)):
        StepValidityReward()(completions=[3.5])


@pytest.mark.slow
def test_grpo_trainer_trains_with_our_rewards(text_checkpoint, samples, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    rows = [
        {
            "prompt": "What is the area of triangle ABE? Answer with a number.",
            "solution": "3",
            "key_steps": samples.KEY_STEPS,
        }
    ] * 8
    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=12,
        max_steps=2,
        beta=0.04,
        learning_rate=1e-3,
        report_to=[],
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        seed=0,
    )
    trainer = GRPOTrainer(
        model=str(text_checkpoint),
        reward_funcs=make_reward_funcs("paper"),
        args=args,
        train_dataset=Dataset.from_list(rows),
    )
    trainer.train()

    steps = [h for h in trainer.state.log_history if "loss" in h]
    assert len(steps) == 2 and trainer.state.global_step == 2
    for h in steps:
        assert math.isfinite(h["loss"])
        for key in (
            "rewards/step_accuracy/mean",
            "rewards/step_validity/mean",
            "step_accuracy/key_step_fraction",
            "step_accuracy/answer_correct",
        ):
            assert key in h and math.isfinite(h[key]), key
    # the rewards TRL recorded are our functions applied to the completions it generated
    completions = list(trainer._logs["completion"])  # the last logged step's generation batch
    n = len(completions)
    assert n == 4
    recorded = list(trainer._logs["rewards"]["step_accuracy"])
    assert recorded == pytest.approx(
        rewards.step_accuracy_reward(completions, ["3"] * n, [samples.KEY_STEPS] * n)
    )
    recorded = list(trainer._logs["rewards"]["step_validity"])
    assert recorded == pytest.approx(rewards.step_validity_reward(completions))
