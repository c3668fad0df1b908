"""Extraction quality on the synthetic task, whose generator knows the true key steps:
recall >= 0.9 and precision >= 0.8; every reference reasoning scores k = 1 against its own
extracted key steps; wrong arithmetic scores k < 1."""

import re

import pytest

from stepgrpo_fast.synthetic.task import KINDS, generate
from stepgrpo_fast.keysteps import extract_key_steps, same_fact, score_extraction
from stepgrpo_fast.rewards import match_key_steps


@pytest.fixture(scope="module")
def problems():
    """All four kinds, two seeds, every split's stream (the eval stream too), with and without
    numbers in the question: 960 reference reasonings."""
    out = []
    for seed in (0, 11):
        for split in ("sft", "rl", "eval"):
            out += generate(seed, 120, split=split, kinds=KINDS)
            out += generate(seed, 40, split=split, kinds=KINDS, text_hints=False, max_value=5)
    return out


@pytest.fixture(scope="module")
def extracted(problems):
    return [extract_key_steps(p.response) for p in problems]


def test_recall_and_precision_against_the_generator(problems, extracted):
    q = score_extraction(extracted, [p.key_steps for p in problems])
    assert q.records == len(problems) and q.true_groups == 2 * len(problems)
    assert q.recall >= 0.9, q
    assert q.precision >= 0.8, q
    for kind in KINDS:  # no kind is carried by the others
        idx = [i for i, p in enumerate(problems) if p.kind == kind]
        qk = score_extraction([extracted[i] for i in idx], [problems[i].key_steps for i in idx])
        assert qk.recall >= 0.9, (kind, qk)


def test_every_reference_scores_k_1_against_its_own_key_steps(problems, extracted):
    texts = [p.response for p in problems]
    assert all(extracted)
    assert match_key_steps(texts, extracted) == [1.0] * len(texts)
    assert match_key_steps(texts, extracted, mode="official") == [1.0] * len(texts)


def _wrong_last_number(response: str) -> str:
    """The reasoning with the last integer of its step sections increased by 1 ("6 + 2 = 9",
    "9 > 5", "There are 4 red shapes"): wrong arithmetic, layout unchanged."""
    final = response.index("### The final answer is:")
    head, tail = response[:final], response[final:]
    last = list(re.finditer(r"\d+", head))[-1]
    return head[:last.start()] + str(int(last.group()) + 1) + head[last.end():] + tail


def test_wrong_arithmetic_scores_below_1(problems, extracted):
    wrong = [_wrong_last_number(p.response) for p in problems]
    assert all(w != p.response for w, p in zip(wrong, problems))
    k = match_key_steps(wrong, extracted)
    assert max(k) < 1.0
    assert min(k) > 0.0  # the other steps are still right and still credited


def test_a_slipped_carry_is_not_a_true_key_step():
    """The weak teacher's "7 + 8 = 5" is extracted from its trace (it is what the trace says),
    and the quality measure does not count it as the true "7 + 8 = 15"."""
    slipped = [p for p in generate(3, 200, kinds=("add",), carry_slip=1.0) if int(p.solution) >= 10]
    assert slipped
    q = score_extraction([extract_key_steps(p.response) for p in slipped], [p.key_steps for p in slipped])
    assert q.recall == pytest.approx(0.5)  # "a and b" found, the sum not


def test_same_fact():
    assert same_fact("The numbers are 3 and 4", "3 and 4")
    assert same_fact("bar A is taller", "A is taller")
    assert same_fact("3 \\times 4 = 12", "3*4=12")
    assert same_fact("1, 2, 3.", "1,2,3")
    assert not same_fact("3", "3 + 4 = 7")
    assert not same_fact("7 + 8 = 5", "7 + 8 = 15")
    assert not same_fact("Bar A is 8 and bar B is 7", "8 > 7")
    assert not same_fact("", "x")
    with pytest.raises(ValueError, match="length"):
        score_extraction([[]], [])
