"""Paper-mode soft-matching normalisation in pure Python (the twin of csrc/normalise.cpp).

Over the ASCII-lower-cased bytes, left to right:
  \\left \\right \\frac \\dfrac \\tfrac (whole command words)   -> dropped
  \\cdot \\times and UTF-8 "×", "·"                             -> "*"
  any other \\command word                                      -> kept
  a backslash not followed by a letter                          -> the backslash is dropped
  "frac" not preceded by a letter, next non-space byte "{"      -> dropped
  ASCII whitespace and "$"                                      -> dropped
  "}" followed (ignoring dropped bytes) by "{"                  -> "/"
  any other "{" or "}"                                          -> dropped
so "\\frac{12}{2} = 6", "frac{12}{2}=6" and "12/2 = 6" all give b"12/2=6".
"""
from __future__ import annotations

import re

from .parsing import to_bytes

_DROPPED_COMMANDS = frozenset({b"left", b"right", b"frac", b"dfrac", b"tfrac"})
_TIMES_COMMANDS = frozenset({b"cdot", b"times"})

_TOKEN = re.compile(
    rb"(\\[a-z]*)"                                   # 1: command word, or a lone backslash
    rb"|((?<![a-z])frac(?=[ \t\n\r\x0b\x0c]*\{))"    # 2: bare "frac" before a brace
    rb"|(\xc3\x97|\xc2\xb7)"                         # 3: Unicode times / middle dot
    rb"|([ \t\n\r\x0b\x0c$]+)"                       # 4: dropped
    rb"|(\})"                                        # 5
    rb"|(\{)"                                        # 6
    rb"|([^\\{}$ \t\n\r\x0b\x0c\xc2\xc3f]+|.)",      # 7: ordinary bytes
    re.DOTALL,
)


def normalise(text: str | bytes) -> bytes:
    """Paper-mode normal form of ``text`` (bytes; see the module docstring)."""
    out = bytearray()
    close_pending = False  # the last kept token was "}"
    for m in _TOKEN.finditer(to_bytes(text).lower()):
        group = m.lastindex
        if group == 1:
            word = m.group(1)[1:]
            if not word or word in _DROPPED_COMMANDS:
                continue
            out += b"*" if word in _TIMES_COMMANDS else m.group(1)
        elif group in (2, 4):
            continue
        elif group == 3:
            out += b"*"
        elif group == 5:
            close_pending = True
            continue
        elif group == 6:
            if close_pending:
                out += b"/"
            else:
                continue
        else:
            out += m.group(7)
        close_pending = False
    return bytes(out)
