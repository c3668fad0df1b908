"""Greedy-decoding evaluation of a checkpoint on a data file: accuracy, validity, key-step match
and the StepGRPO reward (as ``stepgrpo eval`` and the demo report them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence


def evaluate(
    model_dir: str | Path,
    data_path: str | Path,
    *,
    batch_size: int = 4,
    max_new_tokens: int = 1024,
    reward_mode: str = "paper",
    alpha: float = 0.1,
    reward_weights: Sequence[float] = (1.0, 1.0),
    limit: int | None = None,
    predictions_path: str | Path | None = None,
    device: str | None = None,
    dtype: str = "auto",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    model: Any = None,
    processor: Any = None,
) -> dict[str, float]:
    """Greedy completions for every record of ``data_path`` -> mean metrics.

    Returns {"num_examples", "accuracy", "validity", "key_step_match", "reward",
    "reward_accuracy", "reward_validity", "completion_length"}. ``model``/``processor`` may be
    given to evaluate an in-memory model (then ``model_dir`` only labels the result).
    predictions_path: optional JSONL with one {"source", "question", "solution", "completion",
    ...reward components} per record.
    """
    import torch

    from stepgrpo_fast.trainer.data import encode_prompts, load_records
    from stepgrpo_fast.trainer.episodes import score_completions
    from stepgrpo_fast.trainer.modeling import load_model_and_processor
    from stepgrpo_fast.trainer.rollout import generate_rollouts

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(reward_weights) != 2:
        raise ValueError(f"reward_weights must be (accuracy, validity), got {reward_weights!r}")
    records = load_records(data_path, require_response=False)
    if limit is not None:
        records = records[:limit]
    if model is None:
        model, processor = load_model_and_processor(
            model_dir,
            torch_dtype=dtype,
            device=device,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
        )
    elif processor is None:
        raise ValueError("evaluate(model=...) needs processor= too")
    device_ = next(model.parameters()).device
    vision_start = getattr(model.config, "vision_start_token_id", None)

    texts: list[str] = []
    lengths: list[int] = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        inputs = {k: v.to(device_) for k, v in encode_prompts(processor, chunk).items()}
        rollout = generate_rollouts(
            model,
            processor.tokenizer,
            inputs,
            num_generations=1,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            vision_start_token_id=vision_start,
        )
        texts.extend(rollout.texts)
        lengths.extend(rollout.completion_lengths.tolist())

    parts = score_completions(
        texts,
        [r.solution for r in records],
        [r.key_steps for r in records],
        mode=reward_mode,
        alpha=alpha,
    )
    w_acc, w_val = (float(w) for w in reward_weights)
    reward = w_acc * parts["reward_accuracy"] + w_val * parts["reward_validity"]
    result = {
        "num_examples": float(len(records)),
        "accuracy": parts["answer_correct"].mean().item(),
        "validity": parts["reward_validity"].mean().item(),
        "key_step_match": parts["key_step_match"].mean().item(),
        "reward": reward.mean().item(),
        "reward_accuracy": parts["reward_accuracy"].mean().item(),
        "reward_validity": parts["reward_validity"].mean().item(),
        "completion_length": float(torch.tensor(lengths, dtype=torch.float32).mean().item()),
    }
    if predictions_path is not None:
        with open(predictions_path, "w") as f:
            for i, (record, text) in enumerate(zip(records, texts)):
                f.write(
                    json.dumps(
                        {
                            "source": record.source,
                            "question": record.question,
                            "solution": record.solution,
                            "completion": text,
                            "reward": reward[i].item(),
                            **{k: v[i].item() for k, v in parts.items()},
                        }
                    )
                    + "\n"
                )
    return result
