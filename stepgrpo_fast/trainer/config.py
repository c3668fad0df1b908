"""Training configuration: SFT warm-up and StepGRPO online RL (docs/METHOD.md sections 1 and 4).

Both configs are plain dataclasses loaded from YAML with ``--set key=value`` overrides:

    cfg = StepGRPOConfig.from_yaml("stepgrpo_tiny.yaml", overrides=["num_generations=2"])

Every override value is parsed as YAML (``lr=1e-6``, ``reward_weights=[1.0, 0.5]``,
``report_to=none``) and then type-checked against the field's annotation; an unknown key is a
ValueError that lists the closest valid names. Defaults are the released R1-VL recipe.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo")
REWARD_MODES = ("paper", "official")
ADVANTAGE_SCALES = ("group", "batch", "none")
REPORT_TO = ("none", "tensorboard", "wandb")
SCHEDULERS = ("linear", "cosine", "constant")
PROMPT_TEMPLATES = ("default", "r1vl")
DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")
IMPLS = ("auto", "torch", "triton")


@dataclass
class TrainConfigBase:
    """Fields shared by SFT and StepGRPO runs."""

    # --- model and data -----------------------------------------------------------------
    model_name_or_path: str = ""  # local checkpoint dir (or hub id on a user's machine)
    train_data: str = ""  # JSON / JSONL, image paths relative to the file
    eval_data: str | None = None  # validated at start; evaluated at the end if eval_at_end
    eval_at_end: bool = False  # greedy evaluation of the final policy on eval_data
    eval_max_new_tokens: int = 1024
    eval_batch_size: int = 4
    eval_limit: int = 0  # 0 = every record
    output_dir: str = "outputs/run"
    # Compute dtype. bfloat16 / float16 keep fp32 master weights and fp32 AdamW state and run the
    # forward under autocast (HF Trainer's bf16=True / fp16=True; fp16 adds a GradScaler);
    # checkpoint-N/ holds the fp32 masters (exact resume), final_model/ is written in this dtype.
    dtype: str = "auto"  # auto: bf16 on a bf16-capable GPU, fp32 on CPU
    # True: weights and AdamW state in `dtype` itself, no fp32 masters (half the weight memory;
    # AdamW updates below the dtype's spacing round away: bf16 near 0.02 is ~1e-4). Warned.
    low_precision_weights: bool = False
    attn_implementation: str = "auto"  # auto: flash_attention_2 if installed on GPU, else sdpa
    min_pixels: int = 3136  # 4 * 28 * 28
    max_pixels: int = 400_000  # released RL setting (spec section 4)
    # True: the vision tower (.visual) gets no gradient. SFT default True (released warm-up);
    # StepGRPO default False (the released RL trains every parameter, the vision tower included).
    freeze_vision: bool = True
    # Prompt text of the user turn (the image part always comes first):
    #   "default": the question, then the reasoning instruction (data.REASONING_PROMPT)
    #   "r1vl":    the reasoning instruction, then the question (the released prompt layout)
    # Either way a question that already carries the instruction (it names the
    # "### The final answer is:" header, as the released records' `problem` does) is used as is.
    prompt_template: str = "default"
    # Regexes (re.search on parameter names); when set, only the parameters matching one train,
    # e.g. ["language_model\\.layers\\.27\\."] (the rest frozen: no gradient, no AdamW state).
    train_only: list[str] = field(default_factory=list)
    gradient_checkpointing: bool = False
    impl: str = "auto"  # kernel dispatch for the fused ops

    # --- optimisation -------------------------------------------------------------------
    learning_rate: float = 1e-6
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    per_device_batch_size: int = 1  # prompts (RL) or examples (SFT) per process per micro-step
    gradient_accumulation_steps: int = 1
    max_steps: int = -1  # > 0 overrides num_epochs
    num_epochs: float = 1.0
    seed: int = 42

    # --- checkpoints and logging --------------------------------------------------------
    save_steps: int = 100  # 0 = only at the end
    save_total_limit: int = 2  # keep the last K checkpoints (0 = keep all)
    logging_steps: int = 1
    sample_log_steps: int = 10  # write sample completions every N steps (0 = never)
    report_to: str = "none"
    run_name: str | None = None
    progress_bar: bool = True

    KIND: ClassVar[str] = "base"

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError naming the first field whose value is out of range."""
        _check_types(self)
        _choice(self, "dtype", DTYPES)
        _choice(self, "attn_implementation", ATTN_IMPLEMENTATIONS)
        _choice(self, "lr_scheduler_type", SCHEDULERS)
        _choice(self, "report_to", REPORT_TO)
        _choice(self, "impl", IMPLS)
        _choice(self, "prompt_template", PROMPT_TEMPLATES)
        _positive(
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
        _non_negative(
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
        for key in values:
            if key not in known:
                raise ValueError(_unknown_key_message(cls, key, known, source))
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()):
        """Load ``path`` (may be None: defaults only) and apply ``key=value`` overrides in order."""
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
                if key not in cls.field_names():
                    raise ValueError(_unknown_key_message(cls, key, cls.field_names(), source))
        hints = typing.get_type_hints(cls)
        for item in overrides:
            key, value = parse_override(item)
            if key not in cls.field_names():
                raise ValueError(
                    _unknown_key_message(cls, key, cls.field_names(), f"override {item!r}")
                )
            values[key] = coerce_value(key, value, hints[key])
        return cls.from_dict(values, source=source)


@dataclass
class SFTConfig(TrainConfigBase):
    """Warm-up SFT (spec section 1): 2 epochs, cosine, 3% warmup, lr 2e-5, vision frozen.

    The loss is the token-level NLL on the response (prompt tokens carry label -100),
    computed through the fused ``linear_logprobs`` op: no logits tensor is built.
    """

    learning_rate: float = 2e-5
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    num_epochs: float = 2.0
    output_dir: str = "outputs/sft"

    KIND: ClassVar[str] = "sft"


@dataclass
class StepGRPOConfig(TrainConfigBase):
    """StepGRPO online RL (spec sections 3 and 4) with the released defaults.

    One training *step* = one rollout batch (per_device_batch_size prompts x num_generations
    completions x gradient_accumulation_steps micro-batches on every process) followed by
    ``num_iterations`` optimizer updates on it.
    """

    output_dir: str = "outputs/stepgrpo"
    freeze_vision: bool = False  # the released RL trains the vision tower too
    # --- rollout ------------------------------------------------------------------------
    num_generations: int = 4  # M completions per prompt (one group)
    temperature: float = 1.2
    max_new_tokens: int = 1024
    top_p: float = 1.0
    top_k: int = 0  # 0 = disabled
    # 1.0 = off. Rollouts sample exactly softmax(logits / temperature) (+ top_k / top_p) whatever
    # the checkpoint's generation_config.json says; a penalty != 1 biases the policy gradient.
    repetition_penalty: float = 1.0
    # --- rewards ------------------------------------------------------------------------
    reward_mode: str = "paper"  # "paper" | "official" (spec section 3)
    reward_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])  # (accuracy, validity)
    alpha: float = 0.1  # StepRAR key-step bonus
    # "group": (r - mean_g) / (std_g + 1e-4); "batch": (r - mean_g) / (std of every reward of the
    # step's global batch, all micro-batches and processes, + 1e-4) as TRL's scale_rewards="batch";
    # "none": r - mean_g
    advantage_scale: str = "group"
    extra_reward_funcs: list[str] = field(default_factory=list)  # "module:function", TRL contract
    extra_reward_weights: list[float] = field(default_factory=list)  # one per extra reward
    # --- loss ---------------------------------------------------------------------------
    beta: float = 0.04  # KL weight (k3 estimator vs the frozen start model)
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    num_iterations: int = 1  # updates per rollout batch (> 1 uses old log-probs)
    loss_type: str = "grpo"

    KIND: ClassVar[str] = "stepgrpo"

    def validate(self) -> None:
        super().validate()
        _choice(self, "reward_mode", REWARD_MODES)
        _choice(self, "loss_type", LOSS_TYPES)
        _choice(self, "advantage_scale", ADVANTAGE_SCALES)
        _positive(self, "temperature", "max_new_tokens", "num_iterations", "repetition_penalty")
        _non_negative(self, "beta", "epsilon_low", "epsilon_high", "alpha", "top_k")
        if self.num_generations < 2:
            raise ValueError(
                "num_generations must be >= 2 (a group needs a baseline), "
                f"got {self.num_generations}"
            )
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if len(self.extra_reward_weights) != len(self.extra_reward_funcs):
            raise ValueError(
                f"extra_reward_weights has {len(self.extra_reward_weights)} entries for "
                f"{len(self.extra_reward_funcs)} extra_reward_funcs"
            )
        for spec in self.extra_reward_funcs:
            if spec.count(":") != 1 or not all(spec.split(":")):
                raise ValueError(
                    f"extra_reward_funcs entry {spec!r} must look like 'package.module:function'"
                )
        if len(self.reward_weights) != 2:
            raise ValueError(
                "reward_weights must hold two numbers (accuracy, validity), "
                f"got {self.reward_weights!r}"
            )


# ----------------------------------------------------------------------------------------
# overrides and type checks


def parse_override(item: str) -> tuple[str, Any]:
    """'key=value' -> (key, YAML-parsed value)."""
    if not isinstance(item, str) or "=" not in item:
        raise ValueError(f"override must look like key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ValueError(f"override has an empty key: {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ValueError(f"override {item!r}: value is not valid YAML ({exc})") from None
    return key, value


def coerce_value(key: str, value: Any, annotation: Any) -> Any:
    """Convert a YAML-parsed value to the field type or raise TypeError naming the key."""
    allowed = _allowed_types(annotation)
    if value is None:
        if type(None) in allowed:
            return None
        raise TypeError(f"{key}: None is not allowed (expected {_type_name(annotation)})")
    if str in allowed and isinstance(value, str):
        return value
    if str in allowed and not (
        int in allowed or float in allowed or bool in allowed or list in allowed
    ):
        # "run_name=123" -> "123": a string field takes any scalar spelled on the command line
        if isinstance(value, (int, float, bool)):
            return str(value)
    if bool in allowed and isinstance(value, bool):
        return value
    if int in allowed and isinstance(value, int) and not isinstance(value, bool):
        return value
    if float in allowed and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if float in allowed and isinstance(value, str):
        try:
            return float(value)  # YAML reads "1e-6" as a string
        except ValueError:
            pass
    if list in allowed and isinstance(value, list):
        return [coerce_value(f"{key}[{i}]", v, _list_item(annotation)) for i, v in enumerate(value)]
    raise TypeError(
        f"{key}: expected {_type_name(annotation)}, got {value!r} ({type(value).__name__})"
    )


def _check_types(cfg: TrainConfigBase) -> None:
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        coerced = coerce_value(f.name, value, hints[f.name])
        setattr(cfg, f.name, coerced)


def _allowed_types(annotation: Any) -> set[type]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        out: set[type] = set()
        for arg in typing.get_args(annotation):
            out |= _allowed_types(arg)
        return out
    if origin is list:
        return {list}
    if annotation is type(None):
        return {type(None)}
    return {annotation}


def _list_item(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if typing.get_origin(arg) is list:
                return _list_item(arg)
    args = typing.get_args(annotation)
    return args[0] if args else Any


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _unknown_key_message(cls: type, key: str, known: list[str], source: str) -> str:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (
        f"{source}: unknown {cls.__name__} option {key!r}{hint} (valid: {', '.join(sorted(known))})"
    )


def _choice(cfg: Any, name: str, choices: tuple[str, ...]) -> None:
    if getattr(cfg, name) not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {getattr(cfg, name)!r}")


def _positive(cfg: Any, *names: str) -> None:
    for name in names:
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(cfg, name)!r}")


def _non_negative(cfg: Any, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)!r}")
