"""Official mode reproduces the released code: a transcription of its regexes (k and validity,
Python str semantics: str.lower(), regex \\d and \\s, str.strip(), int()) is compared with
mode="official" on random ASCII and Unicode-heavy responses (accents, Greek with final sigma,
CJK, Arabic-Indic and other digits in step numbers, NBSP and other Unicode blanks, control
characters, lone surrogates): hypothesis with the active backend, plus a seeded corpus of 12,000
Unicode-heavy cases run on both backends (the C++ one skipped when it is not built)."""
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rewards_cases import (
    HEADERS,
    SPACES,
    UNICODE_HEADERS,
    UNICODE_SPACES,
    UNICODE_WORDS,
    WORDS,
    cpp_extension,
    unicode_key_steps,
    unicode_text,
)

from stepgrpo_fast.rewards import match_key_steps, step_validity_reward
from stepgrpo_fast.rewards.matching import match_batch_python
from stepgrpo_fast.rewards.validity import validity_batch_python

SETTINGS = settings(max_examples=250, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


_RELEASED_BODY = re.compile(r"### Step \d+:\s*(.*?)(?=\n###|\Z)", re.DOTALL)


def released_k(content, key_step):
    combined = " ".join(_RELEASED_BODY.findall(content)).lower()
    steps = key_step.get("Steps", [])
    matched = sum(1 for g in steps if any(a.lower() in combined for a in ([g] if isinstance(g, str) else g)))
    return matched / len(steps) if steps else 0.0


def released_valid(text):
    required = ["### Image Description:", "### Rationales:", "### Step 1:", "### The final answer is:"]
    if any(r not in text for r in required):
        return 0.0
    if not text.strip().endswith("### The final answer is:"):
        final = re.search(r"### The final answer is:.*?$", text, re.DOTALL)
        last = max(re.finditer(r"### Step \d+:", text), key=lambda m: m.end())
        if not final or final.start() < last.end():
            return 0.0
    numbers = [int(x) for x in re.findall(r"### Step (\d+):", text)]
    return 1.0 if numbers and numbers == list(range(1, len(numbers) + 1)) else 0.0


ASCII_WORDS = [w for w in WORDS if w.isascii()]
ascii_texts = st.lists(st.one_of(st.sampled_from(HEADERS), st.sampled_from(ASCII_WORDS),
                                 st.sampled_from([s for s in SPACES if s.isascii()]),
                                 st.text(st.characters(max_codepoint=127), max_size=5)),
                       max_size=40).map("".join)
ascii_groups = st.lists(st.one_of(st.sampled_from(ASCII_WORDS),
                                  st.lists(st.sampled_from(ASCII_WORDS + ["", "ad is"]), max_size=3)),
                        max_size=5)


@SETTINGS
@given(st.lists(st.tuples(ascii_texts, ascii_groups), min_size=1, max_size=16))
def test_official_mode_reproduces_the_released_code(batch):
    texts_ = [t for t, _ in batch]
    items = [{"Steps": g} for _, g in batch]
    assert match_key_steps(texts_, items, mode="official") == [released_k(t, i) for t, i in zip(texts_, items)]
    assert step_validity_reward(texts_, mode="official") == [released_valid(t) for t in texts_]


unicode_texts = st.lists(st.one_of(st.sampled_from(HEADERS + UNICODE_HEADERS),
                                   st.sampled_from(WORDS + UNICODE_WORDS),
                                   st.sampled_from(SPACES + UNICODE_SPACES), st.text(max_size=5)),
                         max_size=40).map("".join)
unicode_groups = st.lists(st.one_of(st.sampled_from(UNICODE_WORDS + WORDS),
                                    st.lists(st.sampled_from(UNICODE_WORDS + ["", "ünïcödé"]),
                                             max_size=3), st.text(max_size=4)),
                          max_size=5)


@settings(SETTINGS, max_examples=120)
@given(st.lists(st.tuples(unicode_texts, unicode_groups), min_size=1, max_size=16))
def test_official_mode_reproduces_the_released_code_on_unicode(batch):
    texts_ = [t for t, _ in batch]
    items = [{"Steps": g} for _, g in batch]
    assert match_key_steps(texts_, items, mode="official") == [released_k(t, i) for t, i in zip(texts_, items)]
    assert step_validity_reward(texts_, mode="official") == [released_valid(t) for t in texts_]


# step number n written as ASCII, with a leading zero, in Arabic-Indic, Devanagari, fullwidth or
# mathematical bold digits (all regex \\d, all int()-able); sometimes deliberately wrong
_NUMERALS = [str, lambda n: f"0{n}", lambda n: chr(0x660 + n), lambda n: chr(0x966 + n),
             lambda n: chr(0xFF10 + n), lambda n: chr(0x1D7CE + n), lambda n: str(n + 1)]


def _unicode_corpus(n, seed):
    rng = random.Random(seed)
    texts_, items = [], []
    for i in range(n):
        if i % 3 == 0:  # a complete response with Unicode around the headers
            steps = "".join(f"### Step {rng.choice(_NUMERALS)(n)}:{rng.choice(UNICODE_SPACES)}"
                            f"{unicode_text(rng, 6)}\n" for n in range(2, rng.randrange(2, 5)))
            text = (f"{rng.choice(['', chr(0xA0), chr(0x1C)])}### Image Description:\n{unicode_text(rng, 5)}\n"
                    f"### Rationales:\n{unicode_text(rng, 5)}\n### Step 1:{unicode_text(rng, 5)}\n{steps}"
                    f"### The final answer is:{rng.choice(['', ' 3', chr(0xA0) + chr(0x3000), chr(0x85)])}")
        else:
            text = unicode_text(rng)
        texts_.append(text)
        items.append({"Steps": unicode_key_steps(rng, text)})
    return texts_, items


CORPUS_SIZE = 12_000


def _cpp():
    return cpp_extension()


@pytest.mark.parametrize("backend", ["python", "cpp"])
def test_unicode_corpus_agrees_with_the_released_code(backend):
    texts_, items = _unicode_corpus(CORPUS_SIZE, 16)
    assert sum(not t.isascii() for t in texts_) > 0.95 * CORPUS_SIZE
    expected_k = [released_k(t, i) for t, i in zip(texts_, items)]
    expected_valid = [released_valid(t) for t in texts_]
    if backend == "cpp":
        ext = _cpp()
        got_k = ext.match_key_steps(texts_, items, "official", 0)
        got_valid = ext.step_validity(texts_, "official", 0)
    else:
        got_k = match_batch_python(texts_, items, "official")
        got_valid = validity_batch_python(texts_, "official")
    k_misses = [(t, i) for t, i, a, b in zip(texts_, items, got_k, expected_k) if a != b]
    valid_misses = [t for t, a, b in zip(texts_, got_valid, expected_valid) if a != b]
    assert not k_misses, f"{len(k_misses)} k disagreements, first: {k_misses[0]!r}"
    assert not valid_misses, f"{len(valid_misses)} validity disagreements, first: {valid_misses[0]!r}"
    # the corpus exercises both outcomes of both checks
    assert 0.05 < sum(v > 0 for v in expected_k) / CORPUS_SIZE < 0.95
    assert 0.05 < sum(expected_valid) / CORPUS_SIZE < 0.95


def test_unicode_tables_are_current():
    """csrc/unicode_tables.inc was generated from this Python's str behaviour (same Unicode
    version); when it is not, _backend routes official mode to the Python twin instead."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "csrc" / "gen_unicode_tables.py"
    spec = importlib.util.spec_from_file_location("gen_unicode_tables", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.main(["--check"]) == 0


def test_stale_unicode_tables_route_official_mode_to_python(monkeypatch):
    import types
    import unicodedata

    from stepgrpo_fast.rewards import _backend, matching, validity

    stale = types.SimpleNamespace(UNICODE_VERSION="1.0.0")
    with pytest.warns(RuntimeWarning, match="official-mode rewards run in pure Python"):
        assert _backend._official_ok(stale) is False
    assert _backend._official_ok(types.SimpleNamespace(UNICODE_VERSION=unicodedata.unidata_version))

    class Refuses:
        def __getattr__(self, name):
            raise AssertionError(f"official mode called the extension ({name})")

    monkeypatch.setattr(matching, "EXT", Refuses())
    monkeypatch.setattr(matching, "EXT_OFFICIAL", False)
    monkeypatch.setattr(validity, "EXT", Refuses())
    monkeypatch.setattr(validity, "EXT_OFFICIAL", False)
    text = "### Step ١: Ünïcödé\n"
    assert match_key_steps([text], [[["ünïcödé"]]], mode="official") == [1.0]
    assert step_validity_reward([text], mode="official") == [0.0]
