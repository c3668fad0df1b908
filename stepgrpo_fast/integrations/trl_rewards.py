"""StepGRPO's rewards as TRL ``GRPOTrainer`` reward functions (TRL contract: keyword arguments,
one float per completion; dataset columns ``solution`` and ``key_steps``). Needs no TRL.

    make_reward_funcs(mode="paper") -> [StepAccuracyReward, StepValidityReward]   # r = r_acc + r_val

Re-exported by :mod:`stepgrpo_fast.integrations.trl`, where the trainer lives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["StepAccuracyReward", "StepValidityReward", "make_reward_funcs"]


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if len(values) else 0.0


class StepAccuracyReward:
    """StepRAR for ``GRPOTrainer(reward_funcs=[...])``: ``r_acc`` per completion.

    Dataset columns used: ``solution`` (required) and ``key_steps`` (optional; per row a list of
    groups or the released ``{"Steps": [...]}`` dict). Completions may be strings or TRL
    conversational lists. With TRL's ``log_metric`` it also logs, per batch,
    ``<name>/key_step_fraction`` (mean k) and ``<name>/answer_correct`` (fraction with a correct
    final answer), both from ``rewards.step_accuracy_parts``.
    """

    def __init__(
        self,
        mode: str = "paper",
        *,
        alpha: float = 0.1,
        num_threads: int = 0,
        name: str | None = None,
    ):
        if mode not in ("paper", "official"):
            raise ValueError(f"mode must be 'paper' or 'official', got {mode!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha must be a number in [0, 0.5), got {alpha!r}")
        self.mode, self.alpha, self.num_threads = mode, float(alpha), int(num_threads)
        self.__name__ = name or ("step_accuracy" if mode == "paper" else "step_accuracy_official")

    def __call__(
        self, completions, solution=None, key_steps=None, log_metric: Callable | None = None, **_
    ):
        from stepgrpo_fast import rewards

        if solution is None:
            raise ValueError(
                f"{self.__name__}: the dataset needs a 'solution' column (one per prompt)"
            )
        parts = rewards.step_accuracy_parts(
            completions,
            solution,
            key_steps,
            mode=self.mode,
            alpha=self.alpha,
            num_threads=self.num_threads,
        )
        if log_metric is not None:
            log_metric(f"{self.__name__}/key_step_fraction", _mean(parts.key_step_match))
            log_metric(
                f"{self.__name__}/answer_correct",
                _mean([1.0 if ok else 0.0 for ok in parts.answer_correct]),
            )
        return [float(s) for s in parts.reward]


class StepValidityReward:
    """StepRVR for ``GRPOTrainer(reward_funcs=[...])``: 1.0 for a complete and logical response.
    TRL already logs its mean as ``rewards/<name>/mean``; nothing extra is logged."""

    def __init__(self, mode: str = "paper", *, num_threads: int = 0, name: str | None = None):
        if mode not in ("paper", "official"):
            raise ValueError(f"mode must be 'paper' or 'official', got {mode!r}")
        self.mode, self.num_threads = mode, int(num_threads)
        self.__name__ = name or ("step_validity" if mode == "paper" else "step_validity_official")

    def __call__(self, completions, **_):
        from stepgrpo_fast import rewards

        return [
            float(s)
            for s in rewards.step_validity_reward(
                completions, mode=self.mode, num_threads=self.num_threads
            )
        ]


def make_reward_funcs(mode: str = "paper", *, alpha: float = 0.1, num_threads: int = 0) -> list:
    """``[StepAccuracyReward(mode), StepValidityReward(mode)]``: the StepGRPO reward r = r_acc + r_val
    (TRL sums reward functions with weight 1 unless ``GRPOConfig.reward_weights`` says otherwise)."""
    return [
        StepAccuracyReward(mode, alpha=alpha, num_threads=num_threads),
        StepValidityReward(mode, num_threads=num_threads),
    ]
