"""Training configuration: SFT warm-up and StepGRPO online RL (docs/METHOD.md sections 1 and 4).

Both configs are plain dataclasses loaded from YAML with ``--set key=value`` overrides:

    cfg = StepGRPOConfig.from_yaml("stepgrpo_tiny.yaml", overrides=["num_generations=2"])

Every override value is parsed as YAML (``lr=1e-6``, ``reward_weights=[1.0, 0.5]``,
``report_to=none``) and then type-checked against the field's annotation; an unknown key is a
ValueError that lists the closest valid names. Defaults are the released R1-VL recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from stepgrpo_fast.trainer.config.base import (  # noqa: F401 - the public names of the config module
    ADVANTAGE_SCALES,
    ATTN_IMPLEMENTATIONS,
    DTYPES,
    IMPLS,
    IMPORTANCE_SAMPLING_LEVELS,
    LOSS_TYPES,
    MULTI_OBJECTIVE_AGGREGATIONS,
    PROMPT_TEMPLATES,
    REPORT_TO,
    REWARD_MODES,
    SCHEDULERS,
    TrainConfigBase,
)
from stepgrpo_fast.trainer.config.parsing import (  # noqa: F401
    choice,
    coerce_value,
    non_negative,
    parse_override,
    positive,
)


@dataclass
class SFTConfig(TrainConfigBase):
    """Warm-up SFT (spec section 1): 2 epochs, cosine, 3% warmup, lr 2e-5, vision frozen.

    The loss is the token-level NLL on the response (prompt tokens carry label -100),
    computed through the fused ``linear_logprobs`` op: no logits tensor is built.
    """

    learning_rate: float = field(default=2e-5, metadata={"help": "AdamW peak learning rate"})
    lr_scheduler_type: str = field(
        default="cosine",
        metadata={
            "help": "linear | cosine | constant (transformers.get_scheduler), after warmup_ratio of the steps"
        },
    )
    warmup_ratio: float = field(
        default=0.03,
        metadata={"help": "fraction of the optimizer steps spent in linear warm-up, in [0, 1)"},
    )
    num_epochs: float = field(
        default=2.0,
        metadata={"help": "passes over train_data (fractions allowed); TRL name: num_train_epochs"},
    )
    output_dir: str = field(
        default="outputs/sft",
        metadata={
            "help": "where checkpoint-N/, final_model/, metrics.jsonl and config.yaml are written"
        },
    )

    KIND: ClassVar[str] = "sft"


@dataclass
class StepGRPOConfig(TrainConfigBase):
    """StepGRPO online RL (spec sections 3 and 4) with the released defaults.

    One training *step* = one rollout batch (per_device_batch_size prompts x num_generations
    completions x gradient_accumulation_steps micro-batches on every process) followed by
    ``num_iterations`` optimizer updates on it.
    """

    output_dir: str = field(
        default="outputs/stepgrpo",
        metadata={
            "help": "where checkpoint-N/, final_model/, metrics.jsonl and config.yaml are written"
        },
    )
    freeze_vision: bool = field(
        default=False, metadata={"help": "the released RL trains the vision tower too"}
    )
    # --- rollout ------------------------------------------------------------------------
    num_generations: int = field(
        default=4, metadata={"help": "M completions per prompt (one group)"}
    )
    temperature: float = field(
        default=1.2,
        metadata={
            "help": "sampling temperature of the rollouts; the loss scores softmax(logits / temperature)"
        },
    )
    max_new_tokens: int = field(
        default=1024,
        metadata={
            "help": "max completion tokens per rollout (TRL name: max_completion_length); also dr_grpo's normaliser"
        },
    )
    top_p: float = field(
        default=1.0, metadata={"help": "nucleus sampling of the rollouts (1.0 = off)"}
    )
    top_k: int = field(default=0, metadata={"help": "0 = disabled"})
    repetition_penalty: float = field(
        default=1.0,
        metadata={
            "help": "1.0 = off. Rollouts sample exactly softmax(logits / temperature) (+ top_k / top_p) whatever the checkpoint's generation_config.json says; a penalty != 1 biases the policy gradient."
        },
    )
    # --- rewards ------------------------------------------------------------------------
    reward_mode: str = field(
        default="paper", metadata={"help": '"paper" | "official" (spec section 3)'}
    )
    reward_weights: list[float] = field(
        default_factory=lambda: [1.0, 1.0], metadata={"help": "(accuracy, validity)"}
    )
    alpha: float = field(default=0.1, metadata={"help": "StepRAR key-step bonus"})
    advantage_scale: str = field(
        default="group",
        metadata={
            "help": '"group": (r - mean_g) / (std_g + 1e-4); "batch": (r - mean_g) / (std of every reward of the step\'s global batch, all micro-batches and processes, + 1e-4) as TRL\'s scale_rewards="batch"; "none": r - mean_g'
        },
    )
    extra_reward_funcs: list[str] = field(
        default_factory=list, metadata={"help": '"module:function", TRL contract'}
    )
    extra_reward_weights: list[float] = field(
        default_factory=list, metadata={"help": "one per extra reward"}
    )
    # --- loss ---------------------------------------------------------------------------
    beta: float = field(
        default=0.04, metadata={"help": "KL weight (k3 estimator vs the frozen start model)"}
    )
    epsilon_low: float = field(
        default=0.2,
        metadata={
            "help": "lower clip range of the importance ratio: clip(ratio, 1 - epsilon_low, ...)"
        },
    )
    epsilon_high: float = field(
        default=0.2,
        metadata={
            "help": "upper clip range: clip(ratio, ..., 1 + epsilon_high) (cispo: the ratio cap itself)"
        },
    )
    num_iterations: int = field(
        default=1, metadata={"help": "updates per rollout batch (> 1 uses old log-probs)"}
    )
    loss_type: str = field(
        default="grpo",
        metadata={
            "help": 'The loss options below carry TRL 1.16\'s GRPOConfig names and meaning (docs/METHOD.md section 4, "Trainer options"). loss_type: grpo | bnpo | dr_grpo | dapo | cispo | sapo | luspo. Our default stays "grpo" (the released R1-VL recipe: mean per sequence, then over sequences); TRL 1.16 defaults to "dapo" (sum over the tokens of the whole global batch / its token count: the trainer passes that count as num_items_in_batch).'
        },
    )
    importance_sampling_level: str = field(
        default="token",
        metadata={
            "help": '"token": one ratio per token; "sequence": GSPO, exp(mean over the sequence of log-ratios)'
        },
    )
    delta: float | None = field(
        default=None,
        metadata={
            "help": "Two-sided clipping: the unclipped ratio is also capped at delta (None = off; TRL recommends delta > 1 + epsilon_high)"
        },
    )
    use_bias_correction_kl: bool = field(
        default=True,
        metadata={
            "help": "KL_t times the importance ratio (TRL 1.16's default True). With num_iterations == 1 the ratio is 1 in value but not in gradient, so True adds KL_t * dlogp_t to the gradient of beta*KL compared with the trainer before this option (set False for that behaviour)."
        },
    )
    entropy_coef: float = field(
        default=0.0,
        metadata={"help": "loss -= entropy_coef * mean per-token entropy over the mask"},
    )
    top_entropy_quantile: float = field(
        default=1.0,
        metadata={
            "help": "Keep only the top quantile of tokens by entropy in the policy term (1.0 = every token)"
        },
    )
    off_policy_mask_threshold: float | None = field(
        default=None,
        metadata={
            "help": "Off-policy sequence masking: a sequence with negative advantage whose mean KL(sampler || policy) exceeds this is dropped from the loss (None = off)"
        },
    )
    sapo_temperature_pos: float = field(
        default=1.0, metadata={"help": "sapo's sigmoid temperature for A > 0"}
    )
    sapo_temperature_neg: float = field(default=1.05, metadata={"help": "... and for A <= 0"})
    mask_truncated_completions: bool = field(
        default=False,
        metadata={
            "help": "True: completions that hit max_new_tokens without an EOS get loss mask 0 (rewards and advantages still count them), as TRL's mask_truncated_completions"
        },
    )
    # --- DAPO dynamic sampling ----------------------------------------------------------
    dynamic_sampling: bool = field(
        default=False,
        metadata={
            "help": "True: groups whose advantages are all zero (flat rewards) are dropped and refilled with fresh prompts, at most dynamic_sampling_max_rounds generation rounds per micro-batch; a shortfall after the last round is filled with flat groups (logged). Logs flat_group_fraction (before filtering), flat_group_fraction_kept and dynamic_sampling_rounds."
        },
    )
    dynamic_sampling_max_rounds: int = field(
        default=3,
        metadata={
            "help": "with dynamic_sampling: at most this many generation rounds per micro-batch"
        },
    )
    multi_objective_aggregation: str = field(
        default="sum_then_normalize",
        metadata={
            "help": 'How StepRAR, StepRVR and extra rewards become one advantage: "sum_then_normalize": A = group_norm(w_acc r_acc + w_val r_val + sum_k w_k r_k)  (today\'s) "normalize_then_sum": GDPO as TRL 1.16: s = sum_k w_k group_norm(r_k), then A = (s - mean s) / (std s + 1e-4) over the whole global batch (advantage_scale must then stay "group")'
        },
    )

    KIND: ClassVar[str] = "stepgrpo"

    def validate(self) -> None:
        super().validate()
        choice(self, "reward_mode", REWARD_MODES)
        choice(self, "loss_type", LOSS_TYPES)
        choice(self, "advantage_scale", ADVANTAGE_SCALES)
        choice(self, "importance_sampling_level", IMPORTANCE_SAMPLING_LEVELS)
        choice(self, "multi_objective_aggregation", MULTI_OBJECTIVE_AGGREGATIONS)
        positive(
            self,
            "temperature",
            "max_new_tokens",
            "num_iterations",
            "repetition_penalty",
            "dynamic_sampling_max_rounds",
            "sapo_temperature_pos",
            "sapo_temperature_neg",
        )
        non_negative(self, "beta", "epsilon_low", "epsilon_high", "alpha", "top_k", "entropy_coef")
        self._validate_loss_options()
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

    def _validate_loss_options(self) -> None:
        if not 0.0 < self.top_entropy_quantile <= 1.0:
            raise ValueError(
                f"top_entropy_quantile must be in (0, 1], got {self.top_entropy_quantile}"
            )
        if self.delta is not None and not self.delta > 0:
            raise ValueError(f"delta must be > 0 or None, got {self.delta}")
        if self.off_policy_mask_threshold is not None and self.off_policy_mask_threshold < 0:
            raise ValueError(
                "off_policy_mask_threshold must be >= 0 or None, "
                f"got {self.off_policy_mask_threshold}"
            )
        if self.loss_type == "cispo" and self.epsilon_high <= 1.0:
            raise ValueError(
                f"epsilon_high is cispo's upper cap on the importance ratio (ScaleRL uses 4, "
                f"TRL's docs 5); epsilon_high={self.epsilon_high:g} would cap every ratio below 1"
            )
        if self.multi_objective_aggregation == "normalize_then_sum" and (
            self.advantage_scale != "group"
        ):
            raise ValueError(
                "advantage_scale must be 'group' with multi_objective_aggregation="
                "'normalize_then_sum' (each reward is normalised in its group, their weighted "
                f"sum over the global batch), got {self.advantage_scale!r}"
            )
