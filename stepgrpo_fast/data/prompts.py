"""Chat prompts for a training record and their tensor encoding.

``encode_prompts`` builds left-padded generation inputs, ``encode_sft`` right-padded inputs with
labels on the response only. Prompts are never truncated (truncation can cut image tokens).
A record's images go where its question's ``<image>`` placeholders are, in order, or before the
question when it has none; a text-only record has no image part. The processor gets the images
of the whole batch in prompt order (image_grid_thw [images, 3], each image resized within
min_pixels / max_pixels by the processor).
"""

from __future__ import annotations

from stepgrpo_fast.data.layouts import IMAGE_PLACEHOLDER
from stepgrpo_fast.data.records import Record, load_record_images

REASONING_PROMPT = (
    "Describe the image, give a rationale, then solve the problem in numbered steps. Use the headers "
    "### Image Description:, ### Rationales:, ### Let's think step by step., ### Step 1:, ### Step 2: "
    "(and so on), and end with ### The final answer is: xxx"
)

PROMPT_TEMPLATES = ("default", "r1vl")
# A question naming this header already asks for the response layout (the released records'
# `problem` carries its own instruction): it is used as it is.
OWN_INSTRUCTION_MARKER = "The final answer is"


def user_text(record: Record, template: str = "default") -> str:
    """The user turn's text: "default" = question, newline, instruction; "r1vl" = instruction,
    newline, question (the released layout). A question that already holds an instruction (it
    names "The final answer is") is returned unchanged under either template."""
    if template not in PROMPT_TEMPLATES:
        raise ValueError(f"prompt template must be one of {PROMPT_TEMPLATES}, got {template!r}")
    if OWN_INSTRUCTION_MARKER in record.question:
        return record.question
    if template == "r1vl":
        return f"{REASONING_PROMPT}\n{record.question}"
    return f"{record.question}\n{REASONING_PROMPT}"


def build_messages(
    record: Record, *, with_response: bool = False, template: str = "default"
) -> list[dict]:
    """Chat messages: a user turn with an image part at each ``<image>`` placeholder of the
    question (all images BEFORE the text when it has none), and (optionally) the assistant turn
    holding the reference reasoning."""
    messages = [{"role": "user", "content": user_content(record, template)}]
    if with_response:
        if record.response is None:
            raise ValueError(f"{record.source}: record has no 'response' to add")
        messages.append(
            {"role": "assistant", "content": [{"type": "text", "text": record.response}]}
        )
    return messages


def user_content(record: Record, template: str = "default") -> list[dict]:
    """The user turn's parts: images and text in the order the placeholders give."""
    text = user_text(record, template)
    images = [_image_part(src) for src in record.images]
    if IMAGE_PLACEHOLDER not in text:
        return [*images, {"type": "text", "text": text}]
    pieces = text.split(IMAGE_PLACEHOLDER)
    parts = []
    for i, piece in enumerate(pieces):
        if i > 0:
            parts.append(images[i - 1])
        if piece.strip():
            parts.append({"type": "text", "text": piece})
    return parts


def _image_part(src) -> dict:
    from pathlib import Path

    return {"type": "image", "image": str(src)} if isinstance(src, Path) else {"type": "image"}


def prompt_text(processor, record: Record, template: str = "default") -> str:
    return processor.apply_chat_template(
        build_messages(record, template=template), tokenize=False, add_generation_prompt=True
    )


def encode_prompts(processor, records: list[Record], *, template: str = "default") -> dict:
    """Left-padded generation inputs, never truncated; ``template``: see :func:`user_text`.

    Returns input_ids [B,S], attention_mask [B,S], pixel_values [P, C*T*p*p] and image_grid_thw
    [images, 3] (absent for a text-only batch) and mm_token_type_ids [B,S] (1 at image tokens)
    when the processor emits it. ImageDecodeError names the record whose image fails.
    """
    if not records:
        raise ValueError("encode_prompts: no records")
    texts = [prompt_text(processor, r, template) for r in records]
    images = [image for r in records for image in load_record_images(r)]
    batch = processor(
        text=texts,
        images=images or None,
        padding=True,
        padding_side="left",
        truncation=False,
        return_tensors="pt",
    )
    return {k: v for k, v in batch.items()}


def end_of_turn_id(tokenizer) -> int:
    """The token that closes an assistant turn: <|im_end|> in Qwen templates, else eos."""
    token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if token_id is None or token_id == tokenizer.unk_token_id:
        token_id = tokenizer.eos_token_id
    if token_id is None:
        raise ValueError("tokenizer has neither <|im_end|> nor an eos token")
    return int(token_id)


def encode_sft(processor, records: list[Record], *, template: str = "default") -> dict:
    """Right-padded SFT inputs: prompt tokens (as ``encode_prompts``) + response tokens + the
    end-of-turn token. ``labels`` [B,S] equals input_ids on the response and its end-of-turn token,
    -100 on the prompt and padding. The response is tokenized on its own, exactly as a generated
    completion would follow the prompt."""
    import torch

    missing = [r.source for r in records if not r.response]
    if missing:
        raise ValueError(f"encode_sft: records without 'response': {missing[:5]}")
    prompts = encode_prompts(processor, records, template=template)
    tokenizer = processor.tokenizer
    eot = end_of_turn_id(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot
    has_types = "mm_token_type_ids" in prompts

    rows = []
    for b, record in enumerate(records):
        keep = prompts["attention_mask"][b].bool()
        prompt_ids = prompts["input_ids"][b][keep]
        types = prompts["mm_token_type_ids"][b][keep] if has_types else None
        completion = tokenizer(record.response, add_special_tokens=False)["input_ids"] + [eot]
        rows.append((prompt_ids, torch.tensor(completion, dtype=prompt_ids.dtype), types))

    length = max(len(p) + len(c) for p, c, _ in rows)
    batch_size = len(rows)
    input_ids = torch.full((batch_size, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
    labels = torch.full((batch_size, length), -100, dtype=torch.long)
    token_types = torch.zeros((batch_size, length), dtype=torch.long) if has_types else None
    for b, (p, c, types) in enumerate(rows):
        n_p, n = len(p), len(p) + len(c)
        input_ids[b, :n_p] = p
        input_ids[b, n_p:n] = c
        attention_mask[b, :n] = 1
        labels[b, n_p:n] = c
        if has_types:
            token_types[b, :n_p] = types
    out = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
    }
    for key in ("pixel_values", "image_grid_thw"):  # absent for a text-only batch
        if key in prompts:
            out[key] = prompts[key]
    if has_types:
        out["mm_token_type_ids"] = token_types
    return out
