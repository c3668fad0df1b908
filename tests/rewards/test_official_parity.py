"""Official-mode correctness keeps the released verdict on long completions (issue 27 item 3): the
released check hands the whole completion to math-verify, with no size cap; 1,024-token
completions often pass 4 KB. A seeded corpus of 600 completions of 0.5-9 KB (a third over 4 KB)
is judged by step_accuracy_parts(mode="official") and by a transcription of the released function,
and every verdict must agree."""
import random
import re
import time

from stepgrpo_fast.rewards import answer, bounded, step_accuracy_parts, step_accuracy_reward

_RELEASED_ANSWER = re.compile(r"### The final answer is:\s*\n?(.*)")


def released_correct(content: str, sol: str) -> bool:
    """The released accuracy check (math-verify on the whole completion, passed as the gold
    argument, then the stripped first answer line compared exactly); no timeouts here."""
    from math_verify import parse, verify

    try:
        if float(verify(parse(content, parsing_timeout=None), parse(sol, parsing_timeout=None),
                        timeout_seconds=None)) > 0:
            return True
    except Exception:  # noqa: BLE001, S110 - the released code swallows every error
        pass

    def line(text):
        m = _RELEASED_ANSWER.search(text)
        return m.group(1).strip() if m else text.strip()

    return line(content) == line(sol)


WORDS = ["the", "triangle", "side", "length", "angle", "median", "area", "point", "so", "we",
         "compute", "half", "of", "equal", "because", "since", "then", "thus", "note", "that"]


def _completion(rng: random.Random, size: int, final: str) -> str:
    steps, n = [], 1
    while sum(map(len, steps)) < size:
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(20, 60)))
        math = rng.choice(["", f" so AB = {rng.randrange(2, 40)}.", f" $x + {n} = y$.",
                           " half of it."])
        steps.append(f"### Step {n}:\n{words}{math}\n")
        n += 1
    return ("### Image Description:\nA triangle ABC.\n### Rationales:\nUse the areas.\n"
            "### Let's think step by step.\n" + "".join(steps) + "### The final answer is:\n" + final)


def corpus(n: int = 600, seed: int = 27) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        gold = rng.randrange(2, 30)
        sol = rng.choice([str(gold), f"### The final answer is: {gold}", f"${gold}$"])
        final = rng.choice([str(gold), f"$\\frac{{{2 * gold}}}{{2}}$", f"\\boxed{{{gold}}}",
                            str(gold + 1), f"$\\frac{{{gold}}}{{3}}$", f"{gold} or {gold + 1}",
                            f"The area is {gold}."])
        size = rng.choice([500, 2000, 3500]) if i % 3 else rng.randrange(4200, 9000)
        cases.append((_completion(rng, size, final), sol))
    return cases


def test_official_verdicts_match_the_released_check_on_long_completions():
    cases = corpus()
    long_cases = sum(len(c) > bounded.MAX_CHECKED_CHARS for c, _ in cases)
    assert long_cases >= 200
    expected = [released_correct(c, s) for c, s in cases]
    bounded.reset_answer_check_stats()
    parts = step_accuracy_parts([c for c, _ in cases], [s for _, s in cases], None,
                                mode="official")
    misses = [i for i, (a, b) in enumerate(zip(parts.answer_correct, expected)) if a != b]
    assert not misses, f"{len(misses)} of 600 differ, first: {cases[misses[0]]!r}"
    assert 0.2 < sum(expected) / len(expected) < 0.8  # both verdicts are exercised
    long_right = sum(e for (c, _), e in zip(cases, expected) if len(c) > bounded.MAX_CHECKED_CHARS)
    assert long_right >= 50  # correct answers in long completions, scored correct
    assert bounded.answer_check_stats()["too_complex"] == 0


def test_correct_answer_in_a_5_4_kb_completion_is_correct():
    text = _completion(random.Random(5), 5300, "$\\frac{6}{2}$")
    assert 5.3 * 1024 < len(text) < 5.6 * 1024
    assert released_correct(text, "3")
    answer._math_verify_outcome.cache_clear()
    assert step_accuracy_reward([text], ["3"], None, mode="official") == [1.0]


def test_official_check_stays_bounded_on_a_huge_completion():
    """No length cap, still about a second at most per answer (the deadline; math-verify's
    extraction is linear in the text)."""
    text = _completion(random.Random(6), 400_000, "$\\frac{6}{2}$")
    answer._math_verify_outcome.cache_clear()
    start = time.perf_counter()
    got = step_accuracy_reward([text], ["4"], None, mode="official")
    assert got == [0.0] and time.perf_counter() - start < 2.5


def test_length_cap_is_paper_mode_only():
    """Paper mode still refuses an answer line over MAX_CHECKED_CHARS (one line is never that
    long); official mode passes max_chars=None."""
    text = "x" * (bounded.MAX_CHECKED_CHARS + 1)
    assert "longer than" in bounded.too_complex(text)
    assert bounded.too_complex(text, max_chars=None) is None
