"""Config option names: TRL's spellings accepted as aliases, and the per-option help listing.

    resolve_aliases(values, num_generations_default, source) -> values with our names
    options_help(cls) -> text for ``stepgrpo sft|train --help``: every option, its type, default, help

TRL users write TRL's names; they map onto ours (the YAML files we ship use ours):

    max_completion_length        -> max_new_tokens
    num_train_epochs             -> num_epochs
    scale_rewards                -> advantage_scale ("group" / "batch" / "none"; true = "group",
                                    false = "none", as TRL 1.16)
    per_device_train_batch_size  -> per_device_batch_size = value / num_generations: TRL counts
                                    COMPLETIONS per device and micro-step, we count PROMPTS
                                    (each brings num_generations completions); must divide

Giving an alias and its target together is an error, as is an alias the config kind lacks.
Imports nothing heavy (the CLI builds --help from it).
"""
from __future__ import annotations

import dataclasses
import textwrap
import typing
from typing import Any

ALIASES = {
    "max_completion_length": "max_new_tokens",
    "num_train_epochs": "num_epochs",
    "scale_rewards": "advantage_scale",
    "per_device_train_batch_size": "per_device_batch_size",
}
_SCALE_REWARDS = {True: "group", False: "none", "group": "group", "batch": "batch", "none": "none"}


def resolve_aliases(values: dict[str, Any], fields: list[str], num_generations_default: int | None,
                    source: str) -> dict[str, Any]:
    """A copy of ``values`` with TRL's names replaced by ours (see the module doc).

    fields: the config class's field names; num_generations_default: its default
    num_generations (None for SFT: per_device_train_batch_size then means examples, as ours).
    """
    out = dict(values)
    for alias, target in ALIASES.items():
        if alias not in out:
            continue
        if target not in fields:
            raise ValueError(f"{source}: {alias} (TRL's name for {target}) is not an option here")
        if target in out:
            raise ValueError(f"{source}: set {alias} (TRL's name) or {target}, not both")
        value = out.pop(alias)
        if alias == "scale_rewards":
            key = value.lower() if isinstance(value, str) else value
            if key not in _SCALE_REWARDS:
                raise ValueError(f"{source}: scale_rewards must be group, batch, none, true or false, "
                                 f"got {value!r}")
            value = _SCALE_REWARDS[key]
        elif alias == "per_device_train_batch_size" and num_generations_default is not None:
            m = out.get("num_generations", num_generations_default)
            if isinstance(value, bool) or not isinstance(value, int) or not isinstance(m, int) or m < 1 \
                    or value < 1 or value % m:
                raise ValueError(
                    f"{source}: per_device_train_batch_size={value!r} counts completions (TRL's meaning) and "
                    f"must be a positive multiple of num_generations={m!r}; or set per_device_batch_size, "
                    "which counts prompts")
            value = value // m
        out[target] = value
    return out


def _type_text(annotation: Any) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))
    return str(text).replace("typing.", "")


def options_help(cls: type) -> str:
    """One entry per option of the dataclass ``cls``: ``name (type, default X)`` then its help
    (from the field's metadata; the first class in the MRO that documents it)."""
    hints = typing.get_type_hints(cls)
    aliases = ", ".join(f"{a} -> {t}" for a, t in ALIASES.items())
    lines = ["options (keys of the --config YAML, --KEY VALUE flags or --set KEY=VALUE; later wins:",
             "  YAML < --KEY < --set):",
             textwrap.fill(f"TRL's names are accepted too: {aliases}", width=100,
                           initial_indent="  ", subsequent_indent="  ")]
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        text = f.metadata.get("help", "")
        for base in cls.__mro__[1:]:
            if text or not dataclasses.is_dataclass(base):
                break
            text = next((g.metadata.get("help", "") for g in dataclasses.fields(base) if g.name == f.name), "")
        lines.append(f"  {f.name} ({_type_text(hints.get(f.name, f.type))}, default {default!r})")
        if text:
            lines.append(textwrap.fill(text, width=100, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return "\n".join(lines)
