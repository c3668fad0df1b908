"""Demo settings: the DemoSettings dataclass (``--set demo.KEY=VALUE``), the RL variants of the
ablation, the demo's stage configs (``configs/demo_sft.yaml``, ``configs/demo_stepgrpo.yaml``) with
``--set sft.* / rl.*`` overrides, and the output directory the demo owns."""
from __future__ import annotations

import dataclasses
import shutil
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
SFT_CONFIG = CONFIG_DIR / "demo_sft.yaml"
RL_CONFIG = CONFIG_DIR / "demo_stepgrpo.yaml"
MARKER = ".stepgrpo_demo"            # marks a directory the demo created (safe to overwrite)
OWNED_ENTRIES = ("data", "model", "sft", "stepgrpo", "ablation", "sft.yaml", "stepgrpo.yaml",
                 "report.md", "report.json",
                 "reward_curve.png", "before_after.png", "ablation.png", "predictions_sft.jsonl",
                 "predictions_stepgrpo.jsonl", "summary.md", "summary.json")
METRICS = ("accuracy", "validity", "key_step_match", "reward")
STAGES = ("sft", "rl", "demo")

# RL variants of the ablation: name -> (label, StepGRPOConfig overrides). "stepgrpo" is the main run.
RL_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "stepgrpo": ("StepRAR + StepRVR (StepGRPO)", {}),
    "step_rar": ("StepRAR only", {"reward_weights": [1.0, 0.0]}),
    "step_rvr": ("StepRVR only", {"reward_weights": [0.0, 1.0]}),
    "outcome": ("outcome-only reward (answer correct: 1, else 0)",
                {"reward_weights": [1.0, 0.0], "alpha": 0.0}),
}


@dataclass
class DemoSettings:
    """Data, model and evaluation sizes of the demo (``--set demo.KEY=VALUE``)."""

    n_sft: int = 512                   # SFT records (with reference reasoning)
    n_rl: int = 256                    # RL prompts (question, solution, key steps)
    n_eval: int = 256                  # held-out problems (disjoint from SFT / RL), greedy decoding
    # "count" is left out by default: the tiny vision tower does not learn to count within the
    # demo's budget (SFT answers one constant count), so its accuracy is chance and only adds
    # seed noise; ``--set demo.kinds=[add,area,count,compare]`` puts it back.
    kinds: list[str] = field(default_factory=lambda: ["add", "area", "compare"])
    text_hints: bool = True            # add / area questions also state the numbers
    max_value: int = 9                 # operands 1..max_value (2..9): 81 sums, 64 areas, 72 bar pairs
    # The SFT traces come from a weak teacher that drops the carry in this share of the carrying
    # sums ("7 + 8 = 5"); RL's verifiable reward (answer + key step "7 + 8 = 15") has to repair it.
    sft_carry_slip: float = 0.7
    # ... and breaks the "###" layout of this share of its traces (misnumbered steps, no
    # Rationales section, the answer before the steps; data.synthetic.break_layout), so that
    # StepRVR has something to reward. 0 (the default) leaves the traces as they were. Each
    # broken trace gets one of ``sft_layout_faults`` (uniformly): with all three, none is ever the
    # majority, so greedy decoding after SFT stays valid and only sampled completions break;
    # one fault at a share above 0.5 makes the SFT model's greedy layout invalid too.
    sft_layout_break: float = 0.0
    sft_layout_faults: list[str] = field(
        default_factory=lambda: ["misnumbered", "no_rationales", "answer_first"])
    # The RL records' key steps: "generator" (the task generator's own) or "extracted" (what
    # `stepgrpo keysteps` extracts, rule-based, from each RL problem's reference reasoning).
    # Evaluation always scores against the generator's key steps.
    key_steps: str = "generator"
    hidden_size: int = 64
    num_layers: int = 2
    vocab_size: int = 1024
    phrase_merges: bool = True         # tokenizer merges across spaces: ~20-token responses
    eval_max_new_tokens: int = 40
    eval_batch_size: int = 16
    threads: int = 1                   # torch CPU threads per process (0 = leave torch's default)
    # SFT and StepGRPO run as this many local data-parallel processes (accelerate + gloo) with the
    # same global batch: the tiny model's step is per-op overhead, so a second core helps only as
    # a second process. A fixed default (not the core count) keeps results machine-independent.
    processes: int = 2

    def __post_init__(self) -> None:
        from stepgrpo_fast.synthetic.task import KINDS

        for name in ("n_sft", "n_rl", "n_eval", "hidden_size", "num_layers", "vocab_size",
                     "eval_max_new_tokens", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"demo.{name} must be >= 1, got {getattr(self, name)}")
        if self.threads < 0:
            raise ValueError(f"demo.threads must be >= 0, got {self.threads}")
        if self.processes < 1:
            raise ValueError(f"demo.processes must be >= 1, got {self.processes}")
        if not 2 <= self.max_value <= 9:
            raise ValueError(f"demo.max_value must be in 2..9, got {self.max_value}")
        if not 0.0 <= self.sft_carry_slip <= 1.0:
            raise ValueError(f"demo.sft_carry_slip must be in [0, 1], got {self.sft_carry_slip}")
        if not 0.0 <= self.sft_layout_break <= 1.0:
            raise ValueError(f"demo.sft_layout_break must be in [0, 1], got {self.sft_layout_break}")
        from stepgrpo_fast.synthetic.task import LAYOUT_FAULTS

        if not self.sft_layout_faults or any(f not in LAYOUT_FAULTS for f in self.sft_layout_faults):
            raise ValueError(f"demo.sft_layout_faults must be a non-empty subset of {LAYOUT_FAULTS}, "
                             f"got {self.sft_layout_faults}")
        if self.key_steps not in ("generator", "extracted"):
            raise ValueError(f"demo.key_steps must be 'generator' or 'extracted', got {self.key_steps!r}")
        bad = [k for k in self.kinds if k not in KINDS]
        if not self.kinds or bad:
            raise ValueError(f"demo.kinds must be a non-empty subset of {KINDS}, got {self.kinds}")


def split_overrides(items: Sequence[str]) -> dict[str, list[str]]:
    """['sft.max_steps=5', 'rl.beta=0'] -> {'sft': ['max_steps=5'], 'rl': ['beta=0'], 'demo': []}."""
    out: dict[str, list[str]] = {stage: [] for stage in STAGES}
    for item in items:
        stage, dot, rest = str(item).partition(".")
        if not dot or stage not in STAGES or "=" not in rest:
            raise ValueError(f"override {item!r} must look like STAGE.KEY=VALUE with STAGE one of "
                             f"{', '.join(STAGES)} (e.g. rl.learning_rate=1e-4)")
        out[stage].append(rest)
    return out


def make_settings(overrides: Sequence[str] = ()) -> DemoSettings:
    """DemoSettings with ``key=value`` overrides (values parsed as YAML, type-checked)."""
    from stepgrpo_fast.trainer.config import coerce_value, parse_override

    hints = typing.get_type_hints(DemoSettings)
    names = [f.name for f in dataclasses.fields(DemoSettings)]
    values: dict[str, Any] = {}
    for item in overrides:
        key, value = parse_override(item)
        if key not in names:
            raise ValueError(f"unknown demo setting {key!r} (valid: {', '.join(names)})")
        values[key] = coerce_value(f"demo.{key}", value, hints[key])
    return DemoSettings(**values)


def load_stage_configs(sft_overrides: Sequence[str] = (), rl_overrides: Sequence[str] = ()):
    """(SFTConfig, StepGRPOConfig) from the demo YAMLs plus overrides (paths filled in later)."""
    from stepgrpo_fast.trainer.config import SFTConfig, StepGRPOConfig

    return (SFTConfig.from_yaml(SFT_CONFIG, overrides=list(sft_overrides)),
            StepGRPOConfig.from_yaml(RL_CONFIG, overrides=list(rl_overrides)))


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` or clear what an earlier demo run left in it; refuse a non-empty
    directory the demo did not create."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ValueError(f"--out {out} is not empty and was not made by `stepgrpo demo`; "
                         "choose a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    for entry in list(out.iterdir()):
        if entry.name in OWNED_ENTRIES or entry.name.startswith("seed_"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    (out / MARKER).write_text("created by `stepgrpo demo`; its contents are rewritten by the next run\n")
    return out
