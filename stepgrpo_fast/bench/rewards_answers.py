"""Paper-mode accuracy + validity (StepRAR answer check + StepRVR) per completion: ours vs the
released functions, on the workload of issue 16.

Workload: ``problems`` prompts x GROUP_SIZE completions of ~1.5 KB in the prompted layout; the
completions of a prompt share one gold answer (as TRL passes them). Golds: integers 60 %, decimals
10 %, fractions 10 %, choice letters 15 %, yes/no 5 %. Answers: the gold as written 35 %, another
right form 15 % ("12 cm", "$\\boxed{12}$", "**12**", "x = 12", a fraction for a decimal, "B: 8",
"Yes"), wrong 30 %, hedged 10 % ("12 or 13", "12, 13", "12 (not 13)"), no final-answer section 5 %,
a header without "###" 5 %. None of these needs math-verify (symbolic answers do; each distinct
one costs milliseconds, see README).

Providers: ``ours`` = step_accuracy_reward + step_validity_reward (paper mode, num_threads=1) over
all completions, every answer-check cache cleared before each timed call (untimed), so each
prompt's gold is parsed once per call as in training; ``released`` = the released reward code's
way (math-verify parse/verify of the whole completion against the solution, then the first
answer line compared, plus its regex validity check), timed on the first RELEASED_SUBSET
completions only (it is ~50x slower).
"""
from __future__ import annotations

import random
import re

from .rows import make_row
from .timing import summarize, time_interleaved

GROUP_SIZE = 8
RELEASED_SUBSET = 64
FILLER = ["the", "triangle", "side", "length", "angle", "median", "area", "point", "segment", "so",
          "therefore", "we", "compute", "half", "of", "equal", "because", "since", "then", "thus"]


def _gold(rng: random.Random) -> tuple[str, list[str], list[str]]:
    """(gold, other right forms, wrong answers)."""
    r = rng.random()
    if r < 0.6:
        v = rng.randrange(1, 200)
        return str(v), [f"{v} cm", f"$\\boxed{{{v}}}$", f"**{v}**", f"x = {v}", f"{v}."], \
            [str(v + d) for d in (1, 2, -1, 10)]
    if r < 0.7:
        v = rng.randrange(1, 99) / 4
        return f"{v}", [f"{v}0", f"$ {v} $"], [f"{v + 0.5}", f"{v * 2}"]
    if r < 0.8:
        a, b = rng.randrange(1, 9), rng.randrange(2, 9)
        return f"\\frac{{{a}}}{{{b}}}", [f"{a}/{b}", f"\\dfrac{{{a}}}{{{b}}}"], \
            [f"\\frac{{{a + 1}}}{{{b}}}", f"{b}/{a + b}"]
    if r < 0.95:
        letter = rng.choice("ABCD")
        return letter, [f"{letter}: {rng.randrange(10)}", f"({letter})"], \
            [c for c in "ABCD" if c != letter]
    word = rng.choice(["Yes", "No"])
    return word, [word.lower(), word.upper()], ["No" if word == "Yes" else "Yes"]


def _completion(rng: random.Random, final: str | None, lenient: bool) -> str:
    words = lambda n: " ".join(rng.choice(FILLER) for _ in range(n))  # noqa: E731
    text = (f"### Image Description:\n{words(30)}\n### Rationales:\n{words(25)}\n"
            "### Let's think step by step.\n")
    for step in range(1, 7):
        text += f"### Step {step}:\n{words(30)}.\n"
    if final is None:
        return text
    return text + ("The final answer is: " if lenient else "### The final answer is:\n") + final


def make_workload(problems: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(completions [problems * GROUP_SIZE], solutions [same]; a group shares its gold)."""
    rng = random.Random(seed)
    completions, solutions = [], []
    for _ in range(problems):
        gold, right, wrong = _gold(rng)
        for _ in range(GROUP_SIZE):
            r = rng.random()
            if r < 0.35:
                final = gold
            elif r < 0.5:
                final = rng.choice(right)
            elif r < 0.8:
                final = rng.choice(wrong)
            elif r < 0.9:
                w = rng.choice(wrong)
                final = rng.choice([f"{gold} or {w}", f"{w}, {gold}", f"{gold} (not {w})"])
            else:
                final = None if r < 0.95 else gold
            completions.append(_completion(rng, final, lenient=r >= 0.95))
            solutions.append(gold)
    return completions, solutions


_RELEASED_ANSWER = re.compile(r"### The final answer is:\s*\n?(.*)")
_REQUIRED = ("### Image Description:", "### Rationales:", "### Step 1:", "### The final answer is:")


def released_scores(completions: list[str], solutions: list[str]) -> list[float]:
    """The released reward code's way, written from its description: accuracy by math-verify on the
    whole completion (signal timeouts on the main thread) or the first answer line, + validity."""
    from math_verify import parse, verify

    out = []
    for text, sol in zip(completions, solutions):
        try:
            correct = float(verify(parse(text), parse(sol))) > 0
        except Exception:  # noqa: BLE001 - the released code ignores math-verify failures
            correct = False
        if not correct:
            m, g = _RELEASED_ANSWER.search(text), _RELEASED_ANSWER.search(sol)
            correct = (m.group(1).strip() if m else text.strip()) == \
                (g.group(1).strip() if g else sol.strip())
        valid = all(h in text for h in _REQUIRED) and [int(n) for n in re.findall(
            r"### Step (\d+):", text)] == list(range(1, len(re.findall(r"### Step \d+:", text)) + 1))
        out.append(float(correct) + float(valid))
    return out


def _clear_caches() -> None:
    from stepgrpo_fast.rewards import answer

    answer.gold_forms.cache_clear()
    answer._math_verify_outcome.cache_clear()
    answer._parse.cache_clear()


def run_answer_group(problems: int, rounds: int, log=print) -> list[dict]:
    from stepgrpo_fast.rewards import answer_check_stats, step_accuracy_reward, step_validity_reward

    completions, solutions = make_workload(problems)
    n = len(completions)
    subset = min(n, RELEASED_SUBSET)

    def ours(_=None):
        acc = step_accuracy_reward(completions, solutions, None, num_threads=1)
        val = step_validity_reward(completions, num_threads=1)
        return [a + v for a, v in zip(acc, val)]

    def released():
        return released_scores(completions[:subset], solutions[:subset])

    before = answer_check_stats()["math_verify_checks"]
    ours()  # warm-up (imports)
    released()
    _clear_caches()
    mv_calls = answer_check_stats()["math_verify_checks"] - before
    calls = {"ours": (ours, _clear_caches), "released": (released, None)}
    times, failed = time_interleaved(calls, rounds=rounds)
    mean_kb = sum(len(c.encode()) for c in completions) / n / 1024
    shape = f"completions={n} ~{mean_kb:.2f}KB group={GROUP_SIZE}"
    fields = {"group": "rewards", "op": "paper_accuracy+validity", "mode": "call", "shape": shape,
              "dtype": ""}
    rows = []
    for name, count in (("ours", n), ("released", subset)):
        if name in failed:
            rows.append(make_row(**fields, N=count, provider=name, threads=1,
                                 status=f"failed: {failed[name]}"))
            continue
        s = summarize(times[name])
        note = (f"math-verify calls in the warm-up pass: {mv_calls}" if name == "ours"
                else f"timed on the first {subset} completions")
        rows.append(make_row(**fields, N=count, provider=name, status="ok", threads=1,
                             repeats=s["repeats"], p20_s=s["p20_s"], p50_s=s["p50_s"],
                             p80_s=s["p80_s"], items_per_s=count / s["p50_s"],
                             items="completions", note=note))
        log(f"  rewards paper accuracy+validity {name:9s} p50 {s['p50_s'] * 1e3:9.2f} ms  "
            f"{count / s['p50_s']:12,.0f} completions/s")
    return rows
