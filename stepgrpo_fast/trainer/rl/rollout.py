"""Rollout: M sampled completions per prompt from a Hugging Face (multimodal) causal LM.

    prompt inputs (B prompts)  --repeat each M times-->  (B*M rows)  --generate-->  completions

Sampling is exactly ``softmax(logits / temperature)`` with the configured top-k / top-p (what the
loss assumes), by the Gumbel-max trick inside our own logits processor; HF then picks the argmax.

* ``row_seeds`` given (the trainer's default): every row owns a torch.Generator seeded from
  its seed. A row's completion then depends only on (its seed, its prompt, the weights): not on
  the batch it shares, the number of processes, or where a run was resumed.
* ``row_seeds=None``: the noise comes from the global torch RNG.

The checkpoint's generation_config.json never reaches the sampler: ``model.generate`` fills every
option a call leaves unset from it (Qwen's Instruct checkpoints ship top_k 1, top_p 0.001,
temperature 0.01, repetition_penalty 1.05; others no_repeat_ngram_size), so generation runs with
a neutral ``model.generation_config`` swapped in and HF's own warpers off. A repetition penalty is
applied only when the caller passes one (it biases the policy gradient: the loss does not see it).

The completion mask covers tokens up to AND including the first EOS; rows that hit
``max_new_tokens`` without an EOS are kept whole.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from stepgrpo_fast.trainer.rl.shared_prompt import shared_generation_inputs

PER_IMAGE_KEYS = ("pixel_values", "image_grid_thw")


@dataclass
class Rollout:
    """B*M rows, prompt-major (rows i*M .. i*M+M-1 belong to prompt i).

    prompt_inputs:   model inputs of the repeated prompts, e.g. input_ids / attention_mask
                     [B*M, P], pixel_values [sum of patches, D], image_grid_thw [images, 3]
    completion_ids:  [B*M, C] long; positions after the first EOS hold pad_token_id
    completion_mask: [B*M, C] long; 1 up to and including the first EOS
    texts:           B*M decoded completions (special tokens dropped)
    """

    prompt_inputs: dict[str, torch.Tensor]
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    texts: list[str]
    num_generations: int

    @property
    def prompt_length(self) -> int:
        return int(self.prompt_inputs["input_ids"].shape[1])

    @property
    def completion_lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(dim=1)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integer parts (numpy SeedSequence hashing; order matters)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(
        2, np.uint64
    )
    return int(state[0] >> np.uint64(1))


def repeat_prompt_inputs(
    inputs: dict[str, Any], repeats: int, *, vision_start_token_id: int | None = None
) -> dict[str, torch.Tensor]:
    """Repeat every prompt ``repeats`` times, row by row (prompt-major), images included.

    Row tensors ([B, ...]) are repeat_interleaved. ``pixel_values`` ([sum of patches, D]) and
    ``image_grid_thw`` ([images, 3]) are per image: each row's images (counted by its
    ``vision_start_token_id`` tokens, or one image per row when that id is None and there are
    exactly B images) are copied along with the row.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    input_ids = inputs["input_ids"]
    batch = input_ids.shape[0]
    out: dict[str, torch.Tensor] = {}
    for key, value in inputs.items():
        if key in PER_IMAGE_KEYS or not isinstance(value, torch.Tensor):
            continue
        if value.dim() == 0 or value.shape[0] != batch:
            raise ValueError(
                f"cannot repeat input {key!r} of shape {list(value.shape)}: "
                f"expected a leading batch dim of {batch}"
            )
        out[key] = value.repeat_interleave(repeats, dim=0)
    grid = inputs.get("image_grid_thw")
    pixels = inputs.get("pixel_values")
    if grid is None and pixels is None:
        return out
    if grid is None or pixels is None:
        raise ValueError("pixel_values and image_grid_thw must be given together")
    if vision_start_token_id is not None:
        images_per_row = (input_ids == vision_start_token_id).sum(dim=1).tolist()
    elif grid.shape[0] == batch:
        images_per_row = [1] * batch
    else:
        raise ValueError(
            f"{grid.shape[0]} images for {batch} prompts: pass vision_start_token_id "
            "so each prompt's images can be found"
        )
    if sum(images_per_row) != grid.shape[0]:
        raise ValueError(
            f"prompts hold {sum(images_per_row)} image markers but image_grid_thw has "
            f"{grid.shape[0]} rows"
        )
    patches_per_image = grid.prod(dim=-1).tolist()
    if sum(patches_per_image) != pixels.shape[0]:
        raise ValueError(
            f"image_grid_thw describes {sum(patches_per_image)} patches, "
            f"pixel_values has {pixels.shape[0]}"
        )
    patch_chunks = list(torch.split(pixels, patches_per_image, dim=0))
    grid_rows, pixel_rows, img = [], [], 0
    for count in images_per_row:
        row_grid = grid[img : img + count]
        row_pixels = patch_chunks[img : img + count]
        for _ in range(repeats):
            grid_rows.append(row_grid)
            pixel_rows.extend(row_pixels)
        img += count
    out["image_grid_thw"] = torch.cat(grid_rows, dim=0)
    out["pixel_values"] = torch.cat(pixel_rows, dim=0) if pixel_rows else pixels[:0]
    return out


def completion_mask_from_eos(
    completion_ids: torch.Tensor, eos_token_ids: Sequence[int]
) -> torch.Tensor:
    """[N, C] ids -> [N, C] long mask: 1 up to and including the first EOS (all 1 without EOS)."""
    if completion_ids.dim() != 2:
        raise ValueError(f"completion_ids must be [N, C], got shape {list(completion_ids.shape)}")
    n, c = completion_ids.shape
    is_eos = torch.zeros_like(completion_ids, dtype=torch.bool)
    for eos in eos_token_ids:
        is_eos |= completion_ids == eos
    first_eos = torch.full((n,), c, dtype=torch.long, device=completion_ids.device)
    has_eos = is_eos.any(dim=1)
    first_eos[has_eos] = is_eos.int().argmax(dim=1)[has_eos]
    positions = torch.arange(c, device=completion_ids.device).expand(n, c)
    return (positions <= first_eos.unsqueeze(1)).long()


def ended_with_eos(
    completion_ids: torch.Tensor, completion_mask: torch.Tensor, eos_token_ids: Sequence[int]
) -> torch.Tensor:
    """[N] bool: the completion holds an EOS inside its mask (False: it was cut at
    max_new_tokens; TRL's mask_truncated_completions masks those)."""
    is_eos = torch.zeros_like(completion_ids, dtype=torch.bool)
    for eos in eos_token_ids:
        is_eos |= completion_ids == eos
    return (is_eos & completion_mask.bool()).any(dim=1)


class GumbelSampler:
    """Logits processor that turns greedy decoding into sampling from the global torch RNG.

    scores [N, V] -> scores / T (+ top-k / top-p filter to -inf) + Gumbel(0, 1) noise, so
    argmax(out[r]) ~ softmax(filtered scores[r] / T).
    """

    def __init__(self, temperature: float, top_k: int = 0, top_p: float = 1.0) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k < 0 or not 0.0 < top_p <= 1.0:
            raise ValueError(f"need top_k >= 0 and 0 < top_p <= 1, got {top_k}, {top_p}")
        self.temperature = float(temperature)
        self.top_k = int(top_k)
        self.top_p = float(top_p)

    def uniform(self, scores: torch.Tensor) -> torch.Tensor:
        """[N, V] uniform(0, 1) noise."""
        return torch.rand(scores.shape, device=scores.device)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float() / self.temperature
        scores = _filter_top_k_top_p(scores, self.top_k, self.top_p)
        uniform = self.uniform(scores)
        gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(torch.float32).tiny)))
        return scores + gumbel


class SeededGumbelSampler(GumbelSampler):
    """:class:`GumbelSampler` whose row r draws its noise from its own generator (seed r)."""

    def __init__(
        self,
        row_seeds: Sequence[int],
        temperature: float,
        top_k: int = 0,
        top_p: float = 1.0,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(temperature, top_k, top_p)
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in row_seeds]

    def uniform(self, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[0] != len(self.generators):
            raise ValueError(
                f"sampler has {len(self.generators)} row seeds but got {scores.shape[0]} rows"
            )
        return torch.stack(
            [
                torch.rand(scores.shape[1], generator=g, device=scores.device)
                for g in self.generators
            ]
        )


@contextlib.contextmanager
def neutral_generation_config(model: Any) -> Iterator[None]:
    """Swap in a GenerationConfig that holds nothing but the checkpoint's special-token ids, so
    ``generate`` cannot fill unset options (top_k, top_p, temperature, repetition_penalty,
    no_repeat_ngram_size, ...) from the checkpoint's generation_config.json."""
    from transformers import GenerationConfig

    saved = getattr(model, "generation_config", None)
    keep = {
        k: getattr(saved, k)
        for k in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
        if getattr(saved, k, None) is not None
    }
    model.generation_config = GenerationConfig(**keep)
    try:
        yield
    finally:
        model.generation_config = saved


def _filter_top_k_top_p(scores: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k > 0 and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
        cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = (
            cum - sorted_scores.softmax(dim=-1) >= top_p
        )  # keep the token that crosses top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a completion: the generation config's eos ids, the tokenizer's, and the
    chat template's end-of-turn token (<|im_end|>, what SFT labels end with), which a base
    release's generation_config (<|endoftext|> only) does not list."""
    from stepgrpo_fast.data.prompts import end_of_turn_id

    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    try:
        end_of_turn = end_of_turn_id(tokenizer)
    except ValueError:  # neither <|im_end|> nor an eos token: the check below names it
        end_of_turn = None
    for value in (gen_eos, getattr(tokenizer, "eos_token_id", None), end_of_turn):
        if value is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if int(v) not in ids:
                ids.append(int(v))
    if not ids:
        raise ValueError(
            "no EOS token id: set tokenizer.eos_token_id or generation_config.eos_token_id"
        )
    return ids


def vision_placeholder_ids(model: Any) -> list[int]:
    """Token ids that stand for image / video features (never valid in a completion)."""
    config = getattr(model, "config", None)
    ids = []
    for name in (
        "image_token_id",
        "video_token_id",
        "vision_start_token_id",
        "vision_end_token_id",
    ):
        value = getattr(config, name, None)
        if value is not None:
            ids.append(int(value))
    return ids


@torch.no_grad()
def generate_rollouts(
    model: Any,
    tokenizer: Any,
    prompt_inputs: dict[str, Any],
    *,
    num_generations: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    do_sample: bool = True,
    row_seeds: Sequence[int] | None = None,
    vision_start_token_id: int | None = None,
    suppress_token_ids: Sequence[int] | None = None,
    repetition_penalty: float = 1.0,
    stopping_criteria: Sequence[Any] = (),
    share_prompt: bool = False,
) -> Rollout:
    """Generate ``num_generations`` completions for each of the B prompts in ``prompt_inputs``.

    prompt_inputs: encode_prompts(...) output, left-padded: input_ids / attention_mask [B, P]
                   (+ pixel_values, image_grid_thw, mm_token_type_ids ...), on the model's device
    row_seeds:     B*M seeds for the per-row sampler, or None for noise from the global torch RNG
    do_sample:     False -> greedy (num_generations identical rows; used by evaluation)
    suppress_token_ids: ids never sampled; default: the model's image / video placeholder
                   tokens (a sampled placeholder would break the next forward's image-feature count)
    repetition_penalty: HF's CTRL-style penalty, 1.0 = off. Sampling then no longer follows the
                   policy the loss scores; the trainer warns when it is configured.
    stopping_criteria: extra transformers StoppingCriteria (the trainer's: stop on a signal).
    share_prompt:  prefill each prompt (vision tower included) once and expand its KV cache to
                   its num_generations rows (rl/shared_prompt.py); the same completions as the
                   repeated prefill. Falls back to it where the shared one is not exact.
    The checkpoint's generation_config.json is ignored except for its special-token ids.
    """
    from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

    inputs = repeat_prompt_inputs(
        prompt_inputs, num_generations, vision_start_token_id=vision_start_token_id
    )
    rows = inputs["input_ids"].shape[0]
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    if suppress_token_ids is None:
        suppress_token_ids = vision_placeholder_ids(model)
    if repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {repetition_penalty}")
    processors = LogitsProcessorList()
    if do_sample and row_seeds is not None:
        if len(row_seeds) != rows:
            raise ValueError(
                f"row_seeds has {len(row_seeds)} seeds, need {rows} (prompts x num_generations)"
            )
        processors.append(
            SeededGumbelSampler(
                row_seeds, temperature, top_k, top_p, device=inputs["input_ids"].device
            )
        )
    elif do_sample:
        processors.append(GumbelSampler(temperature, top_k, top_p))
    # HF decodes greedily over the sampler's perturbed scores; every option that could change
    # the distribution is set explicitly (and the checkpoint's defaults are swapped out).
    gen_config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        do_sample=False,
        num_beams=1,
        repetition_penalty=float(repetition_penalty),
        no_repeat_ngram_size=0,
        bad_words_ids=None,
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
        suppress_tokens=list(suppress_token_ids) or None,
    )
    was_training = model.training
    model.eval()
    try:
        gen_inputs = inputs
        if share_prompt and num_generations > 1:  # the prompt prefilled once per group
            shared, _ = shared_generation_inputs(model, prompt_inputs, inputs, num_generations)
            gen_inputs = shared or inputs
        with neutral_generation_config(model):
            out = model.generate(
                **gen_inputs, generation_config=gen_config, logits_processor=processors,
                stopping_criteria=StoppingCriteriaList(stopping_criteria),
            )
    finally:
        model.train(was_training)
    sequences = out if isinstance(out, torch.Tensor) else out.sequences
    completion_ids = sequences[:, inputs["input_ids"].shape[1] :]  # [B*M, C]
    mask = completion_mask_from_eos(completion_ids, eos_ids)
    completion_ids = completion_ids.masked_fill(mask == 0, pad_id)
    texts = [
        tokenizer.decode(row[: int(n)].tolist(), skip_special_tokens=True)
        for row, n in zip(completion_ids, mask.sum(dim=1))
    ]
    return Rollout(inputs, completion_ids, mask, texts, num_generations)
