"""`stepgrpo reward`: score a JSONL file of completions with StepRAR + StepRVR.

Each line is a record with "completion" (a string or conversation) or "completions" (a list of
them), "solution" (string, number or null) and optionally "key_steps" (list of groups or the
released {"Steps": [...]} dict). Per record: accuracy (StepRAR), validity (StepRVR), key-step
match k and reward = accuracy + validity. Malformed lines are reported as FILE:LINE and skipped,
or stop the run with exit status 1 under --strict. Exit status 1 too when no record at all was
scored (an empty file, or every line malformed), after the summary.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .inputs import MODES

PROGRESS_MIN_BYTES = 1 << 20  # show a progress bar for files of at least 1 MiB


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="input JSONL file")
    parser.add_argument("--mode", choices=MODES, default="paper",
                        help="reward rules: the paper's (default) or the released code's")
    parser.add_argument("--out", type=Path, default=None, help="write per-record scores (JSONL)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 at the first malformed line instead of skipping it")
    parser.add_argument("--num-threads", type=int, default=0,
                        help="C++ matcher threads (0 = all cores)")
    parser.add_argument("--alpha", type=float, default=0.1, help="StepRAR key-step weight")
    parser.add_argument("--batch-size", type=int, default=1024,
                        help="completions scored per batch")
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")


@dataclass
class _Record:
    line: int
    texts: list[str]
    solution: str | None
    key_steps: object
    many: bool  # "completions" (lists in the output) rather than "completion"
    record_id: object = None


@dataclass
class _Totals:
    records: int = 0
    skipped: int = 0
    values: dict = field(default_factory=lambda: {k: [] for k in
                                                  ("accuracy", "validity", "key_step_match", "reward")})


def _parse_record(raw: str, line: int) -> _Record:
    from .inputs import completion_text, solution_text
    from .matching import canonical_key_steps

    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise TypeError(f"a record must be a JSON object, got {type(record).__name__}")
    if ("completion" in record) == ("completions" in record):
        raise ValueError("a record needs exactly one of 'completion' or 'completions'")
    if "solution" not in record:
        raise ValueError("missing 'solution' (use null when there is none)")
    many = "completions" in record
    items = record["completions"] if many else [record["completion"]]
    if many and (not isinstance(items, list) or not items):
        raise ValueError("'completions' must be a non-empty list")
    texts = [completion_text(c, i) for i, c in enumerate(items)]
    solution = solution_text(record["solution"], 0)
    key_steps = record.get("key_steps")
    canonical_key_steps(key_steps, 0)  # type check only
    return _Record(line, texts, solution, key_steps, many, record.get("id"))


def _score(batch: list[_Record], args, totals: _Totals, out) -> None:
    from . import match_key_steps, step_accuracy_reward, step_validity_reward

    texts = [t for r in batch for t in r.texts]
    solutions = [r.solution for r in batch for _ in r.texts]
    key_steps = [r.key_steps for r in batch for _ in r.texts]
    kw = {"mode": args.mode, "num_threads": args.num_threads}
    accuracy = step_accuracy_reward(texts, solutions, key_steps, alpha=args.alpha, **kw)
    validity = step_validity_reward(texts, **kw)
    k = match_key_steps(texts, key_steps, **kw)
    start = 0
    for r in batch:
        end = start + len(r.texts)
        scores = {"accuracy": accuracy[start:end], "validity": validity[start:end],
                  "key_step_match": k[start:end],
                  "reward": [a + v for a, v in zip(accuracy[start:end], validity[start:end])]}
        for name, values in scores.items():
            totals.values[name].extend(values)
        if out is not None:
            row = {"line": r.line}
            if r.record_id is not None:
                row["id"] = r.record_id
            row.update(scores if r.many else {name: v[0] for name, v in scores.items()})
            out.write(json.dumps(row) + "\n")
        start = end
    totals.records += len(batch)


def _summary(args, totals: _Totals, backend: str) -> str:
    n = len(totals.values["reward"])
    lines = [f"stepgrpo reward: {args.data} (mode={args.mode}, backend={backend})",
             (f"records scored: {totals.records}   completions: {n}   malformed lines skipped: "
              f"{totals.skipped}"),
             f"{'metric':<18}{'mean':>8}{'min':>8}{'max':>8}"]
    for name, label in (("accuracy", "accuracy (StepRAR)"), ("validity", "validity (StepRVR)"),
                        ("key_step_match", "key-step match k"), ("reward", "total reward")):
        values = totals.values[name]
        if values:
            lines.append(f"{label:<18}{sum(values) / n:>8.4f}{min(values):>8.4f}{max(values):>8.4f}")
        else:
            lines.append(f"{label:<18}{'-':>8}{'-':>8}{'-':>8}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .matching import BACKEND

    path: Path = args.data
    if not path.is_file():
        print(f"stepgrpo reward: {path}: no such file", file=sys.stderr)
        return 2
    if args.num_threads < 0 or args.batch_size < 1:
        print("stepgrpo reward: --num-threads must be >= 0 and --batch-size >= 1", file=sys.stderr)
        return 2
    size = path.stat().st_size
    totals = _Totals()
    batch: list[_Record] = []
    pending = 0
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(args.out, "w", encoding="utf-8")) if args.out else None
        bar = stack.enter_context(tqdm(total=size, unit="B", unit_scale=True, desc="scoring",
                                       file=sys.stderr,
                                       disable=args.no_progress or size < PROGRESS_MIN_BYTES))
        f = stack.enter_context(open(path, "rb"))
        for line_no, raw in enumerate(f, start=1):
            bar.update(len(raw))
            try:
                text = raw.decode("utf-8")
                if not text.strip():
                    continue
                record = _parse_record(text, line_no)
            except (TypeError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
                print(f"{path}:{line_no}: {exc}", file=sys.stderr)
                if args.strict:
                    return 1
                totals.skipped += 1
                continue
            batch.append(record)
            pending += len(record.texts)
            if pending >= args.batch_size:
                _score(batch, args, totals, out)
                batch, pending = [], 0
        if batch:
            _score(batch, args, totals, out)
    print(_summary(args, totals, BACKEND))
    if totals.records == 0:
        reason = (f"all {totals.skipped} non-empty lines were malformed" if totals.skipped
                  else "it holds no records")
        print(f"stepgrpo reward: {path}: nothing was scored ({reason})", file=sys.stderr)
        return 1
    return 0
