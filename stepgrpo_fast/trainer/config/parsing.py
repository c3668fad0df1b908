"""Reading option values: ``key=value`` overrides parsed as YAML, values type-checked against the
field annotations, and the range checks the configs' ``validate`` uses. Errors name the option.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

import yaml


def parse_override(item: str) -> tuple[str, Any]:
    """'key=value' -> (key, YAML-parsed value)."""
    if not isinstance(item, str) or "=" not in item:
        raise ValueError(f"override must look like key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ValueError(f"override has an empty key: {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ValueError(f"override {item!r}: value is not valid YAML ({exc})") from None
    return key, value


def coerce_value(key: str, value: Any, annotation: Any) -> Any:
    """Convert a YAML-parsed value to the field type or raise TypeError naming the key."""
    allowed = allowed_types(annotation)
    if value is None:
        if type(None) in allowed:
            return None
        raise TypeError(f"{key}: None is not allowed (expected {type_name(annotation)})")
    if str in allowed and isinstance(value, str):
        return value
    if str in allowed and not (
        int in allowed or float in allowed or bool in allowed or list in allowed
    ):
        # "run_name=123" -> "123": a string field takes any scalar spelled on the command line
        if isinstance(value, (int, float, bool)):
            return str(value)
    if bool in allowed and isinstance(value, bool):
        return value
    if int in allowed and isinstance(value, int) and not isinstance(value, bool):
        return value
    if float in allowed and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if float in allowed and isinstance(value, str):
        try:
            return float(value)  # YAML reads "1e-6" as a string
        except ValueError:
            pass
    if list in allowed and isinstance(value, list):
        return [coerce_value(f"{key}[{i}]", v, list_item(annotation)) for i, v in enumerate(value)]
    raise TypeError(
        f"{key}: expected {type_name(annotation)}, got {value!r} ({type(value).__name__})"
    )


def check_types(cfg: Any) -> None:
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        coerced = coerce_value(f.name, value, hints[f.name])
        setattr(cfg, f.name, coerced)


def allowed_types(annotation: Any) -> set[type]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        out: set[type] = set()
        for arg in typing.get_args(annotation):
            out |= allowed_types(arg)
        return out
    if origin is list:
        return {list}
    if annotation is type(None):
        return {type(None)}
    return {annotation}


def list_item(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if typing.get_origin(arg) is list:
                return list_item(arg)
    args = typing.get_args(annotation)
    return args[0] if args else Any


def type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def unknown_key_message(cls: type, key: str, known: list[str], source: str) -> str:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (
        f"{source}: unknown {cls.__name__} option {key!r}{hint} (valid: {', '.join(sorted(known))})"
    )


def choice(cfg: Any, name: str, choices: tuple[str, ...]) -> None:
    if getattr(cfg, name) not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {getattr(cfg, name)!r}")


def positive(cfg: Any, *names: str) -> None:
    for name in names:
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(cfg, name)!r}")


def non_negative(cfg: Any, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)!r}")
