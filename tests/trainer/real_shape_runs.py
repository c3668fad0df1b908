"""One-step run configs shared by the real-shaped checkpoint tests (test_real_shapes.py for
Qwen2-VL-2B, test_qwen3_vl.py for Qwen3-VL-2B): bf16 compute, only the last of 2 decoder layers
trained, one step, no checkpoint."""
from __future__ import annotations

from stepgrpo_fast.trainer.config import StepGRPOConfig

LAST_LAYER = r"language_model\.layers\.1\."
DIGIT_REWARD = "real_shape_runs:digit_share"


def digit_share(completions, **kwargs):
    """Share of digit characters (TRL reward contract): gives random completions a spread."""
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) for text in completions]


def one_step(ckpt, out, **extra) -> dict:
    """Keyword arguments of a one-step SFT / StepGRPO config on ``ckpt`` writing to ``out``."""
    return dict(model_name_or_path=str(ckpt), output_dir=str(out), dtype="bfloat16",
                train_only=[LAST_LAYER], per_device_batch_size=1, max_steps=1, save_steps=0,
                progress_bar=False, seed=0, **extra)


def stepgrpo_step_and_eval(ckpt, synthetic_data, out) -> StepGRPOConfig:
    """One StepGRPO step (M = 2 samples of 8 tokens, a digit-share extra reward, every sample
    logged), then a 2-record greedy evaluation."""
    return StepGRPOConfig(**one_step(
        ckpt, out, train_data=str(synthetic_data["rl"]), eval_data=str(synthetic_data["eval"]),
        eval_at_end=True, eval_limit=2, eval_batch_size=2, eval_max_new_tokens=8,
        num_generations=2, max_new_tokens=8, learning_rate=1e-6, sample_log_steps=1,
        extra_reward_funcs=[DIGIT_REWARD], extra_reward_weights=[1.0]))
