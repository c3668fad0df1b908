"""Record loading/validation (spec §5), chat messages, and prompt / SFT encoding."""

import json
import pathlib

import pytest
import torch
from PIL import Image

from stepgrpo_fast.data.records import load_records, normalize_key_steps
from stepgrpo_fast.data.prompts import REASONING_PROMPT, build_messages, encode_prompts, encode_sft, end_of_turn_id
from stepgrpo_fast.trainer.model.loading import load_model_and_processor


@pytest.fixture(scope="module")
def processor(tiny_ckpt):
    return load_model_and_processor(tiny_ckpt)[1]


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return load_model_and_processor(tiny_ckpt)[0]


def _image(path: pathlib.Path, size=(56, 56)) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


def _good(**overrides):
    record = {
        "image": "img/a.png",
        "question": "What is 2 + 3?",
        "solution": "5",
        "key_steps": [["2 + 3 = 5", "2+3=5"], "five"],
    }
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not None}


def _write_jsonl(path: pathlib.Path, records) -> pathlib.Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


# ---------------------------------------------------------------- loading


def test_loads_synthetic_jsonl(synthetic_data):
    records = load_records(synthetic_data["sft"], require_response=True)
    assert len(records) == 16
    first = records[0]
    assert first.image_path == synthetic_data["dir"] / "images" / "sft_00000.png"
    assert first.source == f"{synthetic_data['sft']}:1" and first.index == 0
    assert records[5].source.endswith(":6") and records[5].index == 5
    assert all(
        isinstance(g, list) and all(isinstance(f, str) for f in g)
        for r in records
        for g in r.key_steps
    )
    assert first.response.startswith("### Image Description:")


def test_released_layout_json_list(tmp_path):
    _image(tmp_path / "imgs" / "x.png")
    data = [
        {
            "image_path": "imgs/x.png",
            "problem": "Area?",
            "solution": 12,
            "key_steps": {"Steps": ["3 * 4 = 12", ["12", "twelve"]]},
        },
        {"image": str(tmp_path / "imgs" / "x.png"), "question": "Q?", "solution": "B"},
    ]
    path = tmp_path / "data.json"
    # Line 1 "[", first object on lines 2-3, second object starts on line 5.
    path.write_text(
        "[\n"
        + json.dumps(data[0])[:-1]
        + ",\n"
        + '"x": 0}'
        + ",\n\n"
        + json.dumps(data[1])
        + "\n]\n"
    )
    records = load_records(path)
    assert [r.question for r in records] == ["Area?", "Q?"]
    assert records[0].solution == "12"
    assert records[0].key_steps == [["3 * 4 = 12"], ["12", "twelve"]]
    assert records[1].key_steps == []
    assert records[0].image_path == tmp_path / "imgs" / "x.png"
    assert records[0].source == f"{path}:2" and records[1].source == f"{path}:5"


@pytest.mark.parametrize(
    "bad, field",
    [
        (_good(image="img/missing.png"), "not found"),
        (_good(image=""), "'image'"),
        (_good(question=None), "'question'"),
        (_good(question="   "), "'question'"),
        (_good(solution=None), "'solution'"),
        (_good(solution=[1]), "'solution'"),
        (_good(key_steps=3), "'key_steps'"),
        (_good(key_steps={"steps": []}), "'key_steps'"),
        (_good(key_steps=[["ok"], [1]]), r"'key_steps\[1\]'"),
        (_good(key_steps=[[]]), r"'key_steps\[0\]'"),
        (_good(response=7), "'response'"),
        (["not", "an", "object"], "JSON object"),
    ],
)
def test_bad_record_names_file_line_and_field(tmp_path, bad, field):
    _image(tmp_path / "img" / "a.png")
    path = _write_jsonl(tmp_path / "d.jsonl", [_good(), bad])
    with pytest.raises(ValueError, match=field) as info:
        load_records(path)
    assert f"{path}:2" in str(info.value)


def test_unreadable_image(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n definitely not a png")
    path = _write_jsonl(tmp_path / "d.jsonl", [_good()])
    with pytest.raises(ValueError, match=r"d.jsonl:1: field 'image': cannot read image"):
        load_records(path)


def test_bad_json_line_and_list(tmp_path):
    _image(tmp_path / "img" / "a.png")
    path = _write_jsonl(tmp_path / "d.jsonl", [_good(), "", '{"image": "img/a.png", "question": '])
    with pytest.raises(ValueError, match=r"d.jsonl:3: bad JSON"):
        load_records(path)
    listing = tmp_path / "d.json"
    listing.write_text("[\n" + json.dumps(_good()) + ',\n{"image": oops}\n]')
    with pytest.raises(ValueError, match=r"d.json:3: bad JSON"):
        load_records(listing)
    listing.write_text("[\n" + json.dumps(_good()) + "\n" + json.dumps(_good()) + "]")
    with pytest.raises(ValueError, match=r"d.json:3: bad JSON \(expected ','"):
        load_records(listing)


def test_all_errors_reported_and_nothing_returned(tmp_path):
    _image(tmp_path / "img" / "a.png")
    path = _write_jsonl(tmp_path / "d.jsonl", [_good(question=None), _good(), _good(solution=None)])
    with pytest.raises(ValueError, match="2 invalid record") as info:
        load_records(path)
    assert f"{path}:1" in str(info.value) and f"{path}:3" in str(info.value)


def test_require_response_missing_file_and_empty(tmp_path):
    _image(tmp_path / "img" / "a.png")
    path = _write_jsonl(tmp_path / "d.jsonl", [_good()])
    assert load_records(path)[0].response is None
    with pytest.raises(ValueError, match=r"d.jsonl:1: field 'response'"):
        load_records(path, require_response=True)
    with pytest.raises(ValueError, match="does not exist"):
        load_records(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="no records"):
        load_records(tmp_path / "empty.jsonl")


def test_normalize_key_steps():
    assert normalize_key_steps({"Steps": ["a", ["b", "c"]]}) == [["a"], ["b", "c"]]
    assert normalize_key_steps([]) == []
    with pytest.raises(ValueError, match="key_steps"):
        normalize_key_steps("a")


# ---------------------------------------------------------------- prompting


def test_messages_put_image_before_text(synthetic_data):
    record = load_records(synthetic_data["sft"], require_response=True)[0]
    messages = build_messages(record)
    assert len(messages) == 1 and messages[0]["role"] == "user"
    parts = messages[0]["content"]
    assert [p["type"] for p in parts] == ["image", "text"]
    assert parts[1]["text"].startswith(record.question) and REASONING_PROMPT in parts[1]["text"]
    full = build_messages(record, with_response=True)
    assert full[1]["role"] == "assistant" and full[1]["content"][0]["text"] == record.response
    for header in (
        "### Image Description:",
        "### Rationales:",
        "### Step 1:",
        "### The final answer is:",
    ):
        assert header in REASONING_PROMPT


def test_encode_prompts_left_padded_not_truncated(processor, synthetic_data):
    records = load_records(synthetic_data["rl"])[:4]
    batch = encode_prompts(processor, records)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert mask[:, -1].all() and not mask[:, 0].all()  # left padding
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    expected_image_tokens = batch["image_grid_thw"].prod(-1) // 4
    assert torch.equal((ids == image_id).sum(-1), expected_image_tokens)
    assert torch.equal(batch["mm_token_type_ids"].bool(), ids == image_id)
    assistant = processor.tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    assert (
        ids[:, -len(assistant) :].tolist() == [assistant] * 4
    )  # every prompt ends ready to answer
    text = processor.tokenizer.decode(ids[0][mask[0].bool()])
    assert text.index("<|vision_start|>") < text.index(records[0].question)


def test_long_prompt_is_not_truncated(processor, tmp_path):
    _image(tmp_path / "img" / "a.png")
    question = "Count the apples. " * 1200
    path = _write_jsonl(tmp_path / "d.jsonl", [_good(question=question)])
    batch = encode_prompts(processor, load_records(path))
    decoded = processor.tokenizer.decode(batch["input_ids"][0])
    assert decoded.count("Count the apples.") == 1200


def test_encode_sft_labels_only_on_response(processor, synthetic_data):
    records = load_records(synthetic_data["sft"], require_response=True)[:4]
    sft = encode_sft(processor, records)
    prompts = encode_prompts(processor, records)
    tok = processor.tokenizer
    eot = end_of_turn_id(tok)
    assert eot == tok.convert_tokens_to_ids("<|im_end|>")
    assert (
        sft["attention_mask"][:, 0].all() and not sft["attention_mask"][:, -1].all()
    )  # right padding
    assert torch.equal(sft["pixel_values"], prompts["pixel_values"])
    for b, record in enumerate(records):
        mask = sft["attention_mask"][b].bool()
        labelled = sft["labels"][b] != -100
        assert not labelled[~mask].any()
        prompt_ids = prompts["input_ids"][b][prompts["attention_mask"][b].bool()]
        n_prompt = len(prompt_ids)
        assert torch.equal(sft["input_ids"][b][:n_prompt], prompt_ids)
        assert not labelled[:n_prompt].any() and labelled[n_prompt : mask.sum()].all()
        target = sft["labels"][b][labelled]
        assert torch.equal(target, sft["input_ids"][b][labelled])
        assert target[-1] == eot
        assert tok.decode(target[:-1]) == record.response
        assert torch.equal(
            sft["mm_token_type_ids"][b][:n_prompt],
            prompts["mm_token_type_ids"][b][prompts["attention_mask"][b].bool()],
        )
        assert not sft["mm_token_type_ids"][b][n_prompt:].any()


def test_encode_sft_loss_matches_model_loss(model, processor, synthetic_data):
    records = load_records(synthetic_data["sft"], require_response=True)[:3]
    batch = encode_sft(processor, records)
    with torch.no_grad():
        out = model(**batch)
    logits = out.logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    manual = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, manual, atol=1e-5, rtol=1e-5)


def test_encode_sft_needs_responses(processor, synthetic_data):
    records = load_records(synthetic_data["rl"])[:2]
    with pytest.raises(ValueError, match="without 'response'"):
        encode_sft(processor, records)
    with pytest.raises(ValueError, match="no 'response'"):
        build_messages(records[0], with_response=True)
