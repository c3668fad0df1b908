"""Images go where the question's <image> placeholders are (before the question when there are
none), in order; text-only and multi-image records share a batch in encode_prompts / encode_sft."""

import pytest
from PIL import Image

from stepgrpo_fast.data.images import resized_size
from stepgrpo_fast.data.prompts import build_messages, encode_prompts, encode_sft
from stepgrpo_fast.data.records import Record
from stepgrpo_fast.trainer.model.loading import load_model_and_processor


@pytest.fixture(scope="module")
def processor(tiny_ckpt):
    return load_model_and_processor(tiny_ckpt)[1]


def _record(question, sizes, tmp_path, response="### The final answer is:\n2"):
    paths = []
    for k, size in enumerate(sizes):
        path = tmp_path / f"{abs(hash(question))}_{k}.png"
        Image.new("RGB", size, (30 * k, 90, 160)).save(path)
        paths.append(path)
    return Record(question=question, solution="2", response=response, images=paths,
                  source=f"q:{question[:8]}")


def test_parts_follow_the_placeholders(tmp_path):
    two = _record("Compare <image> with <image> now.", [(56, 56), (28, 84)], tmp_path)
    parts = build_messages(two)[0]["content"]
    assert [p["type"] for p in parts] == ["text", "image", "text", "image", "text"]
    assert parts[0]["text"] == "Compare " and parts[2]["text"] == " with "
    assert [p["image"] for p in parts if p["type"] == "image"] == [str(p) for p in two.images]
    lead = build_messages(_record("No placeholder.", [(56, 56), (56, 56)], tmp_path))
    assert [p["type"] for p in lead[0]["content"]] == ["image", "image", "text"]
    text_only = build_messages(_record("Just text: 1 + 1?", [], tmp_path))[0]["content"]
    assert [p["type"] for p in text_only] == ["text"]


def test_encode_prompts_mixed_batch(processor, tmp_path):
    two = _record("Compare <image> with <image> now.", [(56, 56), (28, 84)], tmp_path)
    none = _record("Just text: 1 + 1?", [], tmp_path)
    one = _record("One picture.", [(56, 56)], tmp_path)
    batch = encode_prompts(processor, [two, none, one])
    assert batch["image_grid_thw"].shape[0] == 3  # images of the batch, in prompt order
    # 28 x 84 px is under min_pixels (3136): upscaled to 56 x 112 px = 4 x 8 patches
    assert batch["image_grid_thw"][1].tolist() == [1, 8, 4]
    assert resized_size(28, 84, 3136, 400_000) == (56, 112)
    tokenizer = processor.tokenizer
    text = tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()])
    first, second = text.index("<|vision_start|>"), text.rindex("<|vision_start|>")
    assert text.index("Compare") < first < text.index(" with ") < second < text.index(" now.")
    assert "<|vision_start|>" not in tokenizer.decode(batch["input_ids"][1])
    vision_start = tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert (batch["input_ids"] == vision_start).sum(dim=1).tolist() == [2, 0, 1]
    text_only = encode_prompts(processor, [none])
    assert "pixel_values" not in text_only and "image_grid_thw" not in text_only


def test_encode_sft_mixed_batch(processor, tmp_path):
    records = [_record("Compare <image> with <image> now.", [(56, 56), (56, 56)], tmp_path),
               _record("Just text: 1 + 1?", [], tmp_path)]
    batch = encode_sft(processor, records)
    assert batch["image_grid_thw"].shape[0] == 2
    assert (batch["labels"] != -100).sum(dim=1).min() > 0
    assert "pixel_values" not in encode_sft(processor, records[1:])
