"""verl adapter: StepGRPO rewards as verl reward functions, and an opt-in replacement of verl's
fused-kernel log-prob function by :func:`stepgrpo_fast.linear_logprobs`.

Tested with verl 0.9.1 (:data:`TESTED_VERL`), in its own virtual environment
(``scripts/setup_verl_venv.sh``). Nothing here imports verl at module import time, so verl
loads this module through its own mechanisms:

* reward, per sample (verl's ``naive`` / ``dapo`` / ``rate_limited`` managers)::

    reward.custom_reward_function.path=pkg://stepgrpo_fast.integrations.verl
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.mode=paper        # or official

* reward, batched (verl's ``BatchRewardManager``, ``reward_manager=batch``)::

    ... .name=compute_score_batch   (+ reward_kwargs.num_threads=8 for the key-step matcher)

  Each row: ``reward_model.ground_truth`` = the solution string, ``extra_info.key_steps`` = the
  key-step groups (list of lists, or the released ``{"Steps": [...]}`` dict).

* log-probs: ``actor_rollout_ref.model.use_fused_kernels=True``,
  ``actor_rollout_ref.model.fused_kernel_options.impl_backend=triton``,
  ``actor_rollout_ref.model.external_lib=stepgrpo_fast.integrations.verl`` and the environment
  variable ``STEPGRPO_VERL_FUSED_LOGPROBS=1`` in every worker: importing this module with that
  variable set calls :func:`patch_verl`, which points
  ``verl.utils.kernel.linear_cross_entropy.linear_cross_entropy`` (what verl's triton backend
  calls for every model family) at :func:`linear_cross_entropy`. Or call :func:`patch_verl` yourself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

TESTED_VERL = "0.9.1"
PATCH_ENV = "STEPGRPO_VERL_FUSED_LOGPROBS"
_KERNEL_MODULE = "verl.utils.kernel.linear_cross_entropy"
_REDUCTIONS = ("none", "sum", "mean")

__all__ = [
    "TESTED_VERL",
    "compute_score",
    "compute_score_batch",
    "is_patched",
    "linear_cross_entropy",
    "patch_verl",
    "unpatch_verl",
]


# ----------------------------------------------------------------------------------------------
# Rewards
# ----------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """numpy arrays / scalars (verl's parquet + DataProto round trip) -> Python lists / scalars."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())
    return value


def _row_fields(ground_truth: Any, extra_info: Any, row: int) -> tuple[str, Any]:
    """(solution, key_steps) of one verl row."""
    extra = _plain(extra_info) if extra_info is not None else {}
    if not isinstance(extra, dict):
        raise TypeError(f"row {row}: extra_info must be a dict, got {type(extra_info).__name__}")
    truth = _plain(ground_truth)
    if isinstance(truth, dict):  # {"solution": ..., "key_steps": ...} also accepted
        if "solution" not in truth:
            raise ValueError(
                f"row {row}: ground_truth dict has no 'solution' key (keys: {sorted(truth)})"
            )
        key_steps = truth.get("key_steps", extra.get("key_steps"))
        truth = truth["solution"]
    else:
        key_steps = extra.get("key_steps")
    if truth is None:
        raise ValueError(f"row {row}: ground_truth (the solution) is missing")
    if not isinstance(truth, str):
        truth = str(truth)
    if key_steps is None:
        key_steps = []
    if not isinstance(key_steps, (list, dict)):
        raise TypeError(
            f"row {row}: extra_info['key_steps'] must be a list of groups or a {{'Steps': [...]}} dict, "
            f"got {type(key_steps).__name__}"
        )
    return truth, key_steps


def _score_rows(
    texts: list[str], solutions: list[str], key_steps: list, *, mode: str, num_threads: int
) -> list[dict]:
    from stepgrpo_fast import rewards

    if mode not in ("paper", "official"):
        raise ValueError(f"mode must be 'paper' or 'official', got {mode!r}")
    accuracy = rewards.step_accuracy_reward(texts, solutions, key_steps, mode=mode)
    validity = rewards.step_validity_reward(texts, mode=mode)
    fractions = rewards.match_key_steps(texts, key_steps, mode=mode, num_threads=num_threads)
    return [
        {
            "score": float(a) + float(v),
            "accuracy": float(a),
            "validity": float(v),
            "key_step_fraction": float(k),
        }
        for a, v, k in zip(accuracy, validity, fractions)
    ]


def compute_score(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    *,
    mode: str = "paper",
    num_threads: int = 0,
    **_verl_kwargs,
) -> dict:
    """verl's per-sample reward contract -> ``{"score": r_acc + r_val, "accuracy": r_acc,
    "validity": r_val, "key_step_fraction": k}``.

    ``ground_truth``: the solution string (or a dict with "solution" and "key_steps");
    ``extra_info["key_steps"]``: the key-step groups. Extra keywords verl adds (e.g.
    ``reward_router_address``) are accepted and ignored; ``data_source`` is not used.
    """
    if not isinstance(solution_str, str):
        raise TypeError(f"solution_str must be a str, got {type(solution_str).__name__}")
    solution, key_steps = _row_fields(ground_truth, extra_info, 0)
    return _score_rows([solution_str], [solution], [key_steps], mode=mode, num_threads=num_threads)[
        0
    ]


def compute_score_batch(
    data_sources: Sequence[Any],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[dict] | None = None,
    *,
    mode: str = "paper",
    num_threads: int = 0,
    **_verl_kwargs,
) -> list[dict]:
    """verl's ``BatchRewardManager`` contract: one dict (as :func:`compute_score`) per row.

    The whole batch goes through the reward functions at once, so the key-step matcher runs over
    all rows in one call (``num_threads`` threads; 0 = the matcher's default).
    """
    n = len(solution_strs)
    if extra_infos is None:
        extra_infos = [None] * n
    for name, column in (
        ("data_sources", data_sources),
        ("ground_truths", ground_truths),
        ("extra_infos", extra_infos),
    ):
        if len(column) != n:
            raise ValueError(f"compute_score_batch: {n} solution_strs but {len(column)} {name}")
    texts = []
    for i, text in enumerate(solution_strs):
        if not isinstance(text, str):
            raise TypeError(f"solution_strs[{i}] must be a str, got {type(text).__name__}")
        texts.append(text)
    fields = [_row_fields(ground_truths[i], extra_infos[i], i) for i in range(n)]
    return _score_rows(
        texts, [f[0] for f in fields], [f[1] for f in fields], mode=mode, num_threads=num_threads
    )


# ----------------------------------------------------------------------------------------------
# Fused-kernel log-probs
# ----------------------------------------------------------------------------------------------
def linear_cross_entropy(
    hidden,
    weight,
    labels,
    temperature: float = 1.0,
    reduction: str = "none",
    dist_process_group=None,
):
    """Drop-in for ``verl.utils.kernel.linear_cross_entropy.linear_cross_entropy``, computed by
    :func:`stepgrpo_fast.linear_logprobs` (CPU and GPU; any hidden size).

    hidden [..., H], weight [V, H], labels int [...] (same leading shape as hidden) ->
    (logprobs, entropy): ``logprobs`` fp32 [N] (N = labels.numel()) for reduction "none", else a
    scalar (sum or mean over the N tokens); ``entropy`` fp32 [N] always. Both are of the
    temperature-scaled distribution ``softmax(hidden @ weight.T / temperature)``, and both are
    differentiable w.r.t. hidden and weight. A vocabulary-parallel ``dist_process_group`` (more
    than one rank) is not supported.
    """
    from stepgrpo_fast.lm_head import head_logprobs

    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a float, got {type(temperature).__name__}")
    if not isinstance(reduction, str) or reduction.lower() not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if dist_process_group is not None:
        import torch.distributed as dist

        if dist.get_world_size(dist_process_group) > 1:
            raise ValueError(
                "stepgrpo_fast linear_cross_entropy: vocabulary-parallel dist_process_group with "
                f"{dist.get_world_size(dist_process_group)} ranks is not supported"
            )
    if hidden.dim() < 2:
        raise ValueError(f"hidden must be [..., H], got shape {tuple(hidden.shape)}")
    if tuple(labels.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(
            f"labels shape {tuple(labels.shape)} must equal hidden.shape[:-1] {tuple(hidden.shape[:-1])}"
        )
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_labels = labels.reshape(-1)
    logprobs, entropy = head_logprobs(  # the one LM-head path (stepgrpo_fast/lm_head.py)
        flat_hidden, weight, None, flat_labels, temperature=float(temperature)
    )
    reduction = reduction.lower()
    if reduction == "sum":
        logprobs = logprobs.sum()
    elif reduction == "mean":
        logprobs = logprobs.mean()
    return logprobs, entropy


def is_patched() -> bool:
    """Whether verl's fused-kernel log-prob function is currently ours."""
    module = sys.modules.get(_KERNEL_MODULE)
    return (
        module is not None and getattr(module, "linear_cross_entropy", None) is linear_cross_entropy
    )


def _verl_modules_holding(function) -> list:
    """Loaded verl modules whose global ``linear_cross_entropy`` is ``function`` (read from the
    module dict: a plain getattr would trigger lazy imports in other packages)."""
    return [
        m
        for name, m in list(sys.modules.items())
        if (name == "verl" or name.startswith("verl."))
        and m is not None
        and vars(m).get("linear_cross_entropy") is function
    ]


def patch_verl() -> None:
    """Point verl's fused-kernel log-prob function (``use_fused_kernels=True`` with
    ``impl_backend=triton``) at :func:`linear_cross_entropy`. Idempotent; undo with
    :func:`unpatch_verl`. verl's model forwards import the function at call time, so patching
    after the model is built works; modules that imported it at their own import time (verl's
    Megatron forward) are patched too when already loaded."""
    import importlib

    module = importlib.import_module(_KERNEL_MODULE)
    current = module.linear_cross_entropy
    if current is linear_cross_entropy:
        return
    module._stepgrpo_original_linear_cross_entropy = current
    for other in _verl_modules_holding(current):
        other.linear_cross_entropy = linear_cross_entropy


def unpatch_verl() -> None:
    """Restore verl's own fused-kernel log-prob function."""
    module = sys.modules.get(_KERNEL_MODULE)
    if module is None or not hasattr(module, "_stepgrpo_original_linear_cross_entropy"):
        return
    original = module._stepgrpo_original_linear_cross_entropy
    for other in _verl_modules_holding(linear_cross_entropy):
        other.linear_cross_entropy = original
    del module._stepgrpo_original_linear_cross_entropy


if os.environ.get(PATCH_ENV) == "1":  # opt-in: set by the user for verl's external_lib import
    patch_verl()
