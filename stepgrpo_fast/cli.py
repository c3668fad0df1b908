"""`stepgrpo` command line. Each subcommand lives in its own module exposing
``add_arguments(parser)`` and ``run(args) -> int``; this file only dispatches."""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> ("module[:add_arguments_fn:run_fn]", one-line help); the functions default to
# add_arguments / run.
COMMANDS = {
    "demo": ("stepgrpo_fast.demo", "offline end-to-end demo: synthetic task, tiny model, SFT, StepGRPO, report"),
    "sft": ("stepgrpo_fast.trainer.cli:add_sft_arguments:run_sft",
            "SFT warm-up (NLL through the fused log-prob op)"),
    "train": ("stepgrpo_fast.trainer.cli:add_train_arguments:run_train",
              "StepGRPO online RL from a YAML config"),
    "eval": ("stepgrpo_fast.trainer.cli:add_eval_arguments:run_eval",
             "greedy eval of a checkpoint (accuracy, validity, key-step match, reward); "
             "--format mathvista|mcq|open: benchmark accuracy, also of given completions"),
    "export": ("stepgrpo_fast.trainer.cli:add_export_arguments:run_export",
               "merge a use_peft run's LoRA adapter into its base: a full checkpoint (--merge)"),
    "reward": ("stepgrpo_fast.rewards.cli", "score completions in a JSONL file with StepRAR/StepRVR"),
    "keysteps": ("stepgrpo_fast.keysteps.cli", "extract StepRAR key steps from the reference reasoning of a JSONL file"),
    "data": ("stepgrpo_fast.data.cli", "data check: decode and check every record of a data set "
             "(JSON/JSONL, Parquet, save_to_disk, hub id) before training"),
    "bench": ("stepgrpo_fast.bench.cli", "run the benchmark suite (same runner as python -m bench)"),
    "gpu-check": ("stepgrpo_fast.gpu.check", "CUDA machine: GPU tests + fwd/bwd TFLOP/s report"),
    "kernel-table": ("stepgrpo_fast.gpu.kernel_table", "AOT-compile Triton kernels: sm_80/90 table"),
}


# Optional dependencies a subcommand may need, by top-level module name -> how to install it.
# A plain `pip install .` lacks them; the subcommand then says what to install (exit 3) instead
# of dying with a traceback.
MISSING_EXIT = 3
OPTIONAL_DEPENDENCIES = {
    "triton": "pip install 'stepgrpo_fast[triton]'  (or: pip install triton)",
    "trl": "pip install 'stepgrpo_fast[trl]'",
    "datasets": "pip install 'stepgrpo_fast[trl]'",
    "liger_kernel": "pip install 'stepgrpo_fast[bench]'",
    "pytest": "pip install 'stepgrpo_fast[test]'",
    "pytest_benchmark": "pip install 'stepgrpo_fast[bench]'",
    "deepspeed": "pip install 'stepgrpo_fast[deepspeed]'",
    "tensorboard": "pip install 'stepgrpo_fast[logging]'",
    "wandb": "pip install 'stepgrpo_fast[logging]'",
    "peft": "pip install 'stepgrpo_fast[peft]'",
}


def missing_dependency(exc: ModuleNotFoundError) -> str | None:
    """The install hint for an optional dependency ``exc`` reports missing, else None."""
    top = (exc.name or "").split(".")[0]
    hint = OPTIONAL_DEPENDENCIES.get(top)
    return None if hint is None else f"{top} is not installed; install it with: {hint}"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; only ``command``'s module is imported (all of them when None), so one
    subcommand's heavy or broken imports never get in the way of another."""
    parser = argparse.ArgumentParser(prog="stepgrpo", description="StepGRPO training backend")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command is not None and name != command:
            continue
        target, _, names = module.partition(":")
        add_name, run_name = names.split(":") if names else ("add_arguments", "run")
        mod = importlib.import_module(target)
        getattr(mod, add_name)(p)
        p.set_defaults(_run=getattr(mod, run_name))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(command if command in COMMANDS else None)
        args = parser.parse_args(argv)
        return int(args._run(args) or 0)
    except ModuleNotFoundError as exc:
        message = missing_dependency(exc)
        if message is None:
            raise
        print(f"stepgrpo {command or ''}: {message}".replace("  ", " "), file=sys.stderr)
        return MISSING_EXIT


if __name__ == "__main__":
    sys.exit(main())
