"""Equivalent surface forms of a key step: the spellings of the same step worth matching.

Equations are tokenised and rendered again in several styles:
    spaced ASCII   "3/4 + 1/8 = 7/8", "3 * 4 = 12", "x <= 5", "3^2"
    compact ASCII  "3/4+1/8=7/8"
    LaTeX          "\\frac{3}{4} + \\frac{1}{8} = \\frac{7}{8}", "3 \\times 4 = 12", "x \\leq 5", "3^{2}"
    Unicode        "3 × 4 = 12", "x ≤ 5", "3²"
    "x" product    "3 x 4 = 12"
plus the swapped operands of a lone "+" or "*" ("4 + 3 = 7"), the mirrored comparison
("4 < 9" for "9 > 4") and, for a chain that starts with a bare name ("ABD = 12/2 = 6"), the
chain without the name ("12/2 = 6"). Facts get their small numbers as words and back
("there are 3 red shapes" <-> "there are three red shapes") and the spacing of a counted list.
The first form is always the text as written. Forms are deduplicated ignoring case (both
matcher modes lower-case) and capped at MAX_FORMS.
"""
from __future__ import annotations

import re

from .clauses import SMALL_NUMBER_WORDS

MAX_FORMS = 12

_TOKEN = re.compile(
    r"(?P<frac>\\[dt]?frac\s*\{(?P<num>[^{}]*)\}\s*\{(?P<den>[^{}]*)\})"
    r"|(?P<pow>\^\s*\{(?P<exp_b>[^{}]*)\}|\^\s*(?P<exp>-?[A-Za-z0-9]+))"
    r"|(?P<sup>[\u00b2\u00b3])"
    r"|(?P<times>\\times(?![A-Za-z])|\\cdot(?![A-Za-z])|[*\u00d7\u00b7])"
    r"|(?P<div>\\div(?![A-Za-z])|\u00f7)"
    r"|(?P<rel><=|>=|!=|\\leq?(?![A-Za-z])|\\geq?(?![A-Za-z])|\\neq?(?![A-Za-z])|[=<>\u2264\u2265\u2260])"
    r"|(?P<sign>[-+])"
    r"|(?P<slash>/)"
    r"|(?P<latex>\\[A-Za-z]+(?:\{[^{}]*\})?)"
    r"|(?P<atom>\d+(?:\.\d+)?|[A-Za-z]+\d*|[(){}\[\]|!%'\u00b0\u2220\u25b3\u221a\u03c0])"
    r"|(?P<space>\s+)"
)
_CANONICAL_REL = {"=": "=", "<": "<", ">": ">", "<=": "<=", ">=": ">=", "!=": "!=",
                  "\\le": "<=", "\\leq": "<=", "\\ge": ">=", "\\geq": ">=", "\\ne": "!=",
                  "\\neq": "!=", "\u2264": "<=", "\u2265": ">=", "\u2260": "!="}
_FLIPPED = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}
_STYLES = {
    #           times      div        rel <= >= !=                        superscripts
    "ascii": {"times": "*", "div": "/", "rel": {}, "sup": False, "frac": "slash"},
    "latex": {"times": "\\times", "div": "\\div",
              "rel": {"<=": "\\leq", ">=": "\\geq", "!=": "\\neq"}, "sup": False, "frac": "latex"},
    "unicode": {"times": "\u00d7", "div": "\u00f7",
                "rel": {"<=": "\u2264", ">=": "\u2265", "!=": "\u2260"}, "sup": True, "frac": "slash"},
    "x": {"times": "x", "div": "/", "rel": {}, "sup": False, "frac": "slash"},
}
_SUPERSCRIPTS = {"2": "\u00b2", "3": "\u00b3"}
_SIMPLE = re.compile(r"^(?:-?\d+(?:\.\d+)?|[A-Za-z]+\d*)$")
_WORD_OF = {str(i): w for i, w in enumerate(SMALL_NUMBER_WORDS)}
_DIGIT_OF = {w: str(i) for i, w in enumerate(SMALL_NUMBER_WORDS)}
_SMALL_INT = re.compile(r"(?<![\w.^/])(\d{1,2})(?![\w^/]|\.\d)")
_WORD = re.compile(r"\b(" + "|".join(SMALL_NUMBER_WORDS) + r")\b", re.IGNORECASE)
_LIST = re.compile(r"^\d+(?:\s*,\s*\d+)*\.?$")


def tokenize(expr: str) -> list[tuple[str, str]] | None:
    """(kind, value) tokens of a formula, spaces dropped, or None when a character is not
    understood. Kinds: frac ("num/den"), pow (exponent), times, div, rel (canonical ASCII),
    sign, slash, latex (verbatim command), atom."""
    tokens, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            return None
        kind = m.lastgroup
        pos = m.end()
        if kind == "space":
            continue
        if kind == "frac":
            tokens.append(("frac", f"{m.group('num').strip()}/{m.group('den').strip()}"))
        elif kind == "pow":
            tokens.append(("pow", (m.group("exp_b") if m.group("exp_b") is not None else m.group("exp")).strip()))
        elif kind == "sup":
            tokens.append(("pow", "2" if m.group() == "\u00b2" else "3"))
        elif kind == "rel":
            tokens.append(("rel", _CANONICAL_REL[m.group()]))
        elif kind in ("times", "div"):
            tokens.append((kind, ""))
        else:
            tokens.append((kind, m.group()))
    return _merge_fractions(_x_products(tokens))


def _is_number(token: tuple[str, str]) -> bool:
    return token[0] == "atom" and re.fullmatch(r"\d+(?:\.\d+)?", token[1]) is not None


def _x_products(tokens: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """"3 x 4" (a lower-case x between two numbers) is a product."""
    return [("times", "") if t == ("atom", "x") and 0 < i < len(tokens) - 1
            and _is_number(tokens[i - 1]) and _is_number(tokens[i + 1]) else t
            for i, t in enumerate(tokens)]


def _merge_fractions(tokens: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """"a / b" between simple atoms -> one frac token, unless a power or another division is
    attached to either side (3/4^2 is not (3/4)^2)."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if (t[0] == "slash" and out and i + 1 < len(tokens)
                and out[-1][0] == "atom" and _SIMPLE.match(out[-1][1])
                and tokens[i + 1][0] == "atom" and _SIMPLE.match(tokens[i + 1][1])
                and not (len(out) > 1 and out[-2][0] in ("slash", "pow", "frac", "div"))
                and not (i + 2 < len(tokens) and tokens[i + 2][0] in ("pow", "slash", "div"))):
            out[-1] = ("frac", f"{out[-1][1]}/{tokens[i + 1][1]}")
            i += 2
            continue
        out.append(t)
        i += 1
    return out


def _join(pieces: list[str]) -> str:
    """Concatenate, keeping a space between a word (or LaTeX command) and a following letter."""
    out = ""
    for p in pieces:
        if not p:
            continue
        if (re.search(r"\\[A-Za-z]+$", out) or (out[-1:].isalpha() and out[-1:].isascii())) \
                and p[0].isalpha():
            out += " "  # "\\pi r", "angle ABC": two words stay two words
        out += p
    return out


def render(tokens: list[tuple[str, str]], style: str = "ascii", *, spaced: bool = True) -> str:
    """Tokens back to text in ``style`` (ascii, latex, unicode, x), binary operators spaced or not."""
    st = _STYLES[style]
    pad = (lambda s: f" {s} ") if spaced else (lambda s: s)
    pieces = []
    for i, (kind, value) in enumerate(tokens):
        prev = tokens[i - 1][0] if i else None
        if kind == "rel":
            pieces.append(pad(st["rel"].get(value, value)))
        elif kind == "times":
            pieces.append(pad(st["times"]) if spaced or style != "x" else " x ")
        elif kind == "div":
            pieces.append(pad(st["div"]) if style in ("latex", "unicode") else st["div"])
        elif kind == "sign":
            unary = prev in (None, "rel", "sign", "times", "div", "slash") or (
                prev == "atom" and tokens[i - 1][1] in "([{")
            pieces.append(value if unary else pad(value))
        elif kind == "frac":
            num, den = value.split("/", 1)
            if st["frac"] == "latex":
                pieces.append(f"\\frac{{{num}}}{{{den}}}")
            elif _SIMPLE.match(num) and _SIMPLE.match(den):
                pieces.append(f"{num}/{den}")
            else:
                pieces.append(f"({num})/({den})")
        elif kind == "pow":
            if st["sup"] and value in _SUPERSCRIPTS:
                pieces.append(_SUPERSCRIPTS[value])
            elif style == "latex" or not _SIMPLE.match(value):
                pieces.append(f"^{{{value}}}")
            else:
                pieces.append(f"^{value}")
        else:
            pieces.append(value)
    return _join(pieces).strip()


def _sides(tokens: list[tuple[str, str]]) -> tuple[list[list[tuple[str, str]]], list[str]]:
    sides, rels, current = [], [], []
    for t in tokens:
        if t[0] == "rel":
            sides.append(current)
            rels.append(t[1])
            current = []
        else:
            current.append(t)
    sides.append(current)
    return sides, rels


def _unsides(sides: list[list[tuple[str, str]]], rels: list[str]) -> list[tuple[str, str]]:
    out = list(sides[0])
    for rel, side in zip(rels, sides[1:]):
        out += [("rel", rel), *side]
    return out


def _operands(side: list[tuple[str, str]]):
    """(left, op, right) of a side that is one "+" or product between two simple terms
    (an atom or fraction, maybe with a power), else None."""
    for i, t in enumerate(side):
        if t[0] == "times" or t == ("sign", "+"):
            left, right = side[:i], side[i + 1:]
            if all(_simple_term(x) for x in (left, right)):
                return left, t, right
            return None
    return None


def _simple_term(term: list[tuple[str, str]]) -> bool:
    kinds = [k for k, _ in term]
    return (kinds in (["atom"], ["frac"], ["atom", "pow"], ["latex"])
            and (term[0][0] != "atom" or _SIMPLE.match(term[0][1]) is not None))


def _variants(tokens: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Swapped commutative operands, the mirrored comparison, the chain without its leading name."""
    sides, rels = _sides(tokens)
    if not rels or any(not s for s in sides):
        return []
    out = []
    for i, side in enumerate(sides):
        parts = _operands(side)
        if parts is not None:
            left, op, right = parts
            out.append(_unsides(sides[:i] + [[*right, op, *left]] + sides[i + 1:], rels))
            break
    if len(rels) == 1 and rels[0] in _FLIPPED:
        out.append(_unsides([sides[1], sides[0]], [_FLIPPED[rels[0]]]))
    first = sides[0][:-1] if sides[0][-1][0] == "pow" else sides[0]
    bare_name = bool(first) and all(k == "atom" and not re.search(r"\d", v) for k, v in first)
    if len(rels) >= 2 and bare_name:  # "AC^2 = ...", "angle ABC = ...", "∠BEC = ..."
        tail = _unsides(sides[1:], rels[1:])
        out.append(tail)
        out.extend(v for v in _variants(tail)[:1])
    return out


def _dedupe(forms: list[str]) -> list[str]:
    seen, out = set(), []
    for f in forms:
        f = f.strip()
        if f and f.lower() not in seen:
            seen.add(f.lower())
            out.append(f)
    return out[:MAX_FORMS]


def equation_forms(text: str) -> list[str]:
    """Equivalent spellings of an equation / comparison, ``text`` first."""
    forms = [text, " ".join(text.split())]
    tokens = tokenize(text)
    if tokens is None:
        return _dedupe(forms)
    has_times = any(k == "times" for k, _ in tokens)
    for toks in [tokens, *_variants(tokens)]:
        forms += [render(toks, "ascii"), render(toks, "ascii", spaced=False)]
        if toks is tokens:
            forms += [render(toks, "latex"), render(toks, "unicode")]
            if has_times:
                forms.append(render(toks, "x"))
    return _dedupe(forms)


def _number_words(text: str) -> str:
    return _SMALL_INT.sub(lambda m: _WORD_OF.get(str(int(m.group(1))), m.group(1)), text)


def _digits(text: str) -> str:
    return _WORD.sub(lambda m: _DIGIT_OF[m.group(1).lower()], text)


def fact_forms(text: str) -> list[str]:
    """Equivalent spellings of a factual clause, ``text`` first: spacing, small numbers as
    words and back; a counted list "1, 2, 3." also as "1,2,3."."""
    forms = [text, " ".join(text.split())]
    if _LIST.match(text):
        items = re.findall(r"\d+", text)
        end = "." if text.endswith(".") else ""
        forms += [", ".join(items) + end, ",".join(items) + end]
        return _dedupe(forms)
    forms += [_number_words(text), _digits(text)]
    return _dedupe(forms)


def surface_forms(text: str, kind: str) -> list[str]:
    """Equivalent forms of a key step of ``kind`` "equation" or "fact", ``text`` first."""
    if kind == "equation":
        return equation_forms(text)
    if kind == "fact":
        return fact_forms(text)
    raise ValueError(f"kind must be 'equation' or 'fact', got {kind!r}")
