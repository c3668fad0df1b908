"""DAPO dynamic sampling (trainer/rl/dynamic_sampling.py): flat groups are dropped and refilled,
at most dynamic_sampling_max_rounds rounds, and what is kept is assembled into one micro-batch.

The unit tests drive ``sample_informative_groups`` with a scripted ``generate`` (no model);
the run tests use the tiny model, where StepRAR / StepRVR alone are 0 for every completion
(every group flat) and ``digit_share`` gives the groups a spread."""

import json

import pytest
import torch

from stepgrpo_fast.trainer.config import StepGRPOConfig
from stepgrpo_fast.trainer.rl.dynamic_sampling import refill_slice, sample_informative_groups
from stepgrpo_fast.trainer.rl.episodes import Episodes
from stepgrpo_fast.trainer.loop import run_stepgrpo
from stepgrpo_fast.trainer.rl.rollout import Rollout

M = 2
PAD = 0


def _episodes(group_rewards):
    """Episodes of B groups of M = 2, rewards as given (one pair per group)."""
    from stepgrpo_fast.functional import group_advantages

    reward = torch.tensor([r for pair in group_rewards for r in pair], dtype=torch.float32)
    zeros = torch.zeros_like(reward)
    return Episodes(
        reward=reward,
        reward_accuracy=reward.clone(),
        reward_validity=zeros,
        key_step_match=zeros,
        answer_correct=zeros,
        advantages=group_advantages(reward, M).float(),
        num_generations=M,
        extra={"x": reward * 10},
    )


def _rollout(tag, length):
    """B = 2 prompts x M rows; row r's completion is [tag, r, ...] of ``length`` tokens."""
    rows = 2 * M
    ids = torch.stack([torch.full((length,), tag * 100 + r) for r in range(rows)])
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[0, -1] = 0
    prompts = {"input_ids": torch.zeros(rows, 3, dtype=torch.long)}
    return Rollout(prompts, ids, mask, [f"{tag}/{r}" for r in range(rows)], M)


def _scripted(rounds):
    """generate() that returns the scripted (rollout, episodes) of each round in turn."""
    calls = []

    def generate(records, positions):
        calls.append((list(records), list(positions)))
        tag, rewards = rounds[len(calls) - 1]
        return _rollout(tag, 3 + len(calls)), _episodes(rewards)

    return generate, calls


def _encode(records):  # repeated prompt inputs [B*M, P]: each row carries its record's id
    ids = torch.tensor([[r, r] for r in records for _ in range(M)])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _refill(r):
    return [10 * r, 10 * r + 1], [100 * r, 100 * r + 1]


def _sample(generate, *, max_rounds, encode=_encode):
    """sample_informative_groups on records [0, 1] (prompts 0, 1), refilled by _refill."""
    return sample_informative_groups([0, 1], [0, 1], generate=generate, refill=_refill,
                                     max_rounds=max_rounds, encode=encode, pad_token_id=PAD)


def test_flat_groups_are_dropped_and_refilled():
    # round 0: group 0 flat, group 1 spread; round 1: group 0 spread
    generate, calls = _scripted([(1, [(1.0, 1.0), (0.0, 1.0)]), (2, [(2.0, 0.5), (3.0, 3.0)])])
    got = _sample(generate, max_rounds=4)
    assert len(calls) == 2 and calls[1] == ([10, 11], [100, 101])  # stopped once B were kept
    assert (got.rounds, got.flat_before, got.flat_after) == (2, 0.5, 0.0)
    assert got.records == [1, 10]  # round 0's group 1, then round 1's group 0
    assert got.rollout.texts == ["1/2", "1/3", "2/0", "2/1"]
    assert got.rollout.prompt_inputs["input_ids"][:, 0].tolist() == [1, 1, 10, 10]
    # completions padded to the longest (round 1: 5 tokens) with PAD, mask 0
    assert got.rollout.completion_ids.shape == (4, 5)
    assert got.rollout.completion_ids[0].tolist() == [102] * 4 + [PAD]
    assert got.rollout.completion_mask[:2, -1].tolist() == [0, 0]
    assert got.rollout.completion_mask[2].tolist() == [0 + 1] * 4 + [0]  # round 1 row 0: 4 of 5
    assert got.episodes.reward.tolist() == [0.0, 1.0, 2.0, 0.5]
    assert got.episodes.extra["x"].tolist() == [0.0, 10.0, 20.0, 5.0]
    assert bool(got.episodes.informative_groups().all())
    assert got.episodes.advantages.tolist() == pytest.approx(
        _episodes([(0.0, 1.0), (2.0, 0.5)]).advantages.tolist()
    )


def test_stops_at_max_rounds_and_fills_with_flat_groups():
    flat = [(1.0, 1.0), (0.0, 0.0)]
    generate, calls = _scripted([(t, flat) for t in range(1, 6)])
    got = _sample(generate, max_rounds=3)
    assert len(calls) == 3 and got.rounds == 3
    assert (got.flat_before, got.flat_after) == (1.0, 1.0)
    assert got.records == [0, 1]  # round 0's own groups, as they came
    assert got.rollout.texts == [f"1/{r}" for r in range(4)]


def test_round_zero_with_signal_is_kept_untouched():
    generate, calls = _scripted([(1, [(0.0, 1.0), (1.0, 0.0)])])
    encoded = []
    got = _sample(generate, max_rounds=3, encode=lambda recs: encoded.append(recs))
    assert len(calls) == 1 and not encoded and got.rounds == 1 and got.flat_before == 0.0
    assert got.rollout.completion_ids.shape == (4, 4)


def test_refill_slice_is_deterministic_and_distinct():
    records = list(range(20))
    a = refill_slice(records, [0, 1, 2, 3], seed=0, step=5, round_index=1, global_batch=4)
    b = refill_slice(records, [0, 1, 2, 3], seed=0, step=5, round_index=1, global_batch=4)
    c = refill_slice(records, [0, 1, 2, 3], seed=0, step=5, round_index=2, global_batch=4)
    assert a == b and a[0] != c[0]
    assert len(set(a[0])) == 4 and a[1] == [4, 5, 6, 7] and c[1] == [8, 9, 10, 11]
    with pytest.raises(ValueError, match="round_index"):
        refill_slice(records, [0], seed=0, step=0, round_index=0, global_batch=1)


# ------------------------------------------------------------------------------- runs


def digit_share(completions, **kwargs):
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) for text in completions]


def digit_share_for_some(completions, solution, **kwargs):
    """Spread only for the records whose solution is 'A', 'B' or '2' (3 of the 8): the other
    groups are flat, so rounds > 1 refill them."""
    shares = digit_share(completions)
    return [s if sol in ("A", "B", "2") else 0.0 for s, sol in zip(shares, solution)]


def _run(tiny_rl_config, out, **overrides):
    """One dynamic-sampling step of the tiny RL config (conftest) -> its metrics row."""
    values = dict(
        learning_rate=1e-3,
        freeze_vision=StepGRPOConfig.freeze_vision,
        max_pixels=StepGRPOConfig.max_pixels,
        dynamic_sampling=True,
        dynamic_sampling_max_rounds=2,
    )
    values.update(overrides)
    run_stepgrpo(tiny_rl_config(out, **values))
    return json.loads(open(f"{out}/metrics.jsonl").readline())


def test_run_with_only_flat_groups_uses_every_round(tiny_rl_config, tmp_path):
    row = _run(tiny_rl_config, tmp_path)  # StepRAR + StepRVR: 0 for the tiny model
    assert row["dynamic_sampling_rounds"] == 2.0
    assert row["flat_group_fraction"] == 1.0 and row["flat_group_fraction_kept"] == 1.0


def test_run_with_spread_logs_the_filter(tiny_rl_config, tmp_path):
    row = _run(
        tiny_rl_config,
        tmp_path,
        extra_reward_funcs=[f"{__name__}:digit_share"],
        extra_reward_weights=[1.0],
        gradient_accumulation_steps=2,
    )
    assert row["dynamic_sampling_rounds"] >= 1.0
    assert row["flat_group_fraction_kept"] <= row["flat_group_fraction"]
    assert row["frac_flat_groups"] == row["flat_group_fraction_kept"]  # what was trained on
    assert row["grad_norm"] > 0


def test_run_refills_flat_groups_with_fresh_prompts(tiny_rl_config, tmp_path):
    row = _run(
        tiny_rl_config,
        tmp_path,
        extra_reward_funcs=[f"{__name__}:digit_share_for_some"],
        extra_reward_weights=[1.0],
        dynamic_sampling_max_rounds=4,
    )
    assert row["dynamic_sampling_rounds"] > 1.0
    assert row["flat_group_fraction"] > row["flat_group_fraction_kept"]
    assert row["frac_flat_groups"] == row["flat_group_fraction_kept"]
    assert row["grad_norm"] > 0
