"""Chat prompts for a training record and their tensor encoding.

``encode_prompts`` builds left-padded generation inputs, ``encode_sft`` right-padded inputs with
labels on the response only. Prompts are never truncated (truncation can cut image tokens).
"""

from __future__ import annotations

from stepgrpo_fast.data.records import Record, load_image

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
    """Chat messages: a user turn with the image part BEFORE the text, and (optionally) the
    assistant turn holding the reference reasoning."""
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": str(record.image_path)},
                {"type": "text", "text": user_text(record, template)},
            ],
        }
    ]
    if with_response:
        if record.response is None:
            raise ValueError(f"{record.source}: record has no 'response' to add")
        messages.append(
            {"role": "assistant", "content": [{"type": "text", "text": record.response}]}
        )
    return messages


def prompt_text(processor, record: Record, template: str = "default") -> str:
    return processor.apply_chat_template(
        build_messages(record, template=template), tokenize=False, add_generation_prompt=True
    )


def encode_prompts(processor, records: list[Record], *, template: str = "default") -> dict:
    """Left-padded generation inputs, never truncated; ``template``: see :func:`user_text`.

    Returns input_ids [B,S], attention_mask [B,S], pixel_values [P, C*T*p*p], image_grid_thw [B,3]
    and mm_token_type_ids [B,S] (1 at image tokens) when the processor emits it.
    """
    if not records:
        raise ValueError("encode_prompts: no records")
    texts = [prompt_text(processor, r, template) for r in records]
    images = [load_image(r) for r in records]
    batch = processor(
        text=texts,
        images=images,
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
        "pixel_values": prompts["pixel_values"],
        "image_grid_thw": prompts["image_grid_thw"],
        "labels": labels,
    }
    if has_types:
        out["mm_token_type_ids"] = token_types
    return out
