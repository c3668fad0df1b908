"""Evaluation, as ``stepgrpo eval`` runs it.

- ``evaluate``: greedy decoding of a checkpoint on a training-format data file: accuracy,
  validity, key-step match and the StepGRPO reward (as the demo reports them).
- ``evaluate_benchmark``: accuracy on a benchmark file (``--format mathvista|mcq|open``, rules in
  rewards/benchmark_formats.py), of a checkpoint's greedy outputs or of given completions (no
  model, no image), per question type, answer type and source.
"""

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
    prompt_template: str | None = None,
    column_map: Any = None,
) -> dict[str, float]:
    """Greedy completions for every record of ``data_path`` -> mean metrics.

    Returns {"num_examples", "accuracy", "validity", "key_step_match", "reward",
    "reward_accuracy", "reward_validity", "completion_length"}. ``model``/``processor`` may be
    given to evaluate an in-memory model (then ``model_dir`` only labels the result).
    predictions_path: optional JSONL with one {"source", "question", "solution", "completion",
    ...reward components} per record. prompt_template: "default" | "r1vl" (data.user_text);
    None: the one the model was trained with (:func:`trained_prompt_template` of ``model_dir``).
    column_map: the data's columns for our fields (data/layouts.py); None: the one saved with
    the model (``model_dir``'s training_config.yaml / config.yaml), if any.
    """
    import torch

    from stepgrpo_fast.data.records import load_records
    from stepgrpo_fast.data.prompts import PROMPT_TEMPLATES, encode_prompts
    from stepgrpo_fast.trainer.rl.episodes import score_completions
    from stepgrpo_fast.trainer.model.loading import load_model_and_processor

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(reward_weights) != 2:
        raise ValueError(f"reward_weights must be (accuracy, validity), got {reward_weights!r}")
    template = trained_prompt_template(model_dir) if prompt_template is None else prompt_template
    if template not in PROMPT_TEMPLATES:
        raise ValueError(f"prompt_template must be one of {PROMPT_TEMPLATES}, got {template!r}")
    if column_map is None:
        column_map = _saved_option(model_dir, "column_map")
    records = load_records(data_path, require_response=False, column_map=column_map)
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
    texts, lengths = _greedy_completions(
        model, processor, records,
        lambda chunk: encode_prompts(processor, chunk, template=template),
        batch_size=batch_size, max_new_tokens=max_new_tokens,
    )

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


def _saved_option(model_dir: str | Path | None, name: str) -> Any:
    """Option ``name`` of the config saved with a model (training_config.yaml or config.yaml),
    None when there is none."""
    import yaml

    for file in ("training_config.yaml", "config.yaml"):
        path = Path(model_dir) / file if model_dir is not None else None
        if path is not None and path.is_file():
            saved = yaml.safe_load(path.read_text(encoding="utf-8"))
            if isinstance(saved, dict) and saved.get(name) is not None:
                return saved[name]
    return None


def trained_prompt_template(model_dir: str | Path | None) -> str:
    """The ``prompt_template`` a run wrote next to its weights: training_config.yaml (in every
    checkpoint-N/ and final_model/) or config.yaml (the run's output_dir); "default" when
    neither exists or names none. ValueError naming the file when it holds an unknown one."""
    import yaml

    from stepgrpo_fast.data.prompts import PROMPT_TEMPLATES

    for name in ("training_config.yaml", "config.yaml"):
        path = Path(model_dir) / name if model_dir is not None else None
        if path is None or not path.is_file():
            continue
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
        template = saved.get("prompt_template", "default") if isinstance(saved, dict) else None
        if template is None:
            continue
        if template not in PROMPT_TEMPLATES:
            raise ValueError(
                f"{path}: prompt_template must be one of {PROMPT_TEMPLATES}, got {template!r}"
            )
        return template
    return "default"


def _greedy_completions(model, processor, items, encode, *, batch_size, max_new_tokens):
    """Greedy completion of every item -> (texts [N], completion lengths [N]).

    encode(chunk) -> left-padded prompt inputs of up to ``batch_size`` items."""
    from stepgrpo_fast.trainer.rl.rollout import generate_rollouts

    device_ = next(model.parameters()).device
    vision_start = getattr(model.config, "vision_start_token_id", None)
    texts: list[str] = []
    lengths: list[int] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        inputs = {k: v.to(device_) for k, v in encode(chunk).items()}
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
    return texts, lengths


# --------------------------------------------------------------------------- benchmark formats
PROMPT_STYLES = ("training", "released")


def benchmark_prompt(item, prompt: str = "training") -> str:
    """User text for a benchmark item: the question, its options / answer form, then the
    training reasoning prompt (data.REASONING_PROMPT) or our wording of the released
    evaluator's (benchmark_formats.RELEASED_EVAL_PROMPT); both ask for the ### layout."""
    from stepgrpo_fast.rewards.benchmark_formats import RELEASED_EVAL_PROMPT, question_text
    from stepgrpo_fast.data.prompts import REASONING_PROMPT

    if prompt not in PROMPT_STYLES:
        raise ValueError(f"prompt must be one of {PROMPT_STYLES}, got {prompt!r}")
    instruction = REASONING_PROMPT if prompt == "training" else RELEASED_EVAL_PROMPT
    return f"{question_text(item)}\n{instruction}"


def _image_paths(items, data_path: Path) -> list[Path]:
    """Each item's image file (relative to the data file); ValueError naming file:line when a
    record has none or it is missing (a model run needs them; --completions does not)."""
    paths, errors = [], []
    for item in items:
        if item.image is None:
            errors.append(f"{item.where}: field 'image' missing (needed to run a model)")
            continue
        path = Path(item.image).expanduser()
        path = path if path.is_absolute() else data_path.parent / path
        if not path.is_file():
            errors.append(f"{item.where}: field 'image': file {str(path)!r} not found")
        paths.append(path)
    if errors:
        raise ValueError(f"{len(errors)} record(s) without a usable image:\n  "
                         + "\n  ".join(errors[:10]))
    return paths


def _encode_benchmark(processor, chunk, prompt: str) -> dict:
    """Left-padded generation inputs for (item, image path) pairs; image before text."""
    from stepgrpo_fast.data.images import load_image

    texts, images = [], []
    for item, image_path in chunk:
        messages = [{"role": "user", "content": [
            {"type": "image", "image": str(image_path)},
            {"type": "text", "text": benchmark_prompt(item, prompt)},
        ]}]
        texts.append(processor.apply_chat_template(messages, tokenize=False,
                                                   add_generation_prompt=True))
        images.append(load_image(image_path))  # RGB, EXIF upright, alpha onto white
    batch = processor(text=texts, images=images, padding=True, padding_side="left",
                      truncation=False, return_tensors="pt")
    return dict(batch.items())


def _grouped_accuracy(keys: Sequence[str], correct: Sequence[bool]) -> dict[str, dict]:
    groups: dict[str, list[bool]] = {}
    for key, ok in zip(keys, correct):
        groups.setdefault(key, []).append(ok)
    return {k: {"num_examples": len(v), "accuracy": sum(v) / len(v)}
            for k, v in sorted(groups.items())}


def evaluate_benchmark(
    data_path: str | Path,
    fmt: str,
    *,
    completions_path: str | Path | None = None,
    model_dir: str | Path | None = None,
    prompt: str = "training",
    batch_size: int = 4,
    max_new_tokens: int = 1024,
    limit: int | None = None,
    predictions_path: str | Path | None = None,
    device: str | None = None,
    dtype: str = "auto",
    max_pixels: int | None = None,
    model: Any = None,
    processor: Any = None,
) -> dict[str, Any]:
    """Score a benchmark file in format ``fmt`` ("mathvista" | "mcq" | "open"; rules:
    rewards/benchmark_formats.py) -> metrics.

    The completions are either read from ``completions_path`` ({"pid", "completion"} JSONL; no
    model is loaded and no image opened) or generated greedily by the checkpoint at
    ``model_dir`` (or the in-memory ``model``/``processor``) with the ``prompt`` style
    ("training" | "released"). Returns {"format", "num_examples", "accuracy", "answered",
    "by_question_type", "by_answer_type", "by_source" ({name: {"num_examples", "accuracy"}}),
    "answer_check_timeouts", "answer_check_too_complex"} plus, for a model run,
    "completion_length" and "validity" (StepRVR, paper mode). predictions_path: JSONL with one
    {"pid", "question", "choices", "answer", "question_type", "answer_type", "source",
    "answer_line", "correct", "completion"} per record (usable as ``completions_path`` later).
    """
    from stepgrpo_fast.rewards.benchmark_formats import judge
    from stepgrpo_fast.rewards.benchmark_records import load_benchmark, load_completions
    from stepgrpo_fast.rewards.bounded import answer_check_stats

    data_path = Path(data_path)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if prompt not in PROMPT_STYLES:
        raise ValueError(f"prompt must be one of {PROMPT_STYLES}, got {prompt!r}")
    items = load_benchmark(data_path, fmt)
    if limit is not None:
        items = items[:limit]
    extra: dict[str, float] = {}
    if completions_path is not None:
        if model is not None or model_dir is not None:
            raise ValueError("give either completions or a model to evaluate, not both")
        texts = load_completions(completions_path, items)
    else:
        texts, extra = _benchmark_generate(items, data_path, model_dir, model, processor,
                                           prompt=prompt, batch_size=batch_size,
                                           max_new_tokens=max_new_tokens, device=device,
                                           dtype=dtype, max_pixels=max_pixels)
    before = answer_check_stats()
    judgements = [judge(item, text, fmt) for item, text in zip(items, texts)]
    after = answer_check_stats()
    correct = [j.correct for j in judgements]
    result: dict[str, Any] = {
        "format": fmt,
        "num_examples": len(items),
        "accuracy": sum(correct) / len(items),
        "answered": sum(j.answer_line is not None for j in judgements) / len(items),
        "by_question_type": _grouped_accuracy([i.question_type for i in items], correct),
        "by_answer_type": _grouped_accuracy([i.answer_type for i in items], correct),
        "by_source": _grouped_accuracy([i.source for i in items], correct),
        "answer_check_timeouts": after["timeouts"] - before["timeouts"],
        "answer_check_too_complex": after["too_complex"] - before["too_complex"],
        **extra,
    }
    if predictions_path is not None:
        with open(predictions_path, "w") as f:
            for item, text, j in zip(items, texts, judgements):
                row = {"pid": item.pid, "question": item.question,
                       "choices": list(item.choices) if item.choices is not None else None,
                       "answer": item.answer, "question_type": item.question_type,
                       "answer_type": item.answer_type, "source": item.source,
                       "answer_line": j.answer_line, "correct": j.correct, "completion": text}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return result


def _benchmark_generate(items, data_path, model_dir, model, processor, *, prompt, batch_size,
                        max_new_tokens, device, dtype, max_pixels):
    """Greedy completions of a checkpoint for benchmark items -> (texts, extra metrics)."""
    from stepgrpo_fast import rewards
    from stepgrpo_fast.trainer.model.loading import load_model_and_processor

    images = _image_paths(items, data_path)  # before loading any model: fail fast
    if model is None:
        if model_dir is None:
            raise ValueError("need a model (--model DIR) or given completions (--completions)")
        model, processor = load_model_and_processor(model_dir, torch_dtype=dtype, device=device,
                                                     max_pixels=max_pixels)
    elif processor is None:
        raise ValueError("evaluate_benchmark(model=...) needs processor= too")
    pairs = list(zip(items, images))
    texts, lengths = _greedy_completions(
        model, processor, pairs, lambda chunk: _encode_benchmark(processor, chunk, prompt),
        batch_size=batch_size, max_new_tokens=max_new_tokens,
    )
    validity = rewards.step_validity_reward(texts, mode="paper")
    return texts, {"completion_length": sum(lengths) / len(lengths),
                   "validity": sum(validity) / len(validity)}
