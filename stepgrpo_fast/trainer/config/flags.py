"""Every config option as a typed command-line flag, the way TRL's and HF Trainer's CLIs take them:

    stepgrpo train --config run.yaml --learning_rate 1e-6 --num_generations 8 --use_peft
    stepgrpo train --config run.yaml --max_completion_length 512 --scale_rewards batch  # TRL names

The flags are built by transformers' ``HfArgumentParser`` from the config dataclass (field names,
annotations: int / float / str, ``X | None``, ``list[X]`` as ``nargs="+"``, bools as
``--flag [true|false]`` with ``--no_flag`` for those that default to true), so the string ->
value conversion of the command line is the standard one. Precedence, later wins:
the --config YAML < ``--KEY VALUE`` flags < ``--set KEY=VALUE``. Every value, whichever way it
came, then goes through the config's own type and range checks (config_parsing.py).

The flags carry no argparse default (``SUPPRESS``): only what the user typed reaches the config,
so the YAML's values are not overwritten by dataclass defaults. Their meanings are listed once,
in the ``--help`` epilog (config_names.options_help), not repeated per flag.
"""
from __future__ import annotations

import argparse
from typing import Any

from stepgrpo_fast.trainer.config.names import ALIASES


def _scale_rewards(text: str) -> Any:
    """TRL's scale_rewards takes group / batch / none or a boolean."""
    return {"true": True, "false": False}.get(text.lower(), text)


ALIAS_TYPES = {
    "max_completion_length": int,
    "num_train_epochs": float,
    "scale_rewards": _scale_rewards,
    "per_device_train_batch_size": int,
}


def add_option_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add ``--<option>`` (and ``--<option-with-dashes>``) for every field of the dataclass
    ``cls``, plus TRL's names for the fields ``cls`` has, to ``parser``."""
    from transformers import HfArgumentParser

    flags = HfArgumentParser(cls, add_help=False)
    for action in flags._actions:
        action.default = argparse.SUPPRESS
        action.help = argparse.SUPPRESS
    parser._add_container_actions(flags)  # what argparse's parents=[...] does
    names = cls.field_names()
    for alias, target in ALIASES.items():
        if target in names:
            parser.add_argument(f"--{alias}", type=ALIAS_TYPES[alias], default=argparse.SUPPRESS,
                                help=argparse.SUPPRESS)


def given_options(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options (and TRL aliases) the user typed as flags, by name, in field order."""
    names = [*cls.field_names(), *ALIASES]
    return {name: getattr(args, name) for name in names if hasattr(args, name)}
