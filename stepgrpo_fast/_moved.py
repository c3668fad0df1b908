"""Old module paths keep working: each name below is a thin module that reads every attribute
from the module(s) that now hold the code.

The trainer was split into rooms (trainer/config/, model/, rl/), real-data loading left it for
data/, and the synthetic task and model factories moved to synthetic/. Code written against the
old paths (README examples of earlier releases, user scripts) still imports. A name that is in
none of the new homes raises AttributeError naming them.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# old module -> the modules its names now live in, searched in order
MOVED: dict[str, tuple[str, ...]] = {
    "stepgrpo_fast.trainer.config_base": ("stepgrpo_fast.trainer.config.base",),
    "stepgrpo_fast.trainer.config_flags": ("stepgrpo_fast.trainer.config.flags",),
    "stepgrpo_fast.trainer.config_names": ("stepgrpo_fast.trainer.config.names",),
    "stepgrpo_fast.trainer.config_parsing": ("stepgrpo_fast.trainer.config.parsing",),
    "stepgrpo_fast.trainer.modeling": ("stepgrpo_fast.trainer.model.loading",),
    "stepgrpo_fast.trainer.peft": ("stepgrpo_fast.trainer.model.lora",
                                   "stepgrpo_fast.trainer.model.export"),
    "stepgrpo_fast.trainer.policy": ("stepgrpo_fast.trainer.model.objective",),
    "stepgrpo_fast.trainer.run_model": ("stepgrpo_fast.trainer.model.policy_loading",
                                        "stepgrpo_fast.trainer.model.export"),
    "stepgrpo_fast.trainer.rollout": ("stepgrpo_fast.trainer.rl.rollout",),
    "stepgrpo_fast.trainer.episodes": ("stepgrpo_fast.trainer.rl.episodes",),
    "stepgrpo_fast.trainer.dynamic_sampling": ("stepgrpo_fast.trainer.rl.dynamic_sampling",),
    "stepgrpo_fast.trainer.grpo_loop": ("stepgrpo_fast.trainer.rl.grpo_loop",),
    "stepgrpo_fast.trainer.data": ("stepgrpo_fast.data.records", "stepgrpo_fast.data.prompts"),
    "stepgrpo_fast.data.synthetic": ("stepgrpo_fast.synthetic.task",),
    "stepgrpo_fast.data.synthetic_problems": ("stepgrpo_fast.synthetic.problems",),
    "stepgrpo_fast.data.tiny_model": ("stepgrpo_fast.synthetic.tiny_model",),
    "stepgrpo_fast.data.real_shapes": ("stepgrpo_fast.synthetic.real_shapes",),
}


class _Forward(importlib.abc.Loader):
    """Executes an old path as a module whose attributes come from its new homes."""

    def __init__(self, old: str, homes: tuple[str, ...]):
        self.old, self.homes = old, homes

    def create_module(self, spec):
        return None  # the default: a fresh, empty module

    def exec_module(self, module):
        homes = [importlib.import_module(h) for h in self.homes]
        old, names = self.old, " and ".join(self.homes)

        def __getattr__(name: str):
            for home in homes:
                if hasattr(home, name):
                    return getattr(home, name)
            raise AttributeError(f"module {old!r} has no attribute {name!r}; it moved to {names}")

        module.__getattr__ = __getattr__
        module.__doc__ = f"Moved: {old} is now {names}."


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        homes = MOVED.get(fullname)
        return None if homes is None else importlib.util.spec_from_loader(
            fullname, _Forward(fullname, homes))


def install() -> None:
    """Put the finder first on sys.meta_path (once): old paths resolve before the file system."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
