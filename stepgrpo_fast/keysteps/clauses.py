"""Candidate key steps of a reasoning: its step sections cut into clauses, each clause giving
equation spans ("12/2 = 6", "AC^2 = 3^2 + 4^2 = 25", "x = 70") or, failing that, one short
factual clause with a number or a named object ("AD is a median", "there are 3 red shapes").

    reasoning ("###" layout)
      -> step bodies  (rewards.parsing.segment, "### Step N:" sections, as the matcher sees them)
      -> sentences    (cut at ". " / "! " / "? ", ";" and newlines)
      -> clauses      (cut at ": " and at connectives: ", so", "thus", "therefore", ", and" ...)
      -> Candidate    (text is a verbatim substring of the reasoning)

Everything here is plain ``str`` processing; nothing imports torch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from stepgrpo_fast.rewards.parsing import KIND_STEP, segment

MAX_CHARS = 60  # longest key step kept (characters)

SMALL_NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
)

# One token of a formula. Names are 1-4 capital letters (A, AD, ABC, P1) or one lower-case
# letter (x), never the start of a longer word ("Bar", "is"); a geometric object word directly
# before a name belongs to the formula ("angle ABC = 40°").
_OBJECT_WORDS = r"(?:angle|triangle|arc|line|segment|side|area|perimeter|length|radius|point)s?"
_MATH_TOKEN = re.compile(
    r"(?P<object>(?<![A-Za-z])" + _OBJECT_WORDS + r"[ \t]+(?=[A-Z]{1,4}\d*(?![A-Za-z])))"
    r"|(?P<latex>\\[A-Za-z]+)"
    r"|(?P<number>\d+(?:\.\d+)?)"
    r"|(?P<name>(?<![A-Za-z])(?:[A-Z]{1,4}\d*|[a-z]\d*)(?![A-Za-z]))"
    r"|(?P<rel><=|>=|!=|[=<>\u2264\u2265\u2260\u2248])"
    r"|(?P<op>[-+*/^\u00d7\u00b7\u00f7\u00b2\u00b3\u00b0%!|'\u2220\u25b3\u221a\u03c0])"
    r"|(?P<bracket>[(){}\[\]])"
    r"|(?P<space>[ \t]+)"
)
_LATEX_RELATIONS = frozenset({"\\le", "\\leq", "\\ge", "\\geq", "\\neq", "\\ne", "\\approx", "\\lt",
                              "\\gt", "\\equiv", "\\sim"})
_LATEX_WORDS = frozenset({"\\text", "\\textbf", "\\mathrm", "\\quad", "\\qquad"})

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s*;\s*|\n+")
_CLAUSE_CUT = re.compile(
    r":\s+"
    r"|,?\s+(?:so|thus|therefore|hence|which gives|which means|giving|and so)\b,?\s*"
    r"|,\s+(?:and|then|but)\s+",
    re.IGNORECASE,
)
_LEADING_CONNECTIVES = re.compile(
    r"^(?:(?:so|thus|therefore|hence|then|now|first(?:ly)?|second(?:ly)?|next|finally|and|also|"
    r"since|because|as|if|given that|we (?:get|have|know that|see that|find that|obtain|can see that)|"
    r"it follows that|this (?:means|gives)(?: that)?|which (?:means|gives)|note that|recall that|"
    r"similarly|in total|overall)\b[,:]?\s*)+",
    re.IGNORECASE,
)
_BOILERPLATE = re.compile(
    r"\banswers?\b|^(?:let'?s|let us|we (?:need|want|have|are asked) to|to (?:find|solve|get)\b|"
    r"the (?:question|problem)\b|i think\b|step \d+\b)",
    re.IGNORECASE,
)
_NUMBER_WORD = re.compile(r"\b(?:" + "|".join(SMALL_NUMBER_WORDS) + r")\b", re.IGNORECASE)
_COPULA = re.compile(r"^[A-Z]\s+(?:is|are|was|has|have|lies|equals|and|or|=|>|<)\b")
_NAME = re.compile(r"(?<![A-Za-z'])[A-Z]{2,4}\d*(?![A-Za-z])|(?<![A-Za-z'])[A-HJ-Z](?![A-Za-z'])")
_LIST = re.compile(r"^\d+(?:\s*,\s*\d+)*\.$")
_TRAILING = ".,;:!?"


@dataclass(frozen=True)
class Candidate:
    """One key-step candidate: ``text`` (verbatim substring of the reasoning), ``kind``
    ("equation" or "fact"), ``score`` (informativeness, higher first) and ``position`` (its
    offset in the reasoning, ties broken by it)."""

    text: str
    kind: str
    score: float
    position: int


def step_bodies(reasoning: str) -> list[tuple[int, str]]:
    """(offset, body) of every "### Step N:" section of ``reasoning`` (str offsets)."""
    raw = reasoning.encode("utf-8", "surrogatepass")
    out = []
    for s in segment(raw):
        if s.kind == KIND_STEP:
            start = len(raw[:s.body_begin].decode("utf-8", "surrogatepass"))
            out.append((start, raw[s.body_begin:s.body_end].decode("utf-8", "surrogatepass")))
    return out


def _pieces(text: str, pattern: re.Pattern, offset: int) -> list[tuple[int, str]]:
    """``text`` cut at ``pattern`` -> (absolute offset, piece) for each non-blank piece."""
    out, start = [], 0
    for m in pattern.finditer(text):
        out.append((start, text[start:m.start()]))
        start = m.end()
    out.append((start, text[start:]))
    return [(offset + s, p) for s, p in out if p.strip()]


def split_clauses(text: str, offset: int = 0) -> list[tuple[int, str]]:
    """(offset + position, clause) of ``text`` cut into sentences, then clauses."""
    out = []
    for s_off, sentence in _pieces(text, _SENTENCE_END, offset):
        out.extend(_pieces(sentence, _CLAUSE_CUT, s_off))
    return out


def clauses(reasoning: str) -> list[tuple[int, str]]:
    """(offset, clause) of the step sections' clauses, verbatim, in reading order."""
    return [c for offset, body in step_bodies(reasoning) for c in split_clauses(body, offset)]


def _strip_clause(offset: int, clause: str) -> tuple[int, str]:
    """Leading connectives ("So", "Therefore,", "We get") and surrounding blanks removed."""
    lead = len(clause) - len(clause.lstrip())
    clause = clause.strip()
    m = _LEADING_CONNECTIVES.match(clause)
    if m and m.end() < len(clause):
        lead += m.end()
        clause = clause[m.end():]
    return offset + lead, clause


def _is_relation(kind: str, value: str) -> bool:
    return kind == "rel" or (kind == "latex" and value in _LATEX_RELATIONS)


def _math_runs(clause: str) -> list[tuple[int, int, list[tuple[str, str]]]]:
    """Maximal runs of formula tokens in ``clause``: (start, end, [(kind, text)])."""
    runs, tokens, start, pos = [], [], 0, 0
    while pos <= len(clause):
        m = _MATH_TOKEN.match(clause, pos) if pos < len(clause) else None
        if m is None or (m.lastgroup == "latex" and m.group() in _LATEX_WORDS):
            if tokens:
                runs.append((start, pos, tokens))
            tokens = []
            pos += 1
            start = pos
            continue
        if not tokens:
            start = pos
        tokens.append((m.lastgroup, m.group()))
        pos = m.end()
    return runs


def _balanced(text: str) -> bool:
    depth = {"(": 0, "{": 0, "[": 0}
    closing = {")": "(", "}": "{", "]": "["}
    for ch in text:
        if ch in depth:
            depth[ch] += 1
        elif ch in closing:
            depth[closing[ch]] -= 1
            if depth[closing[ch]] < 0:
                return False
    return not any(depth.values())


def _trim_run(clause: str, start: int, end: int, tokens: list[tuple[str, str]]) -> tuple[int, str] | None:
    """The run without leading / trailing blanks, operators and relations; None unless it is a
    relation with a term on each side and balanced brackets."""
    while tokens and ((tokens[0][0] == "op" and tokens[0][1] not in "-|\u2220\u25b3\u221a\u03c0")
                      or tokens[0][0] in ("space", "rel") or tokens[0][1] in (")", "}", "]")
                      or _is_relation(*tokens[0])):
        start += len(tokens[0][1])
        tokens = tokens[1:]
    while tokens and (tokens[-1][0] in ("space", "rel") or
                      (tokens[-1][0] == "op" and tokens[-1][1] not in "!%'\u00b2\u00b3\u00b0")
                      or tokens[-1][1] in ("(", "{", "[") or _is_relation(*tokens[-1])):
        end -= len(tokens[-1][1])
        tokens = tokens[:-1]
    if not any(_is_relation(*t) for t in tokens):
        return None
    text = clause[start:end]
    if not _balanced(text) or not any(k in ("number", "name") for k, _ in tokens):
        return None
    return start, text


def equation_spans(clause: str) -> list[tuple[int, str]]:
    """(offset in clause, text) of every relation ("=", "<", ">", "\\leq", ...) written as a
    formula inside ``clause``: "so ABD = 12/2 = 6." -> [(3, "ABD = 12/2 = 6")]."""
    spans = []
    for start, end, tokens in _math_runs(clause):
        trimmed = _trim_run(clause, start, end, tokens)
        if trimmed is not None:
            spans.append(trimmed)
    return spans


def split_chain(span: str) -> list[str]:
    """"a = b = c" -> ["a = b", "b = c"] (each relation with its two neighbouring terms)."""
    parts = re.split(r"(\s*(?:<=|>=|!=|[=<>\u2264\u2265\u2260\u2248]|\\(?:leq?|geq?|neq?|approx|lt|gt)"
                     r"(?![A-Za-z]))\s*)", span)
    terms, rels = parts[0::2], parts[1::2]
    return [terms[i].strip() + rels[i] + terms[i + 1].strip() for i in range(len(rels))]


def has_name(text: str) -> bool:
    """A named object: "AD", "ABC", "P1", or a lone capital that is not a sentence's article
    ("A is taller", "bar B", but not "A triangle")."""
    for m in _NAME.finditer(text):
        if len(m.group()) > 1 or m.start() > 0 or _COPULA.match(text):
            return True
    return False


def is_boilerplate(clause: str) -> bool:
    """Restating the answer, planning ("Let's think", "we need to"), or a question."""
    return bool(_BOILERPLATE.search(clause)) or clause.rstrip().endswith("?")


def fact_text(clause: str) -> str | None:
    """The clause as a factual key step (trailing punctuation off, but a counted list keeps its
    full stop so that "1, 2, 3." is not found inside "1, 2, 3, 4."), or None when it is too long,
    boilerplate, a bare number, or has neither a number nor a named object."""
    text = clause.strip()
    if not _LIST.match(text):
        text = text.rstrip(_TRAILING + " ")
    if not text or len(text) > MAX_CHARS or is_boilerplate(text):
        return None
    if not re.search(r"[A-Za-z]", text) and not _LIST.match(text):
        return None  # a bare number ("6") is no step; a counted list ("1, 2, 3.") is
    if re.search(r"\d", text) or _NUMBER_WORD.search(text) or has_name(text):
        return text
    return None


def _score(text: str, kind: str) -> float:
    numbers = len(re.findall(r"\d+(?:\.\d+)?", text)) + len(_NUMBER_WORD.findall(text))
    operators = len(re.findall(r"[-+*/^=<>\u00d7\u00b7\u00f7]|\\(?:frac|times|cdot|sqrt)", text))
    names = len(_NAME.findall(text))
    return (3.0 if kind == "equation" else 0.0) + numbers + 0.5 * operators + 0.5 * names


def candidates_from_clause(offset: int, clause: str) -> list[Candidate]:
    """The candidates one clause gives: its equations (a chain over MAX_CHARS is cut into its
    relations), else the clause itself as a fact, else nothing."""
    offset, clause = _strip_clause(offset, clause)
    if not clause or is_boilerplate(clause):
        return []
    out = []
    spans = equation_spans(clause)
    for start, span in spans:
        pieces = [span] if len(span) <= MAX_CHARS else [p for p in split_chain(span) if len(p) <= MAX_CHARS]
        for piece in pieces:
            out.append(Candidate(piece, "equation", _score(piece, "equation"),
                                 offset + start + max(0, span.find(piece))))
    if out:
        # "Since AB is parallel to CD, angle ABC = 40°": the comma-separated lead is a fact too
        lead = clause[:spans[0][0]].rstrip()
        if lead.endswith(","):
            lead_offset, lead = _strip_clause(offset, lead[:-1])
            text = fact_text(lead)
            if text is not None and not equation_spans(text):
                out.insert(0, Candidate(text, "fact", _score(text, "fact"), lead_offset))
        return out
    text = fact_text(clause)
    return [] if text is None else [Candidate(text, "fact", _score(text, "fact"), offset)]


def candidates(reasoning: str) -> list[Candidate]:
    """Every candidate of the step sections of ``reasoning``, in reading order."""
    out = []
    for offset, clause in clauses(reasoning):
        out.extend(candidates_from_clause(offset, clause))
    return out
