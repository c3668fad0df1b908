"""TrainConfigBase: the options SFT and StepGRPO runs share, loading (YAML + ``--set``
overrides, TRL aliases) and the shared checks. The run configs themselves: config.py."""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from stepgrpo_fast.trainer.config.names import ALIASES, resolve_aliases
from stepgrpo_fast.trainer.logging import check_report_to
from stepgrpo_fast.trainer.config.parsing import (  # noqa: F401 - coerce_value / parse_override are public here
    check_types,
    choice,
    coerce_value,
    non_negative,
    parse_override,
    positive,
    unknown_key_message,
)

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
MULTI_OBJECTIVE_AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")
REWARD_MODES = ("paper", "official")
ADVANTAGE_SCALES = ("group", "batch", "none")
REPORT_TO = ("none", "tensorboard", "wandb")  # the common ones; any tracker accelerate offers works
SCHEDULERS = ("linear", "cosine", "constant")
PROMPT_TEMPLATES = ("default", "r1vl")
DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")
IMPLS = ("auto", "torch", "triton")
FSDP_MODES = ("", "full_shard", "full_shard offload")  # trainer/model/fsdp.py


@dataclass
class TrainConfigBase:
    """Fields shared by SFT and StepGRPO runs."""

    # --- model and data -----------------------------------------------------------------
    model_name_or_path: str = field(
        default="", metadata={"help": "local checkpoint dir (or hub id on a user's machine)"}
    )
    train_data: str = field(
        default="", metadata={"help": "JSON / JSONL, image paths relative to the file"}
    )
    eval_data: str | None = field(
        default=None, metadata={"help": "validated at start; evaluated at the end if eval_at_end"}
    )
    column_map: list[str] = field(
        default_factory=list,
        metadata={
            "help": "train_data / eval_data columns for a layout we do not recognise: our field = your column, e.g. --column-map question=query solution=gt image=img key_steps=steps (YAML: a list of field=column or a mapping {question: query}); fields: image, images, question, solution, key_steps, response. docs/data.md"
        },
    )
    skip_bad_records: bool = field(
        default=False,
        metadata={
            "help": "true: records that fail the start checks (fields, image header, size within the processor's limits) are left out with a warning naming them and their count, instead of refusing the run. An image that fails to decode mid-run is always skipped and replaced (metric skipped_records)."
        },
    )
    eval_at_end: bool = field(
        default=False, metadata={"help": "greedy evaluation of the final policy on eval_data"}
    )
    eval_max_new_tokens: int = field(
        default=1024,
        metadata={"help": "max new tokens per completion in the end-of-run evaluation"},
    )
    eval_batch_size: int = field(
        default=4, metadata={"help": "prompts per generate() call in the end-of-run evaluation"}
    )
    eval_limit: int = field(default=0, metadata={"help": "0 = every record"})
    output_dir: str = field(
        default="outputs/run",
        metadata={
            "help": "where checkpoint-N/, final_model/, metrics.jsonl and config.yaml are written"
        },
    )
    dtype: str = field(
        default="auto",
        metadata={
            "help": "Compute dtype. bfloat16 / float16 keep fp32 master weights and fp32 AdamW state and run the forward under autocast (HF Trainer's bf16=True / fp16=True; fp16 adds a GradScaler); frozen linear layers (freeze_vision, train_only) are held in this dtype where it represents them exactly (a bf16 release): the same bits under autocast, half their memory, no re-cast per decoded token; checkpoint-N/ holds fp32 (exact resume), final_model/ is written in this dtype. auto: bf16 on a bf16-capable GPU, fp32 on CPU"
        },
    )
    low_precision_weights: bool = field(
        default=False,
        metadata={
            "help": "True: weights and AdamW state in `dtype` itself, no fp32 masters (half the weight memory; AdamW updates below the dtype's spacing round away: bf16 near 0.02 is ~1e-4). Warned."
        },
    )
    attn_implementation: str = field(
        default="auto", metadata={"help": "auto: flash_attention_2 if installed on GPU, else sdpa"}
    )
    min_pixels: int = field(default=3136, metadata={"help": "4 * 28 * 28"})
    max_pixels: int = field(
        default=400_000, metadata={"help": "released RL setting (spec section 4)"}
    )
    freeze_vision: bool = field(
        default=True,
        metadata={
            "help": "True: the vision tower (.visual) gets no gradient. SFT default True (released warm-up); StepGRPO default False (the released RL trains every parameter, the vision tower included)."
        },
    )
    prompt_template: str = field(
        default="default",
        metadata={
            "help": 'Prompt text of the user turn (the image part always comes first): "default": the question, then the reasoning instruction (data.REASONING_PROMPT) "r1vl":    the reasoning instruction, then the question (the released prompt layout) Either way a question that already carries the instruction (it names the "### The final answer is:" header, as the released records\' `problem` does) is used as is.'
        },
    )
    train_only: list[str] = field(
        default_factory=list,
        metadata={
            "help": 'Regexes (re.search on parameter names); when set, only the parameters matching one train, e.g. ["language_model\\\\.layers\\\\.27\\\\."] (the rest frozen: no gradient, no AdamW state).'
        },
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "recompute decoder activations in backward (HF gradient checkpointing): less memory, ~30% more compute"
        },
    )
    impl: str = field(default="auto", metadata={"help": "kernel dispatch for the fused ops"})
    share_prompt: bool = field(
        default=True,
        metadata={
            "help": "StepGRPO: each group's images and prompt run once for its num_generations completions (rollout prefill, reference / old log-probs, policy forward + backward; KV cache expanded to the group), exactly what the repeated layout computes. Used for qwen2_vl / qwen2_5_vl / qwen3_vl with sdpa / eager attention; flash_attention_2, gradient checkpointing (policy update only) and other models fall back to the repeated layout with one notice line. docs/training.md#shared-prompt"
        },
    )
    fsdp: str = field(
        default="",
        metadata={
            "help": 'PyTorch FSDP2 (HF TrainingArguments\' spelling): "" = DDP / one process; "full_shard" = every decoder layer and vision block, then the root, sharded over the processes (fp32 masters, gradients and AdamW state sharded; bf16/fp16 compute through MixedPrecisionPolicy); "full_shard offload" adds CPU offload. Checkpoints are torch.distributed.checkpoint shards (one file per rank); final_model/ is gathered. docs/scaling.md'
        },
    )

    # --- LoRA (PEFT; TRL's option names; trainer/model/lora.py) -------------------------------
    use_peft: bool = field(
        default=False,
        metadata={
            "help": "use_peft: the base weights stay frozen (and on disk untouched), LoRA adapters train; checkpoints and final_model/ hold the adapter only; beta > 0 scores the reference with the adapters disabled (no second model). `stepgrpo export --merge` writes a full model. The whole base is frozen, so freeze_vision does not apply (lora_vision decides)."
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "scale lora_alpha / lora_r"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: list[str] = field(
        default_factory=list,
        metadata={
            "help": "name suffixes of the language model's linear layers; empty = the attention and MLP projections (q/k/v/o_proj, gate/up/down_proj), never the vision tower's"
        },
    )
    lora_modules_to_save: list[str] = field(
        default_factory=list,
        metadata={
            "help": 'modules trained in full next to the adapters, e.g. ["lm_head"] (LoRA on lm_head is refused)'
        },
    )
    lora_vision: bool = field(
        default=False,
        metadata={"help": "true: every linear layer of the vision tower gets an adapter too"},
    )

    # --- optimisation -------------------------------------------------------------------
    learning_rate: float = field(default=1e-6, metadata={"help": "AdamW peak learning rate"})
    lr_scheduler_type: str = field(
        default="linear",
        metadata={
            "help": "linear | cosine | constant (transformers.get_scheduler), after warmup_ratio of the steps"
        },
    )
    warmup_ratio: float = field(
        default=0.0,
        metadata={"help": "fraction of the optimizer steps spent in linear warm-up, in [0, 1)"},
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay"})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2"})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon"})
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "clip the global gradient norm to this (0 = no clipping)"}
    )
    per_device_batch_size: int = field(
        default=1,
        metadata={
            "help": "PROMPTS (StepGRPO; each brings num_generations completions) or examples (SFT) per "
            "process per micro-step. TRL's per_device_train_batch_size counts COMPLETIONS: it is "
            "accepted as an alias and divided by num_generations"
        },
    )
    gradient_accumulation_steps: int = field(
        default=1,
        metadata={
            "help": "micro-batches per optimizer step (G); the global batch is per_device_batch_size x processes x G"
        },
    )
    max_steps: int = field(default=-1, metadata={"help": "> 0 overrides num_epochs"})
    num_epochs: float = field(
        default=1.0,
        metadata={"help": "passes over train_data (fractions allowed); TRL name: num_train_epochs"},
    )
    seed: int = field(
        default=42,
        metadata={
            "help": "seeds the data order, the model init of new modules and every rollout sample"
        },
    )

    # --- checkpoints and logging --------------------------------------------------------
    save_steps: int = field(default=100, metadata={"help": "0 = only at the end"})
    save_total_limit: int = field(
        default=2, metadata={"help": "keep the last K checkpoints (0 = keep all)"}
    )
    logging_steps: int = field(default=1, metadata={"help": "write metrics every N steps"})
    sample_log_steps: int = field(
        default=10, metadata={"help": "write sample completions every N steps (0 = never)"}
    )
    report_to: str = field(
        default="none",
        metadata={"help": "none, or accelerate trackers, comma-separated: tensorboard, wandb, mlflow, "
                          "trackio, comet_ml, aim, clearml, dvclive, swanlab (metrics.jsonl is "
                          "always written)"},
    )
    run_name: str | None = field(
        default=None,
        metadata={"help": "name of the run in tensorboard / wandb (default: output_dir's name)"},
    )
    progress_bar: bool = field(
        default=True, metadata={"help": "show a progress bar on the main process"}
    )

    # --- preemption and long runs (trainer/preemption.py; docs/training.md) ------------------
    save_on_signals: list[str] = field(
        default_factory=lambda: ["SIGTERM", "SIGINT", "SIGUSR1"],
        metadata={
            "help": "signals that make every rank checkpoint the last completed step and exit with status 128 + the signal number (143 for SIGTERM); of SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGHUP; [] = the default handlers"
        },
    )
    save_minutes: float = field(
        default=0.0,
        metadata={"help": "also checkpoint every N minutes of wall time, next to save_steps (0 = off)"},
    )
    ddp_timeout: int = field(
        default=1800,
        metadata={"help": "seconds a collective may wait before the process group gives up (HF TrainingArguments' name)"},
    )

    KIND: ClassVar[str] = "base"

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError naming the first field whose value is out of range."""
        self.column_map = _column_map_entries(self.column_map)
        check_types(self)
        choice(self, "dtype", DTYPES)
        choice(self, "attn_implementation", ATTN_IMPLEMENTATIONS)
        choice(self, "lr_scheduler_type", SCHEDULERS)
        check_report_to(self.report_to)
        choice(self, "impl", IMPLS)
        choice(self, "fsdp", FSDP_MODES)
        choice(self, "prompt_template", PROMPT_TEMPLATES)
        positive(
            self,
            "learning_rate",
            "per_device_batch_size",
            "gradient_accumulation_steps",
            "min_pixels",
            "max_pixels",
            "logging_steps",
            "eval_max_new_tokens",
            "eval_batch_size",
        )
        non_negative(
            self,
            "weight_decay",
            "max_grad_norm",
            "save_steps",
            "save_total_limit",
            "sample_log_steps",
            "adam_epsilon",
            "eval_limit",
        )
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.min_pixels > self.max_pixels:
            raise ValueError(
                f"min_pixels ({self.min_pixels}) must be <= max_pixels ({self.max_pixels})"
            )
        for pattern in self.train_only:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"train_only entry {pattern!r} is not a valid regex ({exc})"
                ) from None
        _check_lora(self)
        _check_preemption(self)
        if self.max_steps <= 0 and self.num_epochs <= 0:
            raise ValueError("set max_steps > 0 or num_epochs > 0")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> "TrainConfigBase":
        if not isinstance(values, dict):
            raise TypeError(
                f"{source}: expected a mapping of option -> value, got {type(values).__name__}"
            )
        known = cls.field_names()
        values = resolve_aliases(values, known, cls._num_generations_default(), source)
        for key in values:
            if key not in known:
                raise ValueError(unknown_key_message(cls, key, known, source))
        return cls(**values)

    @classmethod
    def _num_generations_default(cls) -> int | None:
        fields = dataclasses.fields(cls)
        return next((f.default for f in fields if f.name == "num_generations"), None)

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: list[str] | tuple[str, ...] = (),
                  options: dict[str, Any] | None = None):
        """Load ``path`` (may be None: defaults only), then apply ``options`` (typed values by
        name, e.g. the CLI's ``--KEY VALUE`` flags: config_flags.py), then the ``key=value``
        ``overrides`` in order. TRL's names are accepted everywhere (config_names.py)."""
        values: dict[str, Any] = {}
        source = "overrides"
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise FileNotFoundError(f"config file not found: {p}")
            loaded = yaml.safe_load(p.read_text())
            values = {} if loaded is None else loaded
            if not isinstance(values, dict):
                raise TypeError(f"{p}: top level must be a mapping, got {type(values).__name__}")
            source = str(p)
            for key in values:
                if key not in cls.field_names() and key not in ALIASES:
                    raise ValueError(unknown_key_message(cls, key, cls.field_names(), source))
        hints = typing.get_type_hints(cls)
        for key, value in (options or {}).items():
            cls._set_value(values, key, value, hints, f"--{key}")
        for item in overrides:
            key, value = parse_override(item)
            cls._set_value(values, key, value, hints, f"override {item!r}")
        return cls.from_dict(values, source=source)

    @classmethod
    def _set_value(cls, values: dict[str, Any], key: str, value: Any, hints: dict[str, Any],
                   source: str) -> None:
        """values[key] = value, replacing what an earlier source set under our name or TRL's."""
        if key in ALIASES and ALIASES[key] in hints:  # TRL's name: replaces ours from the file
            values.pop(ALIASES[key], None)
            values[key] = value  # converted (and checked) by resolve_aliases in from_dict
            return
        if key not in cls.field_names():
            raise ValueError(unknown_key_message(cls, key, cls.field_names(), source))
        values.pop(next((a for a, t in ALIASES.items() if t == key), ""), None)
        values[key] = coerce_value(key, value, hints[key])


# ----------------------------------------------------------------------------------------
# cross-field checks


def _column_map_entries(value: Any) -> Any:
    """column_map as field=column entries (a YAML mapping accepted), each checked."""
    from stepgrpo_fast.data.layouts import parse_column_map

    if isinstance(value, dict) or (isinstance(value, list) and value):
        return [f"{ours}={theirs}" for ours, theirs in parse_column_map(value).items()]
    return value


def _check_preemption(cfg: TrainConfigBase) -> None:
    from stepgrpo_fast.trainer.preemption import check_signal_names

    check_signal_names(cfg.save_on_signals)
    non_negative(cfg, "save_minutes")
    positive(cfg, "ddp_timeout")


def _column_map_entries(value: Any) -> Any:
    """column_map as field=column entries (a YAML mapping accepted), each checked."""
    from stepgrpo_fast.data.layouts import parse_column_map

    if isinstance(value, dict) or (isinstance(value, list) and value):
        return [f"{ours}={theirs}" for ours, theirs in parse_column_map(value).items()]
    return value


def _check_lora(cfg: TrainConfigBase) -> None:
    if not cfg.use_peft:
        for name in ("lora_target_modules", "lora_modules_to_save", "lora_vision"):
            if getattr(cfg, name):
                raise ValueError(f"{name} is set but use_peft is false (set use_peft: true)")
        return
    positive(cfg, "lora_r", "lora_alpha")
    if not 0.0 <= cfg.lora_dropout < 1.0:
        raise ValueError(f"lora_dropout must be in [0, 1), got {cfg.lora_dropout}")
    if cfg.train_only:
        raise ValueError(
            "train_only and use_peft exclude each other: with use_peft only the LoRA adapters "
            "(and lora_modules_to_save) train"
        )
