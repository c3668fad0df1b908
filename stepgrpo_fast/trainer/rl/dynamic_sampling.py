"""DAPO's dynamic sampling: drop the groups that carry no learning signal and refill them.

A group whose M rewards are all equal gets advantage 0 on every completion: it adds nothing to
the policy gradient (only the KL term) and dilutes the token / sequence normalisers. With
``dynamic_sampling: true`` every micro-batch is collected in up to ``dynamic_sampling_max_rounds``
generation rounds of B prompts each:

    round 0:  the micro-batch's own B prompts (the data order of run.py)
    round r:  B fresh prompts, refill_slice(...) (deterministic in seed, step, r and position)
    keep the groups with a non-zero advantage (Episodes.informative_groups) until B are kept;
    after the last round a shortfall is filled with flat groups (round 0's first), so every
    micro-batch keeps B groups and every process the same number of forward / backward calls.

Logged per step: flat_group_fraction (round 0, before filtering), flat_group_fraction_kept
(in what is trained on) and dynamic_sampling_rounds (mean rounds per micro-batch).

Each process filters its own micro-batches (no communication), so which groups are kept depends
on the number of processes, unlike the rest of the trainer's sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from stepgrpo_fast.trainer.rl.episodes import Episodes
from stepgrpo_fast.trainer.rl.rollout import Rollout, derive_seed


@dataclass
class SampledMicroBatch:
    """B groups ready for the loss, and how they were found.

    records:   B records (group i = rows i*M .. i*M+M-1)
    rollout:   their B*M completions;  episodes: their rewards and advantages
    rounds:    generation rounds used;  flat_before / flat_after: share of groups without
               signal in round 0 / in the returned groups
    """

    records: list
    rollout: Rollout
    episodes: Episodes
    rounds: int
    flat_before: float
    flat_after: float


Generate = Callable[[list, list[int]], tuple[Rollout, Episodes]]


def refill_slice(
    records: Sequence[Any],
    positions: Sequence[int],
    *,
    seed: int,
    step: int,
    round_index: int,
    global_batch: int,
) -> tuple[list, list[int]]:
    """Refill prompts of round ``round_index`` (>= 1) for the slots ``positions`` of a step's
    global batch: records[perm[p]] for perm = randperm(len(records)) seeded from (seed, step,
    round), so the global batch's slots draw distinct records; the returned positions
    ``p + round * global_batch`` give the refill rows their own sampling seeds."""
    if round_index < 1:
        raise ValueError(f"round_index must be >= 1 for a refill, got {round_index}")
    n = len(records)
    if n < 1:
        raise ValueError("refill_slice: no records")
    generator = torch.Generator().manual_seed(derive_seed(seed, step, round_index, 0x5EED))
    order = torch.randperm(n, generator=generator).tolist()
    return [records[order[p % n]] for p in positions], [
        p + round_index * global_batch for p in positions
    ]


def sample_informative_groups(
    records: list,
    positions: list[int],
    *,
    generate: Generate,
    refill: Callable[[int], tuple[list, list[int]]],
    max_rounds: int,
    encode: Callable[[list], dict[str, torch.Tensor]],
    pad_token_id: int,
) -> SampledMicroBatch:
    """Collect B informative groups in at most ``max_rounds`` rounds (see the module docstring).

    generate(records, positions) -> (rollout, episodes) for those B prompts
    refill(r)                    -> (records, positions) of round r >= 1
    encode(records)              -> the repeated prompt inputs [B*M, P] of a new mix of prompts
    """
    if max_rounds < 1:
        raise ValueError(f"dynamic_sampling_max_rounds must be >= 1, got {max_rounds}")
    b = len(records)
    rounds: list[tuple[list, Rollout, Episodes]] = []
    kept: list[tuple[int, int]] = []
    flat: list[tuple[int, int]] = []
    recs, pos = records, positions
    for r in range(max_rounds):
        if r > 0:
            recs, pos = refill(r)
        rollout, episodes = generate(recs, pos)
        rounds.append((recs, rollout, episodes))
        signal = episodes.informative_groups().tolist()
        if len(signal) != b:
            raise ValueError(f"round {r} returned {len(signal)} groups, expected {b}")
        for g, ok in enumerate(signal):
            (kept if ok else flat).append((r, g))
        if len(kept) >= b:
            break
    flat_before = 1.0 - sum(rounds[0][2].informative_groups().tolist()) / b
    chosen = kept[:b] + flat[: max(0, b - len(kept))]
    flat_after = max(0, b - len(kept)) / b
    if chosen == [(0, g) for g in range(b)]:  # round 0 as it came
        recs, rollout, episodes = rounds[0]
        return SampledMicroBatch(recs, rollout, episodes, len(rounds), flat_before, flat_after)
    chosen_records = [rounds[r][0][g] for r, g in chosen]
    rollout = concat_groups(
        [(rounds[r][1], g) for r, g in chosen], encode(chosen_records), pad_token_id
    )
    episodes = concat_episode_groups([(rounds[r][2], g) for r, g in chosen])
    return SampledMicroBatch(
        chosen_records, rollout, episodes, len(rounds), flat_before, flat_after
    )


def concat_groups(
    groups: Sequence[tuple[Rollout, int]], prompt_inputs: dict[str, torch.Tensor], pad_token_id: int
) -> Rollout:
    """One Rollout of the chosen groups (group g of each rollout, in order).

    prompt_inputs: the chosen prompts encoded afresh and repeated M times ([B*M, P] rows);
    completions are right-padded with ``pad_token_id`` (mask 0) to the longest.
    """
    if not groups:
        raise ValueError("concat_groups: no groups")
    m = groups[0][0].num_generations
    rows = [(ro, range(g * m, (g + 1) * m)) for ro, g in groups]
    c = max(ro.completion_ids.shape[1] for ro, _ in rows)
    ids, masks, texts = [], [], []
    for ro, span in rows:
        if ro.num_generations != m:
            raise ValueError("concat_groups: rollouts with different num_generations")
        part_ids = ro.completion_ids[span.start : span.stop]
        part_mask = ro.completion_mask[span.start : span.stop]
        extra = c - part_ids.shape[1]
        ids.append(torch.nn.functional.pad(part_ids, (0, extra), value=pad_token_id))
        masks.append(torch.nn.functional.pad(part_mask, (0, extra), value=0))
        texts.extend(ro.texts[span.start : span.stop])
    n = len(texts)
    if prompt_inputs["input_ids"].shape[0] != n:
        raise ValueError(
            f"prompt_inputs has {prompt_inputs['input_ids'].shape[0]} rows for {n} completions"
        )
    device = prompt_inputs["input_ids"].device
    return Rollout(prompt_inputs, torch.cat(ids).to(device), torch.cat(masks).to(device), texts, m)


def concat_episode_groups(groups: Sequence[tuple[Episodes, int]]) -> Episodes:
    """One Episodes of the chosen groups (group g of each Episodes, in order); advantages are
    group-local (any batch-wide step runs later), so they are taken as they are."""
    m = groups[0][0].num_generations

    def take(get):
        return torch.cat([get(ep)[g * m : (g + 1) * m] for ep, g in groups])

    first = groups[0][0]
    extra = None
    if first.extra is not None:
        extra = {name: take(lambda ep, n=name: ep.extra[n]) for name in first.extra}
    return Episodes(
        reward=take(lambda ep: ep.reward),
        reward_accuracy=take(lambda ep: ep.reward_accuracy),
        reward_validity=take(lambda ep: ep.reward_validity),
        key_step_match=take(lambda ep: ep.key_step_match),
        answer_correct=take(lambda ep: ep.answer_correct),
        advantages=take(lambda ep: ep.advantages),
        num_generations=m,
        extra=extra,
    )
