"""Completions and records for the episode / advantage tests (test_stepgrpo.py, test_algorithms.py):
a response in the ### layout with the right answer 5, the same with a wrong answer, and an extra
reward with spread for the random tiny model."""
from types import SimpleNamespace

GOOD = (
    "### Image Description:\nTwo numbers.\n### Rationales:\nAdd them.\n"
    "### Let's think step by step.\n"
    "### Step 1:\n2 + 3 = 5\n### The final answer is:\n5"
)
WRONG = GOOD.replace("answer is:\n5", "answer is:\n6")


def record(solution, key_steps):
    """A data record as build_episodes reads it."""
    return SimpleNamespace(solution=solution, key_steps=key_steps, question="q")


def digit_share(completions, **kwargs):
    """Share of digit characters per completion (TRL reward contract)."""
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) for text in completions]
