"""`stepgrpo sft`, `stepgrpo train` and `stepgrpo eval`.

    stepgrpo sft   --config sft.yaml      [--set key=value ...] [--resume [CHECKPOINT]]
    stepgrpo train --config stepgrpo.yaml [--set key=value ...] [--resume [CHECKPOINT]]
    stepgrpo eval  --model DIR --data FILE.jsonl [--max-new-tokens N] [--predictions OUT.jsonl]
    stepgrpo eval  --format mathvista|mcq|open --data BENCH.json
                   (--model DIR [--prompt training|released] | --completions FILE.jsonl)
    stepgrpo export --model ADAPTER_DIR --merge --out DIR [--base BASE_DIR]

Both training commands run the same under ``accelerate launch [--config_file ...] -m
stepgrpo_fast.cli train ...``. Heavy imports (torch, transformers) happen inside the run_*
functions so that ``stepgrpo --help`` stays fast. A bad config, bad data or a corrupt
checkpoint prints one ``error: ...`` line (naming the file / line / field) and exits with 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_USAGE = 2


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="YAML file with the run's options (see stepgrpo_fast/configs/)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one option (repeatable), e.g. --set learning_rate=1e-6; every option is "
        "also a flag, e.g. --learning_rate 1e-6 (all listed below)",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="CHECKPOINT",
        help="continue from the latest verified checkpoint in output_dir, or from CHECKPOINT",
    )


def _list_options(parser: argparse.ArgumentParser, kind: str) -> None:
    """Every option of the run config as a ``--KEY VALUE`` flag (config_flags.py); --help ends
    with each one's type, default and meaning."""
    from stepgrpo_fast.trainer.config import SFTConfig, StepGRPOConfig
    from stepgrpo_fast.trainer.config.flags import add_option_flags
    from stepgrpo_fast.trainer.config.names import options_help

    cls = SFTConfig if kind == "sft" else StepGRPOConfig
    add_option_flags(parser, cls)
    parser.epilog = options_help(cls)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def add_sft_arguments(parser: argparse.ArgumentParser) -> None:
    _add_training_arguments(parser)
    _list_options(parser, "sft")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    _add_training_arguments(parser)
    _list_options(parser, "stepgrpo")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None,
        help="checkpoint directory (e.g. OUTPUT/final_model); not needed with --completions",
    )
    parser.add_argument(
        "--data", required=True,
        help="records: JSON / JSONL, Parquet file or folder, a save_to_disk folder or a hub id, "
        "in any layout of docs/data.md (with --format: the benchmark's own records, e.g. "
        "MathVista testmini)",
    )
    parser.add_argument(
        "--column-map", nargs="+", default=None, metavar="FIELD=COLUMN",
        help="without --format: the data's columns for our fields, e.g. question=query "
        "solution=gt image=img key_steps=steps (default: the map saved with the model, if any)",
    )
    parser.add_argument(
        "--format", dest="benchmark_format", choices=("mathvista", "mcq", "open"), default=None,
        help="score a benchmark file with that format's rules (accuracy per question type / "
        "source) instead of the StepGRPO rewards",
    )
    parser.add_argument(
        "--completions", default=None,
        help="with --format: score these {\"pid\", \"completion\"} JSONL lines instead of "
        "generating (no model loaded, no image opened)",
    )
    parser.add_argument(
        "--prompt", choices=("training", "released"), default="training",
        help="with --format and --model: the training reasoning prompt or our wording of the "
        "released evaluator's (both ask for the ### layout)",
    )
    parser.add_argument(
        "--prompt-template", choices=("default", "r1vl"), default=None,
        help="without --format: the user-turn layout (config prompt_template); default: the one "
        "in the model dir's training_config.yaml / config.yaml, else 'default'",
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--reward-mode", choices=("paper", "official"), default="paper")
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N records")
    parser.add_argument(
        "--predictions", default=None, help="write per-record completions to this JSONL"
    )
    parser.add_argument("--output", default=None, help="write the metrics JSON to this file too")
    parser.add_argument(
        "--device", default=None, help="cpu / cuda / cuda:1 (default: cuda when available)"
    )
    parser.add_argument("--max-pixels", type=int, default=None)


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True,
        help="a use_peft run's adapter directory (OUTPUT/final_model or OUTPUT/checkpoint-N)",
    )
    parser.add_argument(
        "--merge", action="store_true",
        help="merge the LoRA adapter into the base weights (the one export mode; required)",
    )
    parser.add_argument("--out", required=True, help="new directory for the merged checkpoint")
    parser.add_argument(
        "--base", default=None,
        help="the base checkpoint (default: base_model_name_or_path in adapter_config.json)",
    )


def run_export(args: argparse.Namespace) -> int:
    """Merge a LoRA adapter into its base: a full checkpoint (weights in the base's dtype, config,
    tokenizer / processor files) that `stepgrpo eval` and from_pretrained load."""
    from stepgrpo_fast.trainer.model.export import export_merged

    try:
        if not args.merge:
            raise ValueError("export writes merged checkpoints only: pass --merge")
        out = export_merged(args.model, args.out, base=args.base)
    except _user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps({"merged": str(out), "adapter": str(args.model)}, indent=2))
    return 0


def _user_errors() -> tuple[type[BaseException], ...]:
    from stepgrpo_fast.trainer.checkpoint import CorruptCheckpointError

    return (ValueError, TypeError, FileNotFoundError, CorruptCheckpointError)


def _train(kind: str, args: argparse.Namespace) -> int:
    from stepgrpo_fast.trainer import preemption
    from stepgrpo_fast.trainer.config.flags import given_options
    from stepgrpo_fast.trainer.loop import run_config

    config_cls, run = run_config(kind)
    try:
        config = config_cls.from_yaml(args.config, overrides=args.overrides,
                                      options=given_options(args, config_cls))
        summary = run(config, resume=args.resume)
    except _user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except preemption.Preempted as exc:   # exit 128 + signum, whatever the launcher sends next
        preemption.ignore_while_exiting(exc)
        raise
    _print_summary(summary)
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(json.dumps(summary, indent=2, default=str))


def run_sft(args: argparse.Namespace) -> int:
    return _train("sft", args)


def run_train(args: argparse.Namespace) -> int:
    return _train("stepgrpo", args)


def _eval_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from stepgrpo_fast.trainer.evaluate import evaluate_benchmark

    if args.completions is not None and args.model is not None:
        raise ValueError("give --model or --completions, not both")
    if args.completions is None and args.model is None:
        raise ValueError("--format needs --model DIR (generate) or --completions FILE (score)")
    return evaluate_benchmark(
        args.data,
        args.benchmark_format,
        completions_path=args.completions,
        model_dir=args.model,
        prompt=args.prompt,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        limit=args.limit,
        predictions_path=args.predictions,
        device=args.device,
        max_pixels=args.max_pixels,
    )


def run_eval(args: argparse.Namespace) -> int:
    from stepgrpo_fast.trainer.evaluate import evaluate

    try:
        if args.benchmark_format is not None:
            result = _eval_benchmark(args)
        elif args.completions is not None:
            raise ValueError("--completions needs --format mathvista|mcq|open")
        elif args.model is None:
            raise ValueError("--model DIR is required (or --format ... --completions FILE)")
        else:
            result = evaluate(
                args.model,
                args.data,
                batch_size=args.batch_size,
                max_new_tokens=args.max_new_tokens,
                reward_mode=args.reward_mode,
                alpha=args.alpha,
                limit=args.limit,
                predictions_path=args.predictions,
                device=args.device,
                max_pixels=args.max_pixels,
                prompt_template=args.prompt_template,
                column_map=args.column_map,
            )
    except _user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m stepgrpo_fast.trainer.cli sft|train|eval|export ...`` (what ``accelerate launch
    -m`` needs): the ``stepgrpo`` command line itself (stepgrpo_fast/cli.py)."""
    from stepgrpo_fast.cli import main as stepgrpo_main

    return stepgrpo_main(argv)


if __name__ == "__main__":
    sys.exit(main())
