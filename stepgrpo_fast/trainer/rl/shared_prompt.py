"""Shared prompt: each GRPO group's images and prompt run through the model once, not G times.

A group is one prompt (left-padded to P tokens, images inside) and its G sampled completions
(C tokens each, right-padded after the first EOS). The repeated layout feeds G copies of
[prompt | completion] ([B*G, P+C]); the shared layout is

    prompt pass      [B, P]     vision tower + decoder once per group, KV cache kept
    expand           K/V [B, kv_heads, P, d] -> [B*G, kv_heads, P, d]   (repeat_interleave)
    completion pass  [B*G, C]   the G completions as a batch on top of their prompt's cache:
                                each sees its prompt and, causally, itself, never another
                                completion (the cache-attention equivalent of the block mask
                                [prompt causal | c_j -> prompt + c_j causal])

Positions continue from the prompt's: the prompt's (3-D M-RoPE for Qwen2/2.5/3-VL) positions are
the model's own ``get_rope_index`` of the un-repeated prompts, a completion's valid token t gets
``next_position + t`` (what ``get_rope_index`` of the repeated row gives it). Qwen3-VL's deep-stack
features are added at the prompt's image tokens inside the prompt pass; completions hold none.
Under autograd the expanded K/V are differentiable views of the prompt pass's, so the prompt
(and the vision tower) receives the sum of its G completions' gradients: the gradient equals the
repeated layout's. Only the K/V (2 x kv_heads x head_dim per token and layer) are held G times;
the image features and the prompt's activations once.

The hidden state predicting completion token 0 is the prompt's last position (one per group,
repeated to its G rows); token t > 0 is predicted by the completion pass's position t-1. So the
fused head only ever sees completion positions.
"""

from __future__ import annotations

from typing import Any

import torch

from stepgrpo_fast.lm_head import unwrap_model

# model_type values whose shared layout is tested exact against the repeated one (fp32, 1e-5)
EXACT_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
PER_IMAGE_KEYS = ("pixel_values", "image_grid_thw")
VISION_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")
TOKEN_TYPE_KEYS = ("mm_token_type_ids",)


def unsupported_reason(model: Any, *, training: bool = False) -> str | None:
    """Why ``model`` must use the repeated layout, or None when the shared one is exact.

    training: the forward will be differentiated (gradient checkpointing drops the KV cache
    there, so the policy update falls back; reference / old log-probs and rollouts do not).
    """
    bare = unwrap_model(model)
    config = getattr(bare, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in EXACT_MODEL_TYPES:
        return f"model_type {model_type!r} is not one of {EXACT_MODEL_TYPES}"
    attn = getattr(config, "_attn_implementation", None) or "sdpa"
    if "flash" in attn:
        return f"attn_implementation {attn!r} takes no prefix-shared attention mask here"
    checkpointed = getattr(bare, "is_activation_checkpointing", None)
    if checkpointed is None:  # transformers < 5.x
        checkpointed = getattr(bare, "is_gradient_checkpointing", False)
    if training and checkpointed:
        return "gradient checkpointing disables the KV cache the completions attend to"
    return None


def group_prompt_inputs(
    inputs: dict[str, torch.Tensor], group_size: int, *, vision_start_token_id: int | None
) -> dict[str, torch.Tensor]:
    """The inverse of ``rollout.repeat_prompt_inputs``: every G-th row and its images.

    inputs: repeated prompt inputs, rows prompt-major ([B*G, P] row tensors, per-image tensors)
    Returns B-row inputs (row tensors sliced, each group's first row's images kept).
    """
    ids = inputs["input_ids"]
    rows = ids.shape[0]
    if group_size < 1 or rows % group_size:
        raise ValueError(f"{rows} prompt rows are not groups of num_generations={group_size}")
    out = {
        k: v[::group_size]
        for k, v in inputs.items()
        if k not in PER_IMAGE_KEYS and isinstance(v, torch.Tensor)
    }
    for k in range(0, rows, group_size):
        if not torch.equal(ids[k : k + group_size], ids[k : k + 1].expand(group_size, -1)):
            raise ValueError(f"prompt rows {k}..{k + group_size - 1} of one group differ")
    grid, pixels = inputs.get("image_grid_thw"), inputs.get("pixel_values")
    if grid is None or pixels is None:
        return out
    if vision_start_token_id is not None:
        per_row = (ids == vision_start_token_id).sum(dim=1).tolist()
    elif grid.shape[0] == rows:
        per_row = [1] * rows
    else:
        raise ValueError(f"{grid.shape[0]} images for {rows} rows: need vision_start_token_id")
    patches = grid.prod(dim=-1).tolist()
    chunks = list(torch.split(pixels, patches, dim=0))
    keep_grid, keep_pixels, img = [], [], 0
    for row, count in enumerate(per_row):
        if row % group_size == 0:
            keep_grid.append(grid[img : img + count])
            keep_pixels.extend(chunks[img : img + count])
        img += count
    out["image_grid_thw"] = torch.cat(keep_grid, dim=0)
    out["pixel_values"] = torch.cat(keep_pixels, dim=0) if keep_pixels else pixels[:0]
    return out


def _token_types(bare: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    if inputs.get("mm_token_type_ids") is not None:
        return inputs["mm_token_type_ids"]
    ids, config = inputs["input_ids"], bare.config
    token_type = torch.zeros_like(ids, dtype=torch.long)
    token_type[ids == config.image_token_id] = 1
    token_type[ids == config.video_token_id] = 2
    return token_type


def prompt_positions(bare: Any, inputs: dict[str, torch.Tensor]):
    """(positions [3, B, P], next [B] or None): the prompt's rope positions as the model computes
    them for the repeated rows. ``next`` is the position of a valid token right after the
    prompt (vision inputs: valid tokens count on from there, masked ones sit at 0); None for a
    text-only batch, where the model numbers every column 0, 1, ... (padding included)."""
    ids = inputs["input_ids"]
    b, p = ids.shape
    has_vision = any(inputs.get(k) is not None for k in ("image_grid_thw", "video_grid_thw"))
    if not has_vision:
        return torch.arange(p, device=ids.device).view(1, 1, p).expand(3, b, p), None
    extra = {k: inputs[k] for k in ("second_per_grid_ts",) if inputs.get(k) is not None}
    positions, deltas = bare.model.get_rope_index(
        ids,
        mm_token_type_ids=_token_types(bare, inputs),
        image_grid_thw=inputs.get("image_grid_thw"),
        video_grid_thw=inputs.get("video_grid_thw"),
        attention_mask=inputs["attention_mask"],
        **extra,
    )
    valid = inputs["attention_mask"].sum(dim=1).to(positions.device)
    return positions, valid + deltas.view(-1).to(positions.device)


def completion_positions(
    next_position: torch.Tensor | None, completion_mask: torch.Tensor, prompt_length: int
) -> torch.Tensor:
    """[3, N, C] positions of the completion tokens (next_position already repeated to N rows)."""
    n, c = completion_mask.shape
    if next_position is None:  # text-only: columns P, P+1, ...
        cols = torch.arange(prompt_length, prompt_length + c, device=completion_mask.device)
        return cols.view(1, 1, c).expand(3, n, c)
    mask = completion_mask.long()
    pos = next_position.view(n, 1) + mask.cumsum(dim=1) - 1
    return pos.masked_fill(mask == 0, 0).unsqueeze(0).expand(3, n, c)


def _model_inputs(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    keep = ("input_ids", "attention_mask", *VISION_KEYS, *TOKEN_TYPE_KEYS, "second_per_grid_ts")
    unknown = [k for k in inputs if k not in keep and inputs[k] is not None]
    if unknown:
        raise ValueError(f"shared prompt: do not know prompt input(s) {unknown}")
    return {k: v for k, v in inputs.items() if v is not None}


def prefill(model: Any, prompt_inputs: dict[str, torch.Tensor], *, length: int | None = None):
    """Run the B prompts (vision tower included) once: (hidden [B, L, H], cache, next [B]|None).

    length: keep only the first L prompt columns (the rollout prefills P-1 and lets ``generate``
    take the last token); default all P.
    """
    bare = unwrap_model(model)
    inputs = _model_inputs(prompt_inputs)
    positions, next_position = prompt_positions(bare, inputs)
    if hasattr(bare.model, "rope_deltas"):
        bare.model.rope_deltas = None
    if length is not None:
        inputs = {
            k: (v if k in VISION_KEYS or k == "second_per_grid_ts" else v[:, :length])
            for k, v in inputs.items()
        }
        positions = positions[:, :, :length]
    if inputs.get("image_grid_thw") is not None or inputs.get("video_grid_thw") is not None:
        inputs["mm_token_type_ids"] = _token_types(bare, inputs)
    out = bare.model(**inputs, position_ids=positions, use_cache=True, return_dict=True)
    if out.cache is None:
        raise RuntimeError("shared prompt: the model returned no KV cache for the prompt")
    return out.last_hidden_state, out.cache, next_position


def shared_completion_hidden_states(
    model: Any,
    prompt_inputs: dict[str, torch.Tensor],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    group_size: int,
) -> torch.Tensor:
    """[N, C, H]: the final-norm hidden state predicting each completion token, N = B*G.

    prompt_inputs: the B un-repeated prompts ([B, P] rows + their images)
    completion_ids / completion_mask: [N, C], prompt-major (rows g*G .. g*G+G-1: prompt g)
    Equal to ``decoder_hidden_states`` of the repeated [prompt | completion] rows at
    positions P-1 .. P+C-2 (and so are the gradients through it).
    """
    b, p = prompt_inputs["input_ids"].shape
    n, c = completion_ids.shape
    if n != b * group_size or completion_mask.shape != completion_ids.shape:
        raise ValueError(
            f"{b} prompts x num_generations {group_size} != completion rows {n} "
            f"(completion_mask {list(completion_mask.shape)})"
        )
    hidden, cache, next_position = prefill(model, prompt_inputs)
    first = hidden[:, -1:].repeat_interleave(group_size, dim=0)  # [N, 1, H] predicts token 0
    if c == 1:
        return first
    cache.batch_repeat_interleave(group_size)  # K/V [N, kv, P, d], gradients sum back per group
    nexts = None if next_position is None else next_position.repeat_interleave(group_size)
    mask = torch.cat(
        [
            prompt_inputs["attention_mask"].repeat_interleave(group_size, dim=0),
            completion_mask.to(prompt_inputs["attention_mask"].dtype),
        ],
        dim=1,
    )  # [N, P+C]
    bare = unwrap_model(model)
    out = bare.model.language_model(
        input_ids=None,
        inputs_embeds=bare.model.get_input_embeddings()(completion_ids[:, :-1]),
        attention_mask=mask[:, :-1],
        position_ids=completion_positions(nexts, completion_mask, p)[:, :, :-1],
        cache=cache,
        use_cache=True,
        return_dict=True,
    )
    return torch.cat([first, out.last_hidden_state], dim=1)  # [N, C, H]


def shared_generation_inputs(
    model: Any, prompt_inputs: dict[str, torch.Tensor], repeated: dict[str, torch.Tensor],
    group_size: int,
) -> tuple[dict[str, Any] | None, str | None]:
    """The rollout prefill once per group: (generate kwargs for the B*G rows, reason None), or
    (None, reason) when the repeated prefill must run (unsupported model, text-only batch).

    The B prompts' first P-1 columns run once (vision tower included, no grad); their KV cache is
    expanded to the G rows of each group, and ``generate`` gets the repeated ids / mask with that
    cache (it runs the last prompt column itself, then decodes). The model's stored rope deltas
    are set per row, as ``generate`` leaves them after its own prefill, so every decoded
    token's 3-D position is the repeated path's.
    """
    reason = unsupported_reason(model)
    ids = prompt_inputs["input_ids"]
    if reason is None and prompt_inputs.get("image_grid_thw") is None:
        reason = "text-only batch (no vision tower to share)"
    if reason is None and ids.shape[1] < 2:
        reason = "a one-token prompt leaves nothing to prefill"
    if reason is not None:
        return None, reason
    _, cache, next_position = prefill(model, prompt_inputs, length=ids.shape[1] - 1)
    cache.batch_repeat_interleave(group_size)
    deltas = next_position - prompt_inputs["attention_mask"].sum(dim=1).to(next_position.device)
    unwrap_model(model).model.rope_deltas = deltas.repeat_interleave(group_size).view(-1, 1)
    kwargs = {k: repeated[k] for k in ("input_ids", "attention_mask")}
    kwargs["cache"] = cache
    return kwargs, None
