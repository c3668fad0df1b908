"""Paper-mode key-step matching cannot be gamed (issue 27, docs/rewards.md): forms match on whole
tokens only, and an equation key step counts 0 when the steps also state its left-hand side equal
to another value (enumerations, "or" hedges). Every case runs on the pure-Python twin, on the C++
extension (skipped when not built; failed under STEPGRPO_REQUIRE_EXT=1) and through the public
API with the active backend."""
import pytest
from rewards_cases import cpp_extension

from stepgrpo_fast.rewards import match_key_steps, step_accuracy_reward
from stepgrpo_fast.rewards.matching import match_batch_python

STEP = "### Step 1:\n{}\n### Step 2:\nso that is it.\n### The final answer is: 0"
ENUMERATION = ", ".join(f"8 + 7 = {v}" for v in range(10, 20))

# (step text, key-step form, k): the issue's cases first
CASES = [
    ("So x = 12.", "x = 1", 0.0),
    ("12/2 = 6.5", "12/2 = 6", 0.0),
    (ENUMERATION, "8 + 7 = 15", 0.0),
    ("8 + 7 = 15 or 8 + 7 = 16", "8 + 7 = 15", 0.0),
    ("8 + 7 = 15 or = 16", "8 + 7 = 15", 0.0),
    ("BAD is a median", "AD is a median", 0.0),
    ("8+7=15", "8 + 7 = 15", 1.0),
    ("$8 + 7 = 15$", "8 + 7 = 15", 1.0),
    ("area ABD = \\frac{12}{2} = 6.", "12/2 = 6", 1.0),
    ("so 12/2 = 6", "\\frac{12}{2} = 6", 1.0),
    ("so $\\dfrac{12}{2}=6$", "frac{12}{2} = 6", 1.0),
    ("AD is a median.", "AD is a median", 1.0),
    ("So x = 1.", "x = 1", 1.0),
    # near-miss numbers and words
    ("x = 1,000", "x = 1", 0.0),
    ("the value 0.12/2 = 6", "12/2 = 6", 0.0),
    ("so x = 21", "x = 1", 0.0),
    ("a median is BAD", "median is AD", 0.0),
    ("AD is a medians", "AD is a median", 0.0),
    ("AD is a median of ABC", "AD is a median", 1.0),
    ("it is 5cm long", "5 cm", 1.0),
    # enumerations and hedges, on separate lines or across steps too
    ("x = 15\nx = 16", "x = 15", 0.0),
    ("8 + 7 = 14\n8 + 7 = 15", "8 + 7 = 15", 0.0),
    ("8 + 7 = 15 or 16", "8 + 7 = 15", 0.0),
    ("x = 1/2", "x = 1", 0.0),
    ("x = 1 + 1 = 2", "x = 1", 0.0),
    # derivations that restate the left-hand side still count
    ("2x = 2, so x = 1", "x = 1", 1.0),
    ("x = 30/2 = 15, so x = 15", "x = 15", 1.0),
    ("18 + 8 + 7 = 33, and 8 + 7 = 15", "8 + 7 = 15", 1.0),
    ("8 + 7 = 15, hence 8 + 7 = 15 again", "8 + 7 = 15", 1.0),
    ("angle ABC = 90^{\\circ}", "angle ABC = 90", 1.0),
    ("AB = 5 cm", "AB = 5", 1.0),
    # LaTeX variants
    ("$2 \\times 3 = 6$", "2 \\cdot 3 = 6", 1.0),
    ("$\\left(12/2\\right) = 6$", "(12/2) = 6", 1.0),
    ("$x^{2} = 4$", "x^2 = 4", 1.0),
    ("2 × 3 = 6", "2*3 = 6", 1.0),
    # not equations: whole-token substring only
    ("so x <= 3 holds", "x <= 3", 1.0),
    ("so x <= 35 holds", "x <= 3", 0.0),
    # Unicode: non-ASCII letters are word characters, symbols and spaces are not
    ("l'été est chaud", "été", 1.0),
    ("les étés sont chauds", "été", 0.0),
    ("angle\u00a0=\u00a045°", "angle = 45", 1.0),
    ("x = −3 or x = 3", "x = 3", 0.0),
]


def _texts_and_items():
    return [STEP.format(t) for t, _, _ in CASES], [[[form]] for _, form, _ in CASES]


@pytest.mark.parametrize("backend", ["python", "cpp", "public"])
def test_issue_cases(backend):
    texts, items = _texts_and_items()
    if backend == "python":
        got = match_batch_python(texts, items, "paper")
    elif backend == "cpp":
        got = cpp_extension().match_key_steps(texts, items, "paper", 1)
    else:
        got = match_key_steps(texts, items)
    wrong = [(case, k) for case, k in zip(CASES, got) if k != case[2]]
    assert not wrong, wrong


def test_conflicts_span_steps_and_forms_are_alternatives():
    text = ("### Step 1:\n8 + 7 = 15\n### Step 2:\n8 + 7 = 16\n### The final answer is: 15")
    assert match_key_steps([text], [[["8 + 7 = 15"]]]) == [0.0]
    # a contradicted equation form does not spoil another form of the same group
    assert match_key_steps([text], [[["8 + 7 = 15", "8 + 7"]]]) == [1.0]
    assert match_key_steps([text], [[["8 + 7 = 15"], ["8 + 7"]]]) == [0.5]


def test_listing_candidates_earns_no_bonus():
    """The issue's incentive: with a wrong answer, listing every candidate equation scored
    alpha * k = 0.1 (group advantage ~ +1.5); now it scores 0."""
    honest = STEP.format("8 + 7 = 16").replace("is: 0", "is: 16")
    listing = STEP.format(ENUMERATION).replace("is: 0", "is: 16")
    key = [[["8 + 7 = 15"]]] * 2
    assert step_accuracy_reward([honest, listing], ["15", "15"], key) == [0.0, 0.0]
    right = STEP.format("8 + 7 = 15").replace("is: 0", "is: 15")
    assert step_accuracy_reward([right], ["15"], key[:1]) == [1.1]
