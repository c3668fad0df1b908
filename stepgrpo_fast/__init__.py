"""stepgrpo_fast: fused kernels, step-wise rewards and a thin trainer for StepGRPO (R1-VL).

Public API (see README):
    linear_logprobs, group_advantages, grpo_loss, linear_grpo_loss   -- differentiable ops
    load_image(path | bytes | PIL.Image) -> RGB PIL.Image            -- the one image loader
    rewards.step_accuracy_reward, rewards.step_validity_reward, rewards.match_key_steps

Attributes are imported lazily so that ``import stepgrpo_fast.rewards`` stays light.
"""
from __future__ import annotations

import importlib

from stepgrpo_fast import _moved

_moved.install()  # old module paths (trainer/ before its rooms, data/ before synthetic/) still import

__version__ = "0.1.0"

_LAZY = {
    "linear_logprobs": "stepgrpo_fast.functional",
    "group_advantages": "stepgrpo_fast.functional",
    "grpo_loss": "stepgrpo_fast.functional",
    "linear_grpo_loss": "stepgrpo_fast.functional",
    "load_image": "stepgrpo_fast.data.images",
}
_SUBMODULES = ("functional", "rewards", "trainer", "integrations", "data", "synthetic", "ops",
               "reference")

__all__ = [*_LAZY, *_SUBMODULES, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"stepgrpo_fast.{name}")
    else:
        raise AttributeError(f"module 'stepgrpo_fast' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
