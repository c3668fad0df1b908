"""TRL-contract input coercion shared by the reward functions.

A completion is a string or a TRL conversational list ``[{"role": "assistant", "content": ...}]``
(the contents of all messages are joined with newlines; a content may itself be a list of parts
``{"type": "text", "text": ...}``). A solution is a string, a number (converted with ``str``) or
None. Bad input raises TypeError/ValueError naming the index.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MODES = ("paper", "official")


def check_mode(mode: Any) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be 'paper' or 'official', got {mode!r}")
    return mode


def check_num_threads(num_threads: Any) -> int:
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 0:
        raise ValueError(f"num_threads must be an int >= 0 (0 = all cores), got {num_threads!r}")
    return num_threads


def _content_text(content: Any, index: int, m: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = []
        for p, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, dict) and part.get("type", "text") != "text":
                continue  # image/video parts carry no text
            else:
                raise TypeError(f"completions[{index}] message {m} content part {p} must be a "
                                f"string or a {{'type': 'text', 'text': str}} dict, got "
                                f"{type(part).__name__}")
        return "".join(parts)
    raise TypeError(f"completions[{index}] message {m} content must be a string or a list of "
                    f"parts, got {type(content).__name__}")


def completion_text(completion: Any, index: int) -> str:
    """The text of one completion (a str, or a conversational list of message dicts)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)):
        if not completion:
            raise ValueError(f"completions[{index}] is an empty conversation (no messages)")
        texts = []
        for m, message in enumerate(completion):
            if not isinstance(message, dict) or "content" not in message:
                raise TypeError(f"completions[{index}] message {m} must be a dict with a 'content' "
                                f"key, got {type(message).__name__}")
            texts.append(_content_text(message["content"], index, m))
        return "\n".join(texts)
    raise TypeError(f"completions[{index}] must be a string or a conversational list of "
                    f"messages, got {type(completion).__name__}")


def completion_texts(completions: Any) -> list[str]:
    """list[str] (N) from a list (N) of strings or conversations."""
    if isinstance(completions, (str, bytes)) or not isinstance(completions, Sequence):
        raise TypeError(f"completions must be a list of strings or conversations, got "
                        f"{type(completions).__name__}")
    if all(type(c) is str for c in completions):
        return completions if isinstance(completions, list) else list(completions)
    return [completion_text(c, i) for i, c in enumerate(completions)]


def solution_text(solution: Any, index: int) -> str | None:
    if solution is None or isinstance(solution, str):
        return solution
    if isinstance(solution, (int, float)) and not isinstance(solution, bool):
        return str(solution)
    raise TypeError(f"solution[{index}] must be a string, a number or None, got "
                    f"{type(solution).__name__}")


def check_same_length(n: int, name: str, values: Any) -> list:
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a list with one entry per completion, got "
                        f"{type(values).__name__}")
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries but there are {n} completions "
                         f"(TRL passes one per completion)")
    return values if isinstance(values, list) else list(values)
