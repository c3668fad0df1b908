"""`stepgrpo keysteps`: write StepRAR key steps for the reference reasoning of a JSONL file.

    stepgrpo keysteps --data IN.jsonl --out OUT.jsonl [--max-groups K] [--model PATH]
                      [--skip-missing] [--field response]

Exit status 0 on success, 2 on bad input (the message names FILE:LINE), nothing written then.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .rules import DEFAULT_MAX_GROUPS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path,
                        help="input JSONL: records with a reference reasoning in the ### layout")
    parser.add_argument("--out", required=True, type=Path,
                        help="output JSONL: the same records with 'key_steps' (may equal --data)")
    parser.add_argument("--max-groups", type=int, default=DEFAULT_MAX_GROUPS, metavar="K",
                        help=f"at most K key-step groups per record, most informative first "
                             f"(default {DEFAULT_MAX_GROUPS})")
    parser.add_argument("--model", default=None, metavar="PATH",
                        help="local HF causal LM / VLM checkpoint that proposes the key steps "
                             "(each kept only if found in the reasoning); default: rule-based")
    parser.add_argument("--skip-missing", action="store_true",
                        help="copy records without a reasoning unchanged instead of stopping")
    parser.add_argument("--field", default="response",
                        help="record field holding the reference reasoning (default: response)")
    parser.add_argument("--device", default=None, help="--model device (default: cuda if available)")
    parser.add_argument("--batch-size", type=int, default=8, help="--model prompts per generate call")
    parser.add_argument("--max-new-tokens", type=int, default=128,
                        help="--model generation length (default 128)")


def run(args: argparse.Namespace) -> int:
    from .jsonl import extract_file

    try:
        summary = extract_file(args.data, args.out, max_groups=args.max_groups, model=args.model,
                               skip_missing=args.skip_missing, reasoning_field=args.field,
                               device=args.device, batch_size=args.batch_size,
                               max_new_tokens=args.max_new_tokens)
    except (ValueError, TypeError) as exc:
        print(f"stepgrpo keysteps: error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary.lines()))
    return 0
