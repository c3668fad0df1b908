"""`stepgrpo demo`: an offline end-to-end StepGRPO run on the synthetic visual-reasoning task.

    synthetic data (sft / rl / eval JSONL + PNG)  ->  tiny Qwen2-VL with its own tokenizer
    ->  SFT warm-up  ->  held-out greedy eval  ->  StepGRPO from the SFT checkpoint (which is also
    the frozen KL reference)  ->  held-out greedy eval  ->  DIR/report.md, DIR/report.json, PNGs

    stepgrpo demo [--out DIR] [--seed S | --seeds 0,1,2] [--ablation] [--set STAGE.KEY=VALUE ...]

Hyperparameters live in the demo's own configs, demo scale (large learning rates, few steps,
short completions), never in the library defaults:
    stepgrpo_fast/configs/demo_sft.yaml       SFTConfig of the warm-up
    stepgrpo_fast/configs/demo_stepgrpo.yaml  StepGRPOConfig of the RL stage
    DemoSettings (demo/settings.py)           data sizes, task mix, model size, eval, CPU threads
``--set sft.max_steps=40``, ``--set rl.learning_rate=1e-4``, ``--set demo.n_eval=32`` override
any of them. ``--ablation`` adds the paper's Table 2 (StepRAR only / StepRVR only / both) and
Table 4 (outcome-only reward vs step-wise reward) as extra RL runs from the same SFT checkpoint.

Modules: settings (DemoSettings, stage configs, output directory), pipeline (the stages and
report.json), seeds (several seeds, mean +- std), report (plots and markdown), cli (arguments).
"""

from .cli import add_arguments, parse_seeds, run
from .pipeline import (
    ablation_tables,
    evaluate_checkpoint,
    machine_summary,
    per_kind_accuracy,
    read_curve,
    read_loss_curve,
    run_demo,
    train_rl_variant,
)
from .report import (
    plot_ablation,
    plot_before_after,
    plot_reward_curve,
    report_markdown,
    summary_markdown,
)
from .seeds import mean_std, run_seeds, summarize_seeds
from .settings import (
    CONFIG_DIR,
    MARKER,
    METRICS,
    OWNED_ENTRIES,
    RL_CONFIG,
    RL_VARIANTS,
    SFT_CONFIG,
    STAGES,
    DemoSettings,
    load_stage_configs,
    make_settings,
    prepare_out_dir,
    split_overrides,
)

__all__ = [
    "CONFIG_DIR", "MARKER", "METRICS", "OWNED_ENTRIES", "RL_CONFIG", "RL_VARIANTS", "SFT_CONFIG",
    "STAGES", "DemoSettings", "ablation_tables", "add_arguments", "evaluate_checkpoint",
    "load_stage_configs", "machine_summary", "make_settings", "mean_std", "parse_seeds",
    "per_kind_accuracy", "plot_ablation", "plot_before_after", "plot_reward_curve",
    "prepare_out_dir", "read_curve", "read_loss_curve", "report_markdown", "run", "run_demo",
    "run_seeds", "split_overrides", "summarize_seeds", "summary_markdown", "train_rl_variant",
]
