"""The C++ backend and the pure-Python backend agree exactly, on >= 10,000 randomised and fuzzed
inputs per run (hypothesis: 250 examples x 4 tests, most of them batches of up to 24; seeded fuzz:
2 x 6,000 completions, a third of them Unicode-heavy; 12,000 Unicode-heavy texts for str.lower()):
segmentation, normalisation, key-step matching and validity in both modes, plus identical error
messages. Non-ASCII text (accents, Greek, CJK, NBSP and other Unicode blanks, Arabic-Indic and
other digits, control characters, lone surrogates, invalid UTF-8 bytes) is generated throughout.
(Skipped when stepgrpo_fast._C is not built, failed then under STEPGRPO_REQUIRE_EXT=1.)"""
import random

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

from stepgrpo_fast.rewards import normalise as py_normalise
from stepgrpo_fast.rewards import official, parsing
from stepgrpo_fast.rewards.matching import match_batch_python
from stepgrpo_fast.rewards.validity import validity_batch_python

_C = cpp_extension()

fragments = st.one_of(st.sampled_from(HEADERS + UNICODE_HEADERS),
                      st.sampled_from(WORDS + UNICODE_WORDS),
                      st.sampled_from(SPACES + UNICODE_SPACES), st.text(max_size=6))
texts = st.lists(fragments, max_size=40).map("".join)
forms = st.one_of(st.sampled_from(WORDS + UNICODE_WORDS), st.text(max_size=5),
                  st.lists(st.sampled_from(WORDS + SPACES), min_size=1, max_size=3).map("".join))
groups = st.one_of(forms, st.lists(forms, max_size=3), st.lists(forms, max_size=3).map(tuple))
key_step_items = st.one_of(st.none(), st.lists(groups, max_size=6),
                           st.lists(groups, max_size=6).map(lambda g: {"Steps": g}))
batches = st.lists(st.tuples(texts, key_step_items), min_size=1, max_size=24)

SETTINGS = settings(max_examples=250, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


def _sections_py(b):
    return [tuple(s) for s in parsing.segment(b)]


@SETTINGS
@given(st.one_of(texts, st.binary(max_size=300)))
def test_segmentation_agrees(text):
    b = parsing.to_bytes(text)
    assert _C.segment(text) == _sections_py(b)
    assert _C.official_step_bodies(text) == official.step_bodies(text)


@SETTINGS
@given(st.one_of(st.lists(st.one_of(st.sampled_from(WORDS), st.sampled_from(SPACES)),
                          max_size=30).map("".join), st.binary(max_size=200)))
def test_normalisation_agrees(text):
    assert _C.normalise(text) == py_normalise.normalise(text)
    body, glued = _C.normalise_body(text)
    assert (body, frozenset(glued)) == py_normalise.normalise_body(text)


# Adversarial material for paper mode's whole-token and equation rules (issue 27): near-miss
# numbers, decimals, thousands groups, enumerations, hedges, chains, glued coefficients, LaTeX
# variants, Unicode letters, symbols and spaces.
ADVERSARIAL_PIECES = [
    "x = 1", "x = 12", "x=1.5", "x = 1,000", "2x = 2", "2 x", "12/2 = 6", "12/2 = 6.5", "0.12/2=6",
    "8 + 7 = 15", "8+7=16", "18 + 8 + 7", " or ", " or = 16", ", ", "; ", ". ", "= 15", "=", "==",
    "<=", "\\frac{12}{2}", "frac{12}{2}", "\\dfrac{1}{2}", "\\times", "\\cdot", "×", "·", "$",
    "\\left(", "\\right)", "^{\\circ}", "^\\circ", "°", "AD is a median", "BAD", "median",
    "été", "étés", "−", "\u00a0", "\u3000", "\u2009", "5cm", "x^{2}", "30/2 = 15", "x = 30/2",
    "\n", " ", "\\,", "{", "}", "}{", "-3", "\ud800", "\U0001d7cf", "٣", "Ａｂ", "\xff",
]
ADVERSARIAL_FORMS = [
    "x = 1", "x = 12", "x = 15", "12/2 = 6", "\\frac{12}{2} = 6", "8 + 7 = 15", "8+7=15",
    "$8 + 7 = 15$", "AD is a median", "median", "x <= 3", "2x = 2", "x = 30/2", "angle = 90",
    "été", "5 cm", "x^2 = 4", "= 15", "x =", "6.5", "1,000", "(12/2) = 6", "x = −3",
]


def _adversarial_text(rng, pieces=24):
    steps = []
    for n in range(1, rng.randrange(2, 5)):
        body = "".join(rng.choice(ADVERSARIAL_PIECES + SPACES) for _ in range(rng.randrange(0, pieces)))
        steps.append(f"### Step {n}:\n{body}\n")
    return "".join(steps) + "### The final answer is: 3"


@pytest.mark.parametrize("seed", [27, 28])
def test_adversarial_paper_matching_agrees(seed):
    rng = random.Random(seed)
    n = 4000
    texts_ = [_adversarial_text(rng) for _ in range(n)]
    items = [[[rng.choice(ADVERSARIAL_FORMS) for _ in range(rng.randrange(1, 3))]
              for _ in range(rng.randrange(1, 5))] for _ in range(n)]
    expected = match_batch_python(texts_, items, "paper")
    assert _C.match_key_steps(texts_, items, "paper", 1) == expected
    assert _C.match_key_steps(texts_, items, "paper", 0) == expected
    # the corpus reaches every outcome: none, some and all groups found
    assert {0.0, 1.0} <= set(expected) and any(0.0 < k < 1.0 for k in expected)
    for t in texts_[:500]:
        body, glued = _C.normalise_body(t)
        assert (body, frozenset(glued)) == py_normalise.normalise_body(t)


@SETTINGS
@given(batches, st.sampled_from(["paper", "official"]), st.sampled_from([1, 3]))
def test_matching_and_validity_agree(batch, mode, threads):
    texts_, items = [t for t, _ in batch], [k for _, k in batch]
    assert _C.match_key_steps(texts_, items, mode, threads) == match_batch_python(texts_, items, mode)
    assert _C.step_validity(texts_, mode, threads) == validity_batch_python(texts_, mode)


def _fuzz_text(rng):
    pieces = []
    for _ in range(rng.randrange(0, 30)):
        r = rng.random()
        if r < 0.3:
            pieces.append(rng.choice(HEADERS))
        elif r < 0.6:
            pieces.append(rng.choice(WORDS))
        elif r < 0.8:
            pieces.append(rng.choice(SPACES))
        else:
            pieces.append("".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x800),
                                                  rng.randrange(0xD800, 0xE000)]))
                                  for _ in range(rng.randrange(1, 5))))
    return "".join(pieces)


def _fuzz_key_steps(rng):
    groups = [[rng.choice(WORDS) if rng.random() < 0.8 else _fuzz_text(rng)[:8]
               for _ in range(rng.randrange(0, 4))] for _ in range(rng.randrange(0, 7))]
    return {"Steps": groups} if rng.random() < 0.3 else groups


@SETTINGS
@given(st.one_of(st.text(max_size=40), fragments, st.binary(max_size=40)))
def test_unicode_lower_agrees_with_str_lower(text):
    s = official.as_text(text)
    errors = "surrogatepass" if isinstance(text, str) else "surrogateescape"
    assert _C.unicode_lower(text) == s.lower().encode("utf-8", errors)


def test_unicode_lower_on_every_code_point_and_a_seeded_corpus():
    assert _C.UNICODE_VERSION == __import__("unicodedata").unidata_version
    chars = [chr(cp) for cp in range(0x110000)]
    singles = "\x00".join(chars)  # NUL is neither cased nor case-ignorable: no context crosses it
    assert _C.unicode_lower(singles) == singles.lower().encode("utf-8", "surrogatepass")
    rng = random.Random(11)
    texts_ = [unicode_text(rng, 12) for _ in range(12_000)]
    got = [_C.unicode_lower(t) for t in texts_]
    assert got == [t.lower().encode("utf-8", "surrogatepass") for t in texts_]


@pytest.mark.parametrize("mode", ["paper", "official"])
def test_seeded_fuzz_batch_agrees(mode):
    rng = random.Random(2025 + (mode == "official"))
    n = 6000
    texts_ = [_fuzz_text(rng) if i % 3 else unicode_text(rng) for i in range(n)]
    items = [_fuzz_key_steps(rng) if i % 2 else unicode_key_steps(rng, texts_[3 * i])
             for i in range(n // 3)]
    key_steps = [items[i // 3] for i in range(n)]  # groups of 3 completions share one object
    expected = match_batch_python(texts_, key_steps, mode)
    assert _C.match_key_steps(texts_, key_steps, mode, 0) == expected
    assert _C.match_key_steps(texts_, key_steps, mode, 1) == expected
    assert _C.step_validity(texts_, mode, 0) == validity_batch_python(texts_, mode)
    assert 0.0 < sum(expected) < n  # the fuzz hits both found and missing groups


@pytest.mark.parametrize("item", [5, "abc", {"steps": []}, {"Steps": 3}, [["a"], 7], [["a", None]],
                                  [b"bytes"], ({"Steps": None})])
def test_error_messages_agree(item):
    texts_ = ["### Step 1: a", "### Step 1: b"]
    with pytest.raises((TypeError, ValueError)) as py_err:
        match_batch_python(texts_, [[], item], "paper")
    with pytest.raises(type(py_err.value)) as c_err:
        _C.match_key_steps(texts_, [[], item], "paper", 1)
    assert str(c_err.value) == str(py_err.value)


def test_concurrent_calls_from_python_threads_agree():
    """The batch runs without the GIL: several Python threads may call it at once."""
    from concurrent.futures import ThreadPoolExecutor

    rng = random.Random(7)
    texts_ = [_fuzz_text(rng) for _ in range(2000)]
    key_steps = [_fuzz_key_steps(rng) for _ in range(2000)]
    expected = {m: match_batch_python(texts_, key_steps, m) for m in ("paper", "official")}
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(_C.match_key_steps, texts_, key_steps, m, 2)
                   for m in ("paper", "official") * 4]
        results = [f.result() for f in futures]
    assert all(r == expected[m] for r, m in zip(results, ("paper", "official") * 4))


def test_constants_agree():
    for name in ("KIND_DESCRIPTION", "KIND_RATIONALES", "KIND_THINK", "KIND_STEP",
                 "KIND_FINAL_ANSWER", "KIND_OTHER", "STEP_NUMBER_OVERFLOW"):
        assert getattr(_C, name) == getattr(parsing, name), name


def test_normaliser_letter_runs_across_every_block_end():
    """The SSE2 letter path copies 16-byte blocks; a block that ends with the space after a word
    goes on into the next word unless that word could start a bare "frac" (or is not a letter).
    Every offset of the word break against the block ends, and each kind of next token."""
    nexts = ["word", "frac{1}{2}", "Frac x", "fx", "9 apples", ", then", "  two", "\\cdot y",
             "\u00e9t\u00e9", "$x$"]
    for pad in range(40):
        for nxt in nexts:
            text = "a" * pad + " " + "ab cd efg " * 3 + nxt + " tail words here ok"
            assert _C.normalise(text) == py_normalise.normalise(text), (pad, nxt)
            body, glued = _C.normalise_body(text)
            assert (body, frozenset(glued)) == py_normalise.normalise_body(text), (pad, nxt)
