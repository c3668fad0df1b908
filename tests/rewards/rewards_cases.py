"""Shared response texts for the reward tests (imported by test_rewards_*.py)."""
import importlib
import os

import pytest

# STEPGRPO_REQUIRE_EXT=1 (CI's main pass): the C++ extension must load; tests that need it fail
# instead of skipping, and the active backend must be the compiled one unless
# STEPGRPO_DISABLE_EXT=1 explicitly selects the pure-Python fallback.
REQUIRE_EXT = os.environ.get("STEPGRPO_REQUIRE_EXT", "0").strip() not in ("", "0")
FALLBACK_FORCED = os.environ.get("STEPGRPO_DISABLE_EXT", "0").strip() not in ("", "0")


def cpp_extension():
    """stepgrpo_fast._C; skips the calling test when it is not built, unless REQUIRE_EXT."""
    if REQUIRE_EXT:
        return importlib.import_module("stepgrpo_fast._C")  # an ImportError fails the test
    return pytest.importorskip("stepgrpo_fast._C", reason="C++ extension not built",
                               exc_type=ImportError)


GOOD = (
    "### Image Description:\nAD is a median of triangle ABC.\n"
    "### Rationales:\nMedians halve areas.\n"
    "### Let's think step by step.\n"
    "### Step 1:\nSince  AD IS A   median, area ABD = \\frac{12}{2} = 6.\n"
    "### Step 2:\nE is the midpoint of AD, so area ABE = 6 / 2 = 3.\n"
    "### The final answer is:\n3"
)
KEY_STEPS = [["AD is a median", "median is AD"], ["12/2 = 6", "frac{12}{2} = 6"],
             ["6/2 = 3", "frac{6}{2} = 3"], ["area ACE"]]


def response(*, description=True, rationales=True, steps=("a", "b"), numbers=None, final="3",
             order=None):
    """A response in the prompted layout; pieces can be dropped, renumbered or reordered."""
    numbers = numbers or list(range(1, len(steps) + 1))
    parts = {
        "D": "### Image Description:\nd\n" if description else "",
        "R": "### Rationales:\nr\n" if rationales else "",
        "S": "".join(f"### Step {n}:\n{s}\n" for n, s in zip(numbers, steps)),
        "F": f"### The final answer is:\n{final}" if final is not None else "",
    }
    return "".join(parts[p] for p in (order or "DRSF"))


# Building blocks for randomised responses (agreement and released-code tests).
HEADERS = ["### Image Description:", "### Rationales:", "### Let's think step by step.",
           "### The final answer is:", "### Step 1:", "### Step 2:", "### Step 3:", "### Step 10:",
           "### Step 01:", "### Step 0:", "#### Step  2 :", "## Step 1:", "###Step 2:",
           "### Step x:", "### Step :", "### Note:", "###", "### Step 99999999999:"]
WORDS = ["AD is a median", "median is AD", "12/2 = 6", "\\frac{12}{2}", "frac{6}{2} = 3", "6/2=3",
         "\\left(", "\\right)", "\\cdot", "\\times", "×", "·", "$", "{", "}", "}{", "\\", "\\,",
         "frac", "fraction", "\\rightarrow", "ÉTÉ", "été", "Ω", "\U0001f600", "\ud83d", "\x00",
         "answer", "B: 8", "3", "a", "A", "#", "##"]
SPACES = ["\n", " ", "\t", "\r\n", "\n\n", "  ", "\x0b", "\x0c", "\u00a0", "\u3000"]

# Non-ASCII building blocks: official mode must follow Python's str semantics on all of them.
UNICODE_HEADERS = ["### Step ١:", "### Step ٢:", "### Step ۳:", "### Step १:", "### Step １:",
                   "### Step 𝟏:", "### Step ٠١:", "### Step 1٢:", "### Step ²:", "### Step Ⅰ:"]
UNICODE_WORDS = ["Ünïcödé step", "ünïcödé STEP", "ΟΔΟΣ", "οδος", "ΣΑΣ.", "Σ", "'Σ'", "ΑΣ\u0301",
                 "İstanbul", "ı", "ß", "ẞ", "ǅ", "ﬃ", "Ⅻ", "ⓐ", "Ａｂｃ", "中文 步骤", "٣ + ٤",
                 "é", "e\u0301", "Ǆ", "Ω", "\u0345", "ꭰ", "𐐀", "Ἀ", "ᾈ", "ϴ", "K", "Å"]
UNICODE_SPACES = ["\u00a0", "\u3000", "\u2028", "\u2029", "\x85", "\x1c", "\x1d", "\x1e", "\x1f",
                  "\u2009", "\u202f", "\u205f", "\u1680", "\u200b", "\ufeff", "\u180e"]
UNICODE_RANGES = [(0x80, 0x250), (0x370, 0x400), (0x400, 0x530), (0x600, 0x700), (0x900, 0x970),
                  (0x1E00, 0x2000), (0x2000, 0x2070), (0x2150, 0x2190), (0x24B0, 0x24EA),
                  (0x3000, 0x3040), (0x4E00, 0x4E40), (0xD800, 0xE000), (0xFF00, 0xFF60),
                  (0x10400, 0x10450), (0x1D400, 0x1D800), (0x0, 0x20)]


def unicode_text(rng, pieces=30):
    """A random Unicode-heavy response from the building blocks above and the ASCII ones."""
    out = []
    for _ in range(rng.randrange(0, pieces)):
        r = rng.random()
        if r < 0.15:
            out.append(rng.choice(HEADERS))
        elif r < 0.25:
            out.append(rng.choice(UNICODE_HEADERS))
        elif r < 0.45:
            out.append(rng.choice(UNICODE_WORDS))
        elif r < 0.55:
            out.append(rng.choice(WORDS))
        elif r < 0.75:
            out.append(rng.choice(SPACES + UNICODE_SPACES))
        else:
            lo, hi = rng.choice(UNICODE_RANGES)
            out.append("".join(chr(rng.randrange(lo, hi)) for _ in range(rng.randrange(1, 5))))
    return "".join(out)


def unicode_key_steps(rng, text):
    """Groups of forms: substrings of ``text`` in changed case (to hit matches) and building blocks."""
    groups = []
    for _ in range(rng.randrange(0, 6)):
        group = []
        for _ in range(rng.randrange(1, 4)):
            r = rng.random()
            if r < 0.5 and text:
                a = rng.randrange(len(text))
                piece = text[a:a + rng.randrange(1, 12)]
                group.append(rng.choice([piece, piece.upper(), piece.swapcase(), piece.title()]))
            elif r < 0.8:
                group.append(rng.choice(UNICODE_WORDS))
            else:
                group.append(rng.choice(WORDS))
        groups.append(group if rng.random() < 0.8 else group[0])
    return groups
