"""The StepRAR key-step matcher: C++ extension (1 and 2 threads) vs the pure-Python fallback (the
baseline, what an install without a compiler runs) vs a plain regex + substring matcher written
the way the released code works (official mode only: it has no normalisation).

Workload: ``problems`` synthetic problems x GROUP_SIZE sampled completions of ~1.5 KB each (a GRPO
batch), each problem with NUM_GROUPS key-step groups x NUM_FORMS surface forms; every completion
gets its own copy of its problem's key steps (as TRL passes them). All providers must agree with
the reference before anything is timed. The C++ rows run through the public
``stepgrpo_fast.rewards.match_key_steps(..., num_threads=t)``; the fallback through
``matching.match_batch_python`` (what STEPGRPO_DISABLE_EXT=1 selects), in the same process, so the
providers interleave. Peak memory is not measured here (no torch tensors: the profiler cannot see
these allocations). Then rewards_answers.run_answer_group: paper-mode accuracy + validity per
completion, ours vs the released functions.
"""
from __future__ import annotations

import copy
import random
import re

from .rewards_answers import run_answer_group
from .rows import make_row
from .timing import summarize, time_interleaved

GROUP_SIZE, NUM_GROUPS, NUM_FORMS = 4, 8, 3
MODES = ("official", "paper")
BASELINE = "python_fallback"
FILLER = ["the", "triangle", "side", "length", "angle", "median", "area", "point", "segment", "so",
          "therefore", "we", "compute", "half", "of", "equal", "because", "since", "then", "thus",
          "note", "that", "using", "given", "value"]


def _filler(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(FILLER) for _ in range(words))


def make_workload(problems: int, seed: int = 0) -> tuple[list[str], list[list[list[str]]]]:
    """(completions [problems * GROUP_SIZE] str, key_steps: one list of NUM_GROUPS x NUM_FORMS
    per completion)."""
    rng = random.Random(seed)
    completions, key_steps = [], []
    for _ in range(problems):
        groups = []
        for _ in range(NUM_GROUPS):
            a, b = rng.randrange(2, 99), rng.randrange(2, 9)
            name = f"{rng.choice('ABCDEFGH')}{rng.choice('ABCDEFGH')}"
            groups.append([f"{name} = {a}/{b}", f"{name} = \\frac{{{a}}}{{{b}}}",
                           f"{name.lower()} equals {a} over {b}"])
        for _ in range(GROUP_SIZE):
            text = (f"### Image Description:\n{_filler(rng, 30)}\n### Rationales:\n"
                    f"{_filler(rng, 25)}\n### Let's think step by step.\n")
            for step in range(1, 7):
                text += f"### Step {step}:\n{_filler(rng, 22)}"
                for group in rng.sample(groups, 2):
                    if rng.random() < 0.6:
                        text += f" {rng.choice(group)},"
                text += f" {_filler(rng, 6)}.\n"
            text += f"### The final answer is:\n{rng.randrange(100)}"
            completions.append(text)
            key_steps.append(copy.deepcopy(groups))
    return completions, key_steps


_RELEASED_STEP = re.compile(r"### Step \d+:\s*(.*?)(?=\n###|\Z)", re.DOTALL)


def plain_matcher(completions: list[str], key_steps: list) -> list[float]:
    """The released way: regex step bodies, joined, lower-cased, ``in`` per form."""
    out = []
    for text, groups in zip(completions, key_steps):
        joined = " ".join(_RELEASED_STEP.findall(text)).lower()
        matched = sum(1 for forms in groups if any(f.lower() in joined for f in forms))
        out.append(matched / len(groups) if groups else 0.0)
    return out


def providers(mode: str, completions, key_steps, threads=(1, 2)) -> tuple[dict, dict]:
    """(name -> (threads, fn), name -> why unavailable)."""
    from stepgrpo_fast.rewards import matching

    fns = {BASELINE: (1, lambda: matching.match_batch_python(completions, key_steps, mode))}
    missing = {}
    for t in threads:
        name = f"cpp_{t}thread" + ("s" if t > 1 else "")
        if matching.EXT is None:
            missing[name] = ("C++ extension stepgrpo_fast._C not loaded (not built, or "
                             "STEPGRPO_DISABLE_EXT=1)")
            continue
        fns[name] = (t, lambda t=t: matching.match_key_steps(completions, key_steps, mode=mode,
                                                             num_threads=t))
    fns["released_regex"] = (1, lambda: plain_matcher(completions, key_steps))
    return fns, missing


def run_group(problems: int, rounds: int, log=print) -> list[dict]:
    completions, key_steps = make_workload(problems)
    n = len(completions)
    mean_kb = sum(len(c.encode()) for c in completions) / n / 1024
    shape = f"completions={n} ~{mean_kb:.2f}KB groups={NUM_GROUPS}x{NUM_FORMS}"
    rows = []
    for mode in MODES:
        fns, missing = providers(mode, completions, key_steps)
        reference = fns[BASELINE][1]()
        for name, (_, fn) in fns.items():  # correctness first; also the warm-up call
            if fn() != reference and not (name == "released_regex" and mode == "paper"):
                raise RuntimeError(f"rewards: {name} ({mode}) disagrees with the Python fallback")
        times, failed = time_interleaved({k: (fn, None) for k, (_, fn) in fns.items()},
                                         rounds=rounds)
        fields = {"group": "rewards", "op": f"match_key_steps[{mode}]", "mode": "call", "N": n,
                  "shape": shape, "dtype": ""}
        for name, why in missing.items():
            rows.append(make_row(**fields, provider=name, status=f"unavailable: {why}"))
        for name, (threads, _) in fns.items():
            if name in failed:
                rows.append(make_row(**fields, provider=name, threads=threads,
                                     status=f"failed: {failed[name]}"))
                continue
            s = summarize(times[name])
            rows.append(make_row(**fields, provider=name, status="ok", threads=threads,
                                 repeats=s["repeats"], p20_s=s["p20_s"], p50_s=s["p50_s"],
                                 p80_s=s["p80_s"], items_per_s=n / s["p50_s"],
                                 items="completions"))
            log(f"  rewards {mode:8s} {name:16s} p50 {s['p50_s'] * 1e3:9.2f} ms  "
                f"{n / s['p50_s']:12,.0f} completions/s")
    return rows + run_answer_group(problems, rounds, log)
