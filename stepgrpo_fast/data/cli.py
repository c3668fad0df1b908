"""`stepgrpo data check`: decode and check every record of a data set before training on it.

    stepgrpo data check --data SOURCE [--column-map question=query image=img ...] [--json]
                        [--min-pixels N] [--max-pixels N] [--sft] [--workers N]

SOURCE: a JSON / JSONL / Parquet file, a folder of Parquet shards or of datasets' save_to_disk
(``DIR:split``), or a hub id ``org/name[:split]``. Prints a summary (records, layout, images per
record, records with key steps) and one ``source:line: reason`` line per bad record; exits 0
when every record is good, 2 when any is bad (or the source cannot be read).
"""

from __future__ import annotations

import argparse
import json
import sys

EXIT_BAD = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", required=True)
    check = sub.add_parser("check", help="decode and check every record of a data set",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("--data", required=True, help="the data source (see above)")
    check.add_argument("--column-map", "--column_map", nargs="+", default=None,
                       metavar="FIELD=COLUMN",
                       help="our field = your column, e.g. question=query solution=gt image=img "
                       "key_steps=steps (fields: image, images, question, solution, key_steps, "
                       "response)")
    check.add_argument("--min-pixels", type=int, default=3136,
                       help="the processor's min_pixels (training config min_pixels)")
    check.add_argument("--max-pixels", type=int, default=400_000,
                       help="the processor's max_pixels (training config max_pixels)")
    check.add_argument("--sft", action="store_true",
                       help="check for SFT: every record needs a reference response")
    check.add_argument("--workers", type=int, default=None,
                       help="threads decoding images (default: CPU cores, at most 8)")
    check.add_argument("--json", action="store_true",
                       help="print the summary as one JSON object (bad lines under bad_records)")


def run(args: argparse.Namespace) -> int:
    from stepgrpo_fast.data.checks import check_data, summary_lines

    try:
        summary = check_data(args.data, column_map=args.column_map, min_pixels=args.min_pixels,
                             max_pixels=args.max_pixels, require_response=args.sft,
                             workers=args.workers, progress=not args.json)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD
    if args.json:
        print(json.dumps(summary))
    else:
        print("\n".join(summary_lines(summary)))
        for line in summary["bad_records"]:
            print(line)
    return EXIT_BAD if summary["bad"] else 0
