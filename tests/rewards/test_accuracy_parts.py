"""StepRAR exposes its parts (answer correct, answer found, k) so that no caller inverts the
reward formula; the reward built from them is the one step_accuracy_reward returns."""

import pytest

from stepgrpo_fast import rewards

GOOD = (
    "### Image Description:\nTwo numbers.\n### Rationales:\nAdd them.\n"
    "### Let's think step by step.\n"
    "### Step 1:\n2 + 3 = 5\n### Step 2:\nso 5\n### The final answer is:\n5"
)
WRONG = GOOD.replace("answer is:\n5", "answer is:\n6")
NO_ANSWER = GOOD.split("### The final answer is:")[0]
KEY = [["2 + 3 = 5"], ["4 + 4 = 8"]]  # one of two groups is found: k = 0.5


@pytest.mark.parametrize("mode", ["paper", "official"])
def test_parts_and_reward_agree(mode):
    texts = [GOOD, WRONG, NO_ANSWER]
    parts = rewards.step_accuracy_parts(texts, ["5"] * 3, [KEY] * 3, mode=mode, alpha=0.2)
    assert parts.reward == rewards.step_accuracy_reward(
        texts, ["5"] * 3, [KEY] * 3, mode=mode, alpha=0.2
    )
    assert parts.key_step_match == [0.5, 0.5, 0.5]
    if mode == "paper":
        assert parts.answer_correct == [True, False, False]
        assert parts.answer_found == [True, True, False]
        assert parts.reward == pytest.approx([1.1, 0.1, 0.0])  # no answer: no bonus either
    else:  # the released check runs math-verify on the whole text: "so 5" counts
        assert parts.answer_correct == [True, False, True]
        assert parts.reward == pytest.approx([1.1, 0.1, 1.1])


def test_parts_without_key_steps_or_solution():
    parts = rewards.step_accuracy_parts([GOOD, GOOD], [None, "5"], None, alpha=0.1)
    assert parts.key_step_match == [0.0, 0.0]
    assert parts.answer_correct == [False, True]  # no gold answer: never correct
    assert parts.reward == [0.0, 1.0]


def test_a_correct_answer_is_reported_whatever_alpha():
    # alpha k >= 0.5 once made "r_acc - alpha k > 0.5" the only way to read correctness back
    parts = rewards.step_accuracy_parts([WRONG], ["5"], [[["2 + 3 = 5"]]], alpha=0.9)
    assert parts.answer_correct == [False] and parts.reward == pytest.approx([0.9])
