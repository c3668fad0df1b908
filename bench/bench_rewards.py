"""Key-step matcher throughput: C++ (1 thread, all threads) vs the Python fallback vs a plain
regex + substring matcher written the way the released code works.

Workload: 4,096 synthetic completions of ~1.5 KB (1,024 problems x 4 sampled completions, as a
GRPO batch), each problem with 8 key-step groups x 3 surface forms; every completion gets its own
copy of its problem's key steps (as TRL passes them). Run: python -m bench.bench_rewards
Writes bench/results/rewards.{csv,json}. Providers run interleaved over several rounds; we report
the median wall time and the best CPU time (process_time, all threads) because wall time alone is
unreliable on an oversubscribed machine.
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import re
import statistics
import time
from pathlib import Path

from bench.common import write_results
from stepgrpo_fast.rewards import matching

NUM_PROBLEMS, GROUP_SIZE, NUM_GROUPS, NUM_FORMS = 1024, 4, 8, 3
FILLER = ["the", "triangle", "side", "length", "angle", "median", "area", "point", "segment", "so", "therefore", "we", "compute", "half", "of", "equal", "because", "since", "then", "thus", "note", "that", "using", "the", "given", "value"]
RESULTS = Path(__file__).resolve().parent / "results" / "rewards"


def _filler(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(FILLER) for _ in range(words))


def make_workload(seed: int = 0) -> tuple[list[str], list[list[list[str]]]]:
    """(completions (4096 str), key_steps (4096 lists of 8 groups x 3 forms))."""
    rng = random.Random(seed)
    completions, key_steps = [], []
    for p in range(NUM_PROBLEMS):
        groups = []
        for g in range(NUM_GROUPS):
            a, b = rng.randrange(2, 99), rng.randrange(2, 9)
            name = f"{rng.choice('ABCDEFGH')}{rng.choice('ABCDEFGH')}"
            groups.append([f"{name} = {a}/{b}", f"{name} = \\frac{{{a}}}{{{b}}}",
                           f"{name.lower()} equals {a} over {b}"])
        for _ in range(GROUP_SIZE):
            text = (f"### Image Description:\n{_filler(rng, 30)}\n### Rationales:\n{_filler(rng, 25)}\n"
                    "### Let's think step by step.\n")
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
    """The released way: regex step bodies, joined, lower-cased, `in` per form."""
    out = []
    for text, groups in zip(completions, key_steps):
        joined = " ".join(_RELEASED_STEP.findall(text)).lower()
        matched = sum(1 for forms in groups if any(f.lower() in joined for f in forms))
        out.append(matched / len(groups) if groups else 0.0)
    return out


def measure(providers: list, rounds: int) -> dict[int, dict]:
    """Wall and CPU (process_time: all threads) seconds per provider over `rounds` rounds.

    The providers run interleaved, one call each per round, so load changes on a shared machine
    hit all of them alike. Returns {index: {"wall": [...], "cpu": [...]}}.
    """
    times = {i: {"wall": [], "cpu": []} for i in range(len(providers))}
    for _ in range(rounds):
        for i, (_name, _mode, _threads, fn) in enumerate(providers):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[i]["wall"].append(time.perf_counter() - w0)
            times[i]["cpu"].append(time.process_time() - c0)
    return times


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    completions, key_steps = make_workload()
    n = len(completions)
    mean_kb = sum(len(c.encode()) for c in completions) / n / 1024
    all_threads = os.cpu_count() or 1
    ext = matching.EXT

    providers = [("plain regex+substring (released)", "official", 1,
                  lambda: plain_matcher(completions, key_steps))]
    for mode in ("official", "paper"):
        providers.append(("python fallback", mode, 1,
                          lambda m=mode: matching.match_batch_python(completions, key_steps, m)))
        if ext is not None:
            for threads in sorted({1, all_threads}):
                providers.append(("C++ _C", mode, threads,
                                  lambda m=mode, t=threads: ext.match_key_steps(completions, key_steps, m, t)))

    reference = {"official": plain_matcher(completions, key_steps),
                 "paper": matching.match_batch_python(completions, key_steps, "paper")}
    for name, mode, _threads, fn in providers:  # correctness first; also the warm-up call
        assert fn() == reference[mode], f"{name} ({mode}) disagrees with the reference"
    times = measure(providers, args.repeats)
    rows = []
    for i, (name, mode, threads, _fn) in enumerate(providers):
        wall, cpu = statistics.median(times[i]["wall"]), min(times[i]["cpu"])
        rows.append({"provider": name, "mode": mode, "threads": threads, "completions": n,
                     "mean_kb": round(mean_kb, 2), "groups": NUM_GROUPS, "forms": NUM_FORMS,
                     "rounds": args.repeats, "median_wall_s": wall, "min_wall_s": min(times[i]["wall"]),
                     "min_cpu_s": cpu, "completions_per_s": n / wall,
                     "completions_per_cpu_s": n / cpu})
    plain = rows[0]
    for r in rows:
        r["speedup_vs_plain"] = plain["median_wall_s"] / r["median_wall_s"]
        r["cpu_speedup_vs_plain"] = plain["min_cpu_s"] / r["min_cpu_s"]
    csv_path, json_path = write_results(rows, args.out)

    print(f"{n} completions, {mean_kb:.2f} KB each, {NUM_GROUPS} groups x {NUM_FORMS} forms; "
          f"mean k = {sum(reference['official']) / n:.3f} (official), "
          f"{sum(reference['paper']) / n:.3f} (paper)")
    print(f"median wall time and best CPU time over {args.repeats} interleaved rounds "
          f"({all_threads} hardware threads)")
    print("| matcher | mode | threads | completions/s (wall) | vs plain | completions per CPU-s | vs plain |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['provider']} | {r['mode']} | {r['threads']} | {r['completions_per_s']:,.0f} | "
              f"{r['speedup_vs_plain']:.1f}x | {r['completions_per_cpu_s']:,.0f} | "
              f"{r['cpu_speedup_vs_plain']:.1f}x |")
    print(f"wrote {csv_path} and {json_path}")
    return rows


if __name__ == "__main__":
    main()
