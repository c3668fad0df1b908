"""Bounded answer checking: a complexity guard before math-verify and a deadline that works in
any thread, plus counters of how often each fired.

math-verify's own timeouts use signal.alarm, which only works on the main thread; off it they are
disabled and one answer such as ``$9^{9^{9^{8}}}$`` can run for minutes. Two layers bound it here:

- ``too_complex(text)``: a cheap scan run before parsing. It rejects text whose evaluation would
  need astronomically large integers, which no deadline can interrupt because CPython's big-int
  arithmetic runs in C without checking for pending exceptions: exponent towers (an exponent that
  itself holds "^", "**" or "!", or is followed by another "^" / "**"), integer exponents above ``MAX_EXPONENT``, factorials of integers
  above ``MAX_FACTORIAL``, and (paper mode's answer lines) texts longer than ``MAX_CHECKED_CHARS``.
  Official mode passes whole completions, as the released code does, with no length cap
  (``max_chars=None``): math-verify's extraction is linear in the text (~0.2 s for 400 KB), and the
  deadline bounds the rest.
- ``call_with_deadline(fn, seconds)``: runs ``fn()`` in the calling thread while a single watchdog
  thread waits for the deadline; if ``fn`` is still running then, the watchdog raises
  ``AnswerCheckTimeout`` (a BaseException, so math-verify's ``except Exception`` blocks do not
  swallow it) inside the calling thread with ``PyThreadState_SetAsyncExc``. The exception is
  delivered between two Python bytecodes, so Python-level work (sympy, the LaTeX parser) stops
  within the deadline plus the longest single C call -- which the guard keeps short.

A guard rejection or a timeout scores the answer as incorrect; ``answer_check_stats()`` counts
them (per completion), so reward logs can report them.
"""
from __future__ import annotations

import ctypes
import heapq
import itertools
import re
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

ANSWER_CHECK_TIMEOUT_S = 1.0
MAX_CHECKED_CHARS = 4096  # paper mode: one answer line (official mode: no cap, see above)
MAX_EXPONENT = 100_000
MAX_FACTORIAL = 20_000

# ------------------------------------------------------------------------------------- counters
_STATS_LOCK = threading.Lock()
_STATS = {"math_verify_checks": 0, "timeouts": 0, "too_complex": 0}


def count(name: str, n: int = 1) -> None:
    with _STATS_LOCK:
        _STATS[name] += n


def answer_check_stats() -> dict[str, int]:
    """Counts since start (or the last reset), per completion: ``math_verify_checks`` (answers that
    needed math-verify), ``timeouts`` (checks stopped at the deadline) and ``too_complex``
    (answers the guard rejected before parsing). Timed-out and rejected answers score incorrect."""
    with _STATS_LOCK:
        return dict(_STATS)


def reset_answer_check_stats() -> None:
    with _STATS_LOCK:
        for name in _STATS:
            _STATS[name] = 0


# ------------------------------------------------------------------------------ complexity guard
_EXPONENT_OP = re.compile(r"\^|\*\*")
_FACTORIAL_OF_INT = re.compile(r"(\d+)\s*!")
_GROUP_FACTORIAL = re.compile(r"[)}\]]\s*!")
_INNER_OPERATOR = re.compile(r"\^|\*\*|!|\\uparrow")
_PAIRS = {"{": "}", "(": ")", "[": "]"}


def _operand_end(text: str, pos: int) -> int:
    """End of the exponent operand starting at ``pos`` (after skipping blanks): a balanced
    {...}/(...)/[...] group, a \\command with its braced arguments, a run of digits, or one
    character."""
    n = len(text)
    while pos < n and text[pos] in " \t\n":
        pos += 1
    if pos >= n:
        return n
    c = text[pos]
    if c in _PAIRS:
        depth, i = 0, pos
        while i < n:
            if text[i] in _PAIRS:
                depth += 1
            elif text[i] in "})]":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return n
    if c == "\\":
        i = pos + 1
        while i < n and text[i].isalpha():
            i += 1
        while i < n and text[i] == "{":
            i = _operand_end(text, i)
        return i
    if c.isdigit() or c in "+-":
        i = pos + 1
        while i < n and text[i].isdigit():
            i += 1
        return i
    return pos + 1


def _group_start(text: str, close: int) -> int:
    """Index of the bracket opening the group that the bracket at ``close`` ends (0 if none)."""
    depth = 0
    for i in range(close, -1, -1):
        if text[i] in ")}]":
            depth += 1
        elif text[i] in "({[":
            depth -= 1
            if depth == 0:
                return i
    return 0


def too_complex(text: str, max_chars: int | None = MAX_CHECKED_CHARS) -> str | None:
    """Why ``text`` is too costly to hand to math-verify, or None when it is fine
    (``max_chars=None``: no length cap)."""
    if max_chars is not None and len(text) > max_chars:
        return f"longer than {max_chars} characters"
    if "^" in text or "**" in text:
        for m in _EXPONENT_OP.finditer(text):
            start = m.end()
            end = _operand_end(text, start)
            operand = text[start:end]
            if _INNER_OPERATOR.search(operand) or _EXPONENT_OP.match(text[end:].lstrip()):
                return "exponent tower"
            digits = operand.strip(" {}()[]+-")
            if digits.isdecimal() and (len(digits) > 6 or int(digits) > MAX_EXPONENT):
                return f"exponent above {MAX_EXPONENT}"
    if "!" in text:
        for m in _FACTORIAL_OF_INT.finditer(text):
            if len(m.group(1)) > 6 or int(m.group(1)) > MAX_FACTORIAL:
                return f"factorial above {MAX_FACTORIAL}"
        for m in _GROUP_FACTORIAL.finditer(text):
            if _INNER_OPERATOR.search(text[_group_start(text, m.start()):m.start()]):
                return "factorial of an expression holding a power or factorial"
    return None


# -------------------------------------------------------------------------------------- deadline
class AnswerCheckTimeout(BaseException):
    """Raised inside a thread whose answer check ran past its deadline (see module docstring)."""


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc


class _Watchdog:
    """One daemon thread that raises AnswerCheckTimeout in threads still armed at their deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, int] = {}  # token -> thread ident (removed when disarmed or fired)
        self._fired: set[int] = set()
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> int:
        token = next(self._tokens)
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="stepgrpo-answer-watchdog",
                                                daemon=True)
                self._thread.start()
            self._armed[token] = threading.get_ident()
            heapq.heappush(self._heap, (time.monotonic() + seconds, token))
            self._cond.notify()
        return token

    def disarm(self, token: int) -> None:
        """Forget ``token``; if it already fired, cancel the exception if it is still pending."""
        with self._cond:
            self._armed.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                _set_async_exc(ctypes.c_ulong(threading.get_ident()), None)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)  # disarmed in time
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, token = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                ident = self._armed.pop(token)
                self._fired.add(token)
                _set_async_exc(ctypes.c_ulong(ident), ctypes.py_object(AnswerCheckTimeout))


_WATCHDOG = _Watchdog()


def call_with_deadline(fn: Callable[[], T], seconds: float = ANSWER_CHECK_TIMEOUT_S
                       ) -> tuple[T | None, bool]:
    """(fn(), False), or (None, True) when fn was stopped after ``seconds``. Any thread."""
    token = _WATCHDOG.arm(seconds)
    try:
        try:
            return fn(), False
        finally:
            _WATCHDOG.disarm(token)
    except AnswerCheckTimeout:
        _WATCHDOG.disarm(token)
        return None, True
