"""A seeded, offline visual-reasoning task drawn with PIL, in the spec's record layout.

Four problem kinds, each small enough for a tiny model to learn on a CPU:
  add      two numbers written in the picture; their sum          (numbers also in the question
  area     a rectangle with labelled sides; its area               when ``text_hints`` is True)
  count    coloured shapes; how many have the asked colour          (needs the image)
  compare  two bars A and B; which is taller                        (needs the image)
Each problem has the answer, a reference reasoning in the exact "###" layout of docs/METHOD.md
§2 and key steps with several equivalent surface forms ("3 + 4 = 7", "3+4=7", "seven"); the
problem makers and that layout are in synthetic_problems.py (re-exported here), this module
draws them in seeded streams per split and writes the dataset.

``write_dataset(out_dir, seed=..., n_sft=..., n_rl=..., n_eval=...)`` writes sft/rl/eval JSONL
files (records: image, question, solution, key_steps, and "response" for SFT) with PNG images
stored next to them and referenced relatively. The eval split is held out: no eval problem
has the kind, question and image pixels of any SFT or RL problem (see ``generate_held_out``).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import random

# The problem kinds and the "###" layout live in synthetic_problems.py; they are re-exported here
# so that ``from stepgrpo_fast.synthetic.task import ...`` keeps giving every name of the task.
from .problems import (
    COLOURS,
    HEADER_DESCRIPTION,
    HEADER_FINAL,
    HEADER_RATIONALES,
    HEADER_THINK,
    KINDS,
    LAYOUT_FAULTS,
    RESPONSE_HEADERS,
    Problem,
    break_layout,
    format_response,
    make_add,
    make_area,
    make_compare,
    make_count,
    make_problem,
    number_word,
)

__all__ = [
    "COLOURS", "HEADER_DESCRIPTION", "HEADER_FINAL", "HEADER_RATIONALES", "HEADER_THINK", "KINDS",
    "LAYOUT_FAULTS", "RESPONSE_HEADERS", "SPLITS", "Problem", "break_layout", "corpus_texts",
    "fingerprint", "format_response", "generate", "generate_held_out", "make_add", "make_area",
    "make_compare", "make_count", "make_problem", "number_word", "write_dataset",
]

SPLITS = ("sft", "rl", "eval")


def _check_faults(layout_faults) -> tuple[str, ...]:
    faults = tuple(layout_faults)
    if not faults or any(f not in LAYOUT_FAULTS for f in faults):
        raise ValueError(f"layout_faults must be a non-empty subset of {LAYOUT_FAULTS}, got {faults}")
    return faults


def _kind_options(kind: str, text_hints: bool, max_value: int, carry_slip: float = 0.0) -> dict:
    if kind == "add":
        return {"max_value": max_value, "text_hints": text_hints, "carry_slip": carry_slip}
    if kind == "area":
        return {"max_value": max_value, "text_hints": text_hints}
    if kind == "compare":
        return {"max_value": max_value}
    return {}


def generate(
    seed: int,
    n: int,
    *,
    kinds=KINDS,
    split: str = "sft",
    text_hints: bool = True,
    max_value: int = 9,
    carry_slip: float = 0.0,
    layout_break: float = 0.0,
    layout_faults=LAYOUT_FAULTS,
) -> list[Problem]:
    """``n`` problems, kinds cycled in order, each from its own RNG stream keyed by
    (seed, split, index): the same call always gives the same problems, and the splits differ.
    ``carry_slip`` only changes the reference reasoning of carrying ``add`` sums (see make_add).
    ``layout_break``: share of problems whose reference reasoning has its layout broken by one
    of ``layout_faults`` (break_layout), drawn from a separate RNG stream keyed by (seed, split,
    index), so questions, pictures, solutions and key steps never depend on it, 0 changes
    nothing, and the problems broken at a lower share are also broken (the same way) at a
    higher one."""
    kinds = tuple(kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 2 <= max_value <= 9:
        raise ValueError(f"max_value must be in 2..9, got {max_value}")
    if not 0.0 <= carry_slip <= 1.0:
        raise ValueError(f"carry_slip must be in [0, 1], got {carry_slip}")
    if not 0.0 <= layout_break <= 1.0:
        raise ValueError(f"layout_break must be in [0, 1], got {layout_break}")
    faults = _check_faults(layout_faults)
    problems = [_problem_at(seed, split, i, kinds, text_hints, max_value, carry_slip) for i in range(n)]
    if layout_break > 0.0:
        for i, p in enumerate(problems):
            layout_rng = random.Random(f"{seed}/{split}/{i}/layout")
            if layout_rng.random() < layout_break:
                p.layout_fault = faults[layout_rng.randrange(len(faults))]
                p.response = break_layout(p.response, p.layout_fault)
    return problems


def _problem_at(seed: int, split: str, index: int, kinds: tuple, text_hints: bool,
                max_value: int, carry_slip: float = 0.0) -> Problem:
    rng = random.Random(f"{seed}/{split}/{index}")
    kind = kinds[index % len(kinds)]
    return make_problem(rng, kind, **_kind_options(kind, text_hints, max_value, carry_slip))


def fingerprint(problem: Problem) -> str:
    """Identity of a problem as the model sees it: kind, question and the image's pixels."""
    digest = hashlib.sha1(f"{problem.kind}\n{problem.question}\n".encode())
    digest.update(problem.image.tobytes())
    return digest.hexdigest()


def generate_held_out(
    seed: int,
    n: int,
    exclude,
    *,
    kinds=KINDS,
    text_hints: bool = True,
    max_value: int = 9,
    max_tries: int = 100,
) -> list[Problem]:
    """``n`` eval-split problems none of which has a fingerprint in ``exclude`` (the training
    problems' fingerprints) nor repeats another: the held-out set is disjoint from training.
    Candidates come from the eval stream in order, skipping collisions but keeping the kinds
    cycled; raises ValueError when the task is too small to give ``n`` fresh problems."""
    kinds = tuple(kinds)
    generate(seed, 0, kinds=kinds, split="eval", text_hints=text_hints, max_value=max_value)
    seen = set(exclude)
    problems: list[Problem] = []
    index = 0
    for slot in range(n):
        kind = kinds[slot % len(kinds)]
        for _ in range(max_tries * len(kinds)):
            # the eval stream's problem `index` has kind kinds[index % len(kinds)]
            while kinds[index % len(kinds)] != kind:
                index += 1
            problem = _problem_at(seed, "eval", index, kinds, text_hints, max_value)
            index += 1
            key = fingerprint(problem)
            if key not in seen:
                seen.add(key)
                problems.append(problem)
                break
        else:
            raise ValueError(f"could not draw {n} held-out {kinds} problems disjoint from training "
                             f"(max_value={max_value}): the task has too few distinct problems")
    return problems


def corpus_texts(seed: int = 0, num_problems: int = 400, *, kinds=KINDS) -> list[str]:
    """Questions, reference reasoning and key steps of ``num_problems`` problems (tokenizer corpus)."""
    texts = []
    for p in generate(seed, num_problems, kinds=kinds, split="sft"):
        texts += [p.question, p.response, p.solution, *(f for group in p.key_steps for f in group)]
    return texts


def write_dataset(
    out_dir,
    *,
    seed: int = 0,
    n_sft: int = 256,
    n_rl: int = 256,
    n_eval: int = 64,
    kinds=KINDS,
    text_hints: bool = True,
    max_value: int = 9,
    sft_carry_slip: float = 0.0,
    sft_layout_break: float = 0.0,
    sft_layout_faults=LAYOUT_FAULTS,
    rl_response: bool = False,
) -> dict[str, pathlib.Path]:
    """Write sft.jsonl, rl.jsonl, eval.jsonl (+ images/<split>_<i>.png) under ``out_dir``.

    Records: {"image", "question", "solution", "key_steps", "kind"} and, for SFT, "response".
    ``sft_carry_slip``: rate at which the SFT reference reasoning of a carrying sum drops the
    carry (a weak teacher's traces); RL and eval records carry no reasoning and are unaffected.
    ``sft_layout_break``: share of SFT traces whose "###" layout the weak teacher breaks with one
    of ``sft_layout_faults`` (see break_layout; 0 = none, the files are then those of a call
    without it). ``rl_response``: RL records also carry "response", the exact reference
    reasoning (what `stepgrpo keysteps` extracts key steps from).
    Returns {split: jsonl path}.
    """
    out_dir = pathlib.Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    paths = {}
    options = {"kinds": kinds, "text_hints": text_hints, "max_value": max_value}
    training: set[str] = set()
    for split, n in (("sft", n_sft), ("rl", n_rl), ("eval", n_eval)):
        if n < 0:
            raise ValueError(f"n_{split} must be >= 0, got {n}")
        path = out_dir / f"{split}.jsonl"
        if split == "eval":  # held out: no eval problem is a copy of an SFT or RL problem
            problems = generate_held_out(seed, n, training, **options)
        else:
            weak = ({"carry_slip": sft_carry_slip, "layout_break": sft_layout_break,
                     "layout_faults": sft_layout_faults} if split == "sft" else {})
            problems = generate(seed, n, split=split, **weak, **options)
            training.update(fingerprint(p) for p in problems)
        with open(path, "w") as f:
            for i, p in enumerate(problems):
                rel = f"images/{split}_{i:05d}.png"
                p.image.save(out_dir / rel)
                record = {
                    "image": rel,
                    "question": p.question,
                    "solution": p.solution,
                    "key_steps": p.key_steps,
                    "kind": p.kind,
                }
                if split == "sft" or (split == "rl" and rl_response):
                    record["response"] = p.response
                f.write(json.dumps(record) + "\n")
        paths[split] = path
    return paths
