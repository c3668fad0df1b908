"""Paper-mode soft-matching normalisation in pure Python (the twin of csrc/normalise.cpp).

The normal form is a byte string of tokens in which every *word* token is enclosed by single
spaces (the separator; spaces never occur otherwise) and symbols stand bare, so a substring match
on normal forms is a whole-token match: " x = 1 " is not in " so x = 12 . ", " ad is a median "
not in " bad is a median ". Over the ASCII-lower-cased bytes, left to right:

  number     [0-9]+ with any ".ddd" decimal parts and ",ddd" thousands groups -> one word token
             ("6.5", "1,000" are single numbers; "10, 8" is 10 "," 8)
  letters    a run of ASCII letters and non-ASCII word characters -> one word token (a digit or
             symbol ends it: "5cm" is 5 cm, "x2" is x 2)
  \\left \\right \\frac \\dfrac \\tfrac, a lone backslash, ASCII whitespace, "$", Unicode spaces,
  "frac" (not after a letter) before "{"                          -> dropped (ends a word)
  \\cdot \\times, "×", "·"                                         -> the symbol "*"
  any other \\command                                             -> "\\" then the word
  "}" followed (ignoring dropped things) by "{"                   -> the symbol "/"
  any other "{" or "}"                                            -> dropped (ends a word)
  any other ASCII byte, a non-ASCII symbol                        -> that symbol
so "\\frac{12}{2} = 6", "frac{12}{2}=6" and "12/2 = 6" all give b" 12 / 2 = 6 ".
``normalise_body`` also returns the *glued* positions: where a letter run starts in the normal
form right after a number that directly precedes it in the text ("2x", not "2 x"), so that
"x = 1" is not read as stated in "2x = 1" while "x = 16" stays a statement in "15\nx = 16".

Non-ASCII: a well-formed UTF-8 sequence (lead byte C0-F7 plus its continuation bytes) is one
character. U+0085, U+00A0, U+2000-U+200B, U+2028, U+2029, U+202F, U+205F, U+3000 and U+FEFF are
spaces; U+0080-U+00BF, U+00D7, U+00F7, U+2000-U+2BFF and U+3000-U+303F (punctuation, math
operators, arrows, degree and superscript signs, CJK punctuation) are symbols; every other
character, and any byte that is not part of a well-formed sequence, is a word character.
"""
from __future__ import annotations

import re

from .parsing import to_bytes

SEP = 0x20
_DROPPED_COMMANDS = frozenset({b"left", b"right", b"frac", b"dfrac", b"tfrac"})
_TIMES_COMMANDS = frozenset({b"cdot", b"times"})
_UNICODE_SPACES = frozenset({0x85, 0xA0, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0xFEFF,
                             *range(0x2000, 0x200C)})

_TOKEN = re.compile(
    rb"(\\[a-z]*)"                                              # 1: command word / lone backslash
    rb"|((?<![a-z])frac(?=[ \t\n\r\x0b\x0c]*\{))"               # 2: bare "frac" before a brace
    rb"|([ \t\n\r\x0b\x0c$]+)"                                  # 3: dropped
    rb"|(\})"                                                   # 4
    rb"|(\{)"                                                   # 5
    rb"|([0-9]+(?:\.[0-9]+|,[0-9]{3}(?![0-9]))*)"               # 6: number
    rb"|([a-z]+)"                                               # 7: ASCII letters
    rb"|([\xc0-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf7][\x80-\xbf]{3})"  # 8
    rb"|(.)",                                                   # 9: any other byte
    re.DOTALL,
)

# character classes of a non-ASCII unit
_WORD, _SYMBOL, _SPACE, _TIMES = range(4)


def _code_point(unit: bytes) -> int:
    lead = unit[0]
    if lead < 0xE0:
        return (lead & 0x1F) << 6 | (unit[1] & 0x3F)
    if lead < 0xF0:
        return (lead & 0x0F) << 12 | (unit[1] & 0x3F) << 6 | (unit[2] & 0x3F)
    return (lead & 0x07) << 18 | (unit[1] & 0x3F) << 12 | (unit[2] & 0x3F) << 6 | (unit[3] & 0x3F)


def unit_class(cp: int) -> int:
    """Class of a non-ASCII code point (module docstring)."""
    if cp in _UNICODE_SPACES:
        return _SPACE
    if cp == 0xD7 or cp == 0xB7:
        return _TIMES
    if 0x80 <= cp <= 0xBF or cp == 0xF7 or 0x2000 <= cp <= 0x2BFF or 0x3000 <= cp <= 0x303F:
        return _SYMBOL
    return _WORD


def normalise(text: str | bytes) -> bytes:
    """Paper-mode normal form of ``text`` (bytes; see the module docstring)."""
    return _normalise(text, None)


def normalise_body(text: str | bytes) -> tuple[bytes, frozenset[int]]:
    """(normal form, glued positions) of a step body (module docstring)."""
    glued: list[int] = []
    return _normalise(text, glued), frozenset(glued)


def _normalise(text: str | bytes, glued: list[int] | None) -> bytes:
    out = bytearray()
    in_letters = False     # the last kept token is a letter run still open
    close_pending = False  # the last kept token was "}"
    number_end = -1        # text offset just after the last number token

    def open_word() -> None:
        if not out or out[-1] != SEP:
            out.append(SEP)

    def letters(m: re.Match, group: int) -> None:
        nonlocal in_letters, close_pending
        if not in_letters:
            open_word()
            in_letters = True
            if glued is not None and m.start() == number_end:
                glued.append(len(out))
        out.extend(m.group(group))
        close_pending = False

    for m in _TOKEN.finditer(to_bytes(text).lower()):
        group = m.lastindex
        if group == 7 or (group == 9 and m.group(9)[0] >= 0x80):
            letters(m, group)
            continue
        if group == 8:
            cls = unit_class(_code_point(m.group(8)))
            if cls == _WORD:
                letters(m, 8)
                continue
            symbol = b"*" if cls == _TIMES else m.group(8) if cls == _SYMBOL else None
        elif group == 1:
            word = m.group(1)[1:]
            if not word or word in _DROPPED_COMMANDS:
                symbol = None
            elif word in _TIMES_COMMANDS:
                symbol = b"*"
            else:  # "\" then the command word as a word token of its own
                if in_letters:
                    out.append(SEP)
                out += b"\\ " + word + b" "
                in_letters = close_pending = False
                continue
        elif group == 4:
            close_pending = True
            symbol = None
        elif group == 5:
            symbol = b"/" if close_pending else None
        elif group == 6:
            open_word()
            out += m.group(6)
            out.append(SEP)
            in_letters = close_pending = False
            number_end = m.end()
            continue
        elif group == 9:
            symbol = m.group(9)
        else:  # 2, 3: dropped
            symbol = None
        if in_letters:  # anything but a word character ends a letter run
            out.append(SEP)
            in_letters = False
        if symbol is not None:
            out += symbol
            close_pending = False
    if in_letters:
        out.append(SEP)
    return bytes(out)
