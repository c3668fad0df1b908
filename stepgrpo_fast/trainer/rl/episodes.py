"""Episodes: completions -> StepRAR / StepRVR rewards -> group-relative advantages.

    texts [N = B*M] + the record of each row -> r_acc [N], r_val [N], k [N]
    reward = w_acc * r_acc + w_val * r_val (+ sum_k w_k r_k)        [N]
    advantages = group_advantages(reward, M, scale=...)             [N]   "sum_then_normalize"
    or  s = sum_k w_k group_advantages(r_k, M)  (k over r_acc, r_val, extras), then over the
        whole global batch A = (s - mean s) / (std s + 1e-4)               "normalize_then_sum"

Rows are prompt-major: rows i*M .. i*M+M-1 are the M completions of prompt i (one group).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch


@dataclass
class Episodes:
    """Per-completion rewards and advantages, all float32 [N]."""

    reward: torch.Tensor
    reward_accuracy: torch.Tensor
    reward_validity: torch.Tensor
    key_step_match: torch.Tensor
    answer_correct: torch.Tensor
    advantages: torch.Tensor
    num_generations: int
    extra: dict[str, torch.Tensor] | None = None  # name -> unweighted extra reward [N]

    def metrics(self) -> dict[str, float]:
        """Batch means plus the mean within-group reward std and the share of flat groups."""
        groups = self.reward.view(-1, self.num_generations)
        group_std = groups.std(dim=1, unbiased=True)
        return {
            "reward": self.reward.mean().item(),
            "reward_std": self.reward.std(unbiased=True).item() if self.reward.numel() > 1 else 0.0,
            "reward_accuracy": self.reward_accuracy.mean().item(),
            "reward_validity": self.reward_validity.mean().item(),
            "accuracy": self.answer_correct.mean().item(),
            "validity": self.reward_validity.mean().item(),
            "key_step_match": self.key_step_match.mean().item(),
            "group_reward_std": group_std.mean().item(),
            "frac_flat_groups": (group_std == 0).float().mean().item(),
            **{  # None (NaN) values left out, as TRL 1.16 logs them
                f"reward_{name}": values.nanmean().item()
                for name, values in (self.extra or {}).items()
            },
        }

    def informative_groups(self) -> torch.Tensor:
        """[B] bool: the groups with at least one non-zero advantage (a reward spread that the
        update can learn from); a flat group has every advantage exactly 0."""
        return (self.advantages.view(-1, self.num_generations) != 0).any(dim=1)

    def row(self, i: int) -> dict[str, float]:
        """Reward components of completion i (for sample logs)."""
        return {
            "reward": self.reward[i].item(),
            "reward_accuracy": self.reward_accuracy[i].item(),
            "reward_validity": self.reward_validity[i].item(),
            "key_step_match": self.key_step_match[i].item(),
            "advantage": self.advantages[i].item(),
            **{f"reward_{name}": values[i].item() for name, values in (self.extra or {}).items()},
        }


ExtraReward = tuple[str, Callable[..., Sequence[float]], float]


class RewardFunctionError(RuntimeError):
    """An extra reward function raised; the message names it and the records it scored."""


@dataclass(frozen=True)
class RewardTrainerState:
    """What a reward function gets as ``trainer_state`` (the attributes of TRL's TrainerState
    that a reward reads): optimizer steps done, the run's total, the epoch so far."""

    global_step: int
    max_steps: int
    epoch: float


def call_reward(
    name: str, fn: Callable[..., Sequence[Any]], records: Sequence[Any], n: int, **kwargs: Any
) -> torch.Tensor:
    """``fn`` on TRL's contract -> float32 [n], None -> NaN.

    kwargs: prompts, completions, completion_ids, trainer_state (and anything else); every field
    of the row's record (question, solution, key_steps, image_path, source, ...) is added as a
    list of n. A function without ``**kwargs`` gets only the arguments it names. An exception
    becomes :class:`RewardFunctionError` naming the function and the records.
    """
    first = records[0]
    names = ([f.name for f in dataclasses.fields(first)] if dataclasses.is_dataclass(first)
             else [k for k in vars(first) if not k.startswith("_")])
    columns = {name: [getattr(r, name) for r in records] for name in names}
    given = {**columns, **kwargs}
    try:
        params = inspect.signature(fn).parameters.values()
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            given = {p.name: given[p.name] for p in params if p.name in given}
    except (TypeError, ValueError):  # no signature (a builtin): pass everything
        pass
    try:
        values = list(fn(**given))
    except Exception as exc:
        sources = ", ".join(dict.fromkeys(str(getattr(r, "source", "?")) for r in records))
        where = getattr(fn, "__module__", "?") + ":" + getattr(fn, "__qualname__", name)
        state = kwargs.get("trainer_state")
        at = f" at step {state.global_step}" if state is not None else ""
        raise RewardFunctionError(
            f"extra reward {name!r} ({where}) raised{at} on the records {sources}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if len(values) != n:
        raise ValueError(f"extra reward {name!r} returned {len(values)} values for {n} completions")
    try:
        return torch.tensor([float("nan") if v is None else float(v) for v in values],
                            dtype=torch.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"extra reward {name!r} returned a value that is neither a number nor "
                         f"None ({exc})") from None


def load_reward_function(spec: str) -> Callable[..., Sequence[float]]:
    """'package.module:function' -> the callable (TRL reward contract: keyword arguments,
    ``completions`` plus dataset columns, one float per completion)."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"extra reward {spec!r}: cannot import module {module_name!r} ({exc})"
        ) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"extra reward {spec!r}: {module_name} has no callable {attr!r}")
    return fn


def load_extra_rewards(specs: Sequence[str], weights: Sequence[float]) -> list[ExtraReward]:
    if len(specs) != len(weights):
        raise ValueError(f"{len(specs)} extra reward functions but {len(weights)} weights")
    return [
        (spec.partition(":")[2], load_reward_function(spec), float(w))
        for spec, w in zip(specs, weights)
    ]


def score_completions(
    texts: Sequence[str],
    solutions: Sequence[str],
    key_steps: Sequence[Any],
    *,
    mode: str = "paper",
    alpha: float = 0.1,
) -> dict[str, torch.Tensor]:
    """StepRAR, StepRVR and key-step match of every completion -> float32 [N] tensors.

    answer_correct and key_step_match are the parts StepRAR reports
    (rewards.step_accuracy_parts), not recovered from the reward value.
    """
    from stepgrpo_fast import rewards

    n = len(texts)
    if len(solutions) != n or len(key_steps) != n:
        raise ValueError(
            f"need one solution and one key_steps per completion: {n} completions, "
            f"{len(solutions)} solutions, {len(key_steps)} key_steps"
        )
    texts = list(texts)
    parts = rewards.step_accuracy_parts(
        texts, solution=list(solutions), key_steps=list(key_steps), mode=mode, alpha=alpha
    )
    r_val = rewards.step_validity_reward(texts, mode=mode)
    return {
        "reward_accuracy": torch.tensor(parts.reward, dtype=torch.float32),
        "reward_validity": torch.tensor(r_val, dtype=torch.float32),
        "key_step_match": torch.tensor(parts.key_step_match, dtype=torch.float32),
        "answer_correct": torch.tensor(parts.answer_correct, dtype=torch.float32),
    }


def build_episodes(
    texts: Sequence[str],
    records: Sequence[Any],
    *,
    num_generations: int,
    reward_weights: Sequence[float] = (1.0, 1.0),
    mode: str = "paper",
    alpha: float = 0.1,
    advantage_scale: str = "group",
    extra_rewards: Sequence[ExtraReward] = (),
    aggregation: str = "sum_then_normalize",
    prompts: Sequence[str] | None = None,
    completion_ids: Sequence[Sequence[int]] | None = None,
    trainer_state: RewardTrainerState | None = None,
) -> Episodes:
    """Score N = B*M completions against their prompts' records and compute advantages.

    records: one per prompt (B of them; each has .solution and .key_steps) or one per row (N).
    extra_rewards: (name, fn, weight) added to the reward, on TRL's contract (:func:`call_reward`):
                   fn(prompts=, completions=, completion_ids=, trainer_state=, every record
                   field as a list of N) -> N floats or None; None is NaN: left out of the
                   reward sum (nansum), the group statistics and the logged mean, as TRL 1.16.
    prompts / completion_ids: one per prompt (B) or per row (N); passed to extra rewards.
    aggregation:   "sum_then_normalize" (advantages of the weighted sum) or "normalize_then_sum"
                   (GDPO, TRL 1.16's multi_objective_aggregation): ``advantages`` is then the
                   weighted sum of group-normalised rewards, before the batch-wide normalisation
                   (:func:`global_batch_normalize`, applied by the loop over the global batch).
                   ``reward`` is the weighted sum of the raw rewards either way (for logging).
    """
    from stepgrpo_fast.functional import group_advantages

    n = len(texts)
    if n % num_generations:
        raise ValueError(f"{n} completions is not a multiple of num_generations={num_generations}")
    if len(records) == n // num_generations:
        records = [r for r in records for _ in range(num_generations)]
    elif len(records) != n:
        raise ValueError(
            f"{len(records)} records for {n} completions (M={num_generations}): "
            "give one per prompt or one per completion"
        )
    parts = score_completions(
        texts, [r.solution for r in records], [r.key_steps for r in records], mode=mode, alpha=alpha
    )
    if aggregation not in ("sum_then_normalize", "normalize_then_sum"):
        raise ValueError(
            "multi_objective_aggregation must be 'sum_then_normalize' or 'normalize_then_sum', "
            f"got {aggregation!r}"
        )
    w_acc, w_val = (float(w) for w in reward_weights)
    reward = w_acc * parts["reward_accuracy"] + w_val * parts["reward_validity"]  # [N]
    weighted = [(w_acc, parts["reward_accuracy"]), (w_val, parts["reward_validity"])]
    extra: dict[str, torch.Tensor] = {}
    if prompts is not None and len(prompts) == n // num_generations:
        prompts = [p for p in prompts for _ in range(num_generations)]
    for name, fn, weight in extra_rewards:
        values = call_reward(
            name, fn, records, n, prompts=list(prompts) if prompts is not None else None,
            completions=list(texts), completion_ids=completion_ids, trainer_state=trainer_state,
        )
        extra[name] = values
        reward = reward + torch.nan_to_num(weight * values, nan=0.0)  # TRL's nansum
        weighted.append((weight, values))
    if aggregation == "sum_then_normalize":
        advantages = group_advantages(reward, num_generations, scale=advantage_scale).float()
    else:  # GDPO: each reward normalised within its group, then weighted and summed  [N]
        advantages = sum(
            w * group_advantages(r, num_generations, scale="group").float() for w, r in weighted
        )
    return Episodes(
        reward=reward, advantages=advantages, num_generations=num_generations, extra=extra, **parts
    )


def global_batch_advantages(
    rewards: Sequence[torch.Tensor],
    num_generations: int,
    *,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    eps: float = 1e-4,
) -> list[torch.Tensor]:
    """``advantage_scale="batch"`` over a whole global batch (TRL's scale_rewards="batch").

    rewards: this process's reward vector of each micro-batch, [N] each (groups of M consecutive
             rows never straddle two micro-batches)
    gather:  [L] -> [world * L], every process's values (accelerator.gather); None = one process
    Returns one float32 [N] per micro-batch: (r - mean of its group) / (std + eps), std the
    unbiased std of every non-NaN reward of the global batch; NaN rewards get 0.
    """
    from stepgrpo_fast.functional import group_advantages

    if not rewards:
        raise ValueError("global_batch_advantages: no micro-batches")
    local = torch.cat([r.float() for r in rewards])  # [G * N]
    everything = local if gather is None else gather(local).float().cpu()  # [world * G * N]
    valid = everything[~torch.isnan(everything)]
    std = valid.std(unbiased=True) if valid.numel() > 1 else valid.new_zeros(())
    return [
        group_advantages(r.float(), num_generations, scale="none") / (std + eps) for r in rewards
    ]


def global_batch_normalize(
    values: Sequence[torch.Tensor],
    *,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    eps: float = 1e-4,
) -> list[torch.Tensor]:
    """``(s - mean s) / (std s + eps)`` over a whole global batch (the last step of
    ``multi_objective_aggregation="normalize_then_sum"``, as TRL 1.16).

    values: this process's summed group-normalised rewards of each micro-batch, [N] each
    gather: [L] -> [world * L] (accelerator.gather); None = one process
    Returns one float32 [N] per micro-batch; mean and unbiased std over every non-NaN value of
    the global batch; NaN values get 0.
    """
    if not values:
        raise ValueError("global_batch_normalize: no micro-batches")
    local = torch.cat([v.float() for v in values])
    everything = local if gather is None else gather(local).float().cpu()
    valid = everything[~torch.isnan(everything)]
    if valid.numel() == 0:
        return [torch.zeros_like(v, dtype=torch.float32) for v in values]
    mean = valid.mean()
    std = valid.std(unbiased=True) if valid.numel() > 1 else valid.new_zeros(())
    return [torch.nan_to_num((v.float() - mean) / (std + eps), nan=0.0) for v in values]
