"""The tiny offline checkpoint factory: layout, config, tokenizer, determinism, plain from_pretrained."""

import json

import pytest
import torch

from stepgrpo_fast.synthetic import task as synthetic
from stepgrpo_fast.synthetic.tiny_model import SPECIAL_TOKENS, build_tiny_checkpoint, build_tokenizer

EXPECTED_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "processor_config.json",
    "tiny_model_info.json",
}


@pytest.mark.parametrize("fixture", ["tiny_ckpt", "tiny_ckpt_25"])
def test_directory_and_config(request, fixture):
    from transformers import AutoConfig

    path = request.getfixturevalue(fixture)
    assert EXPECTED_FILES <= {p.name for p in path.iterdir()}
    config = AutoConfig.from_pretrained(path)
    text = config.text_config
    assert (
        text.hidden_size,
        text.num_hidden_layers,
        text.num_attention_heads,
        text.num_key_value_heads,
    ) == (64, 2, 4, 2)
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    vision = config.vision_config
    out_width = vision.hidden_size if config.model_type == "qwen2_vl" else vision.out_hidden_size
    assert out_width == text.hidden_size
    processor_class = json.loads((path / "processor_config.json").read_text())["processor_class"]
    assert (
        processor_class
        == {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor"}[config.model_type]
    )


@pytest.mark.parametrize("fixture", ["tiny_ckpt", "tiny_ckpt_25"])
def test_loads_with_plain_from_pretrained(request, fixture):
    from transformers import AutoModelForImageTextToText, AutoTokenizer, GenerationConfig

    path = request.getfixturevalue(fixture)
    model = AutoModelForImageTextToText.from_pretrained(path)
    n_params = sum(p.numel() for p in model.parameters())
    assert 100_000 < n_params < 1_000_000
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert len(tokenizer) == model.config.text_config.vocab_size
    generation = GenerationConfig.from_pretrained(path)
    assert generation.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert (
        generation.pad_token_id
        == tokenizer.pad_token_id
        == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    )
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")


def test_tokenizer_special_tokens_and_chat_template(tiny_ckpt):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_ckpt)
    for token in SPECIAL_TOKENS:
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == token
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]},
        {"role": "assistant", "content": "### Step 1:\n2 + 3 = 5"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>How many?<|im_end|>\n"
        "<|im_start|>assistant\n### Step 1:\n2 + 3 = 5<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_tokenizer_round_trips_and_compresses_task_text(tiny_ckpt):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_ckpt)
    problems = synthetic.generate(123, 8, split="eval")
    for p in problems:
        for text in (p.question, p.response, "unseen ünïcödé text ∑ 12/2 = 6"):
            ids = tokenizer.encode(text, add_special_tokens=False)
            assert tokenizer.decode(ids) == text
        # Trained on the task: far fewer tokens than bytes.
        assert (
            len(tokenizer.encode(p.response, add_special_tokens=False))
            < len(p.response.encode()) / 3
        )


def test_deterministic_per_seed(tmp_path):
    a = build_tiny_checkpoint(tmp_path / "a", seed=3, corpus=["3 + 4 = 7"] * 10, vocab_size=300)
    b = build_tiny_checkpoint(tmp_path / "b", seed=3, corpus=["3 + 4 = 7"] * 10, vocab_size=300)
    c = build_tiny_checkpoint(tmp_path / "c", seed=4, corpus=["3 + 4 = 7"] * 10, vocab_size=300)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_global_rng_untouched(tmp_path):
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    build_tiny_checkpoint(tmp_path / "x", seed=0, corpus=["a b c"], vocab_size=300)
    assert torch.equal(torch.rand(3), expected)


def test_phrase_merges_shorten_responses():
    corpus = synthetic.corpus_texts(seed=0, num_problems=200)
    words = build_tokenizer(corpus, 1024)
    phrases = build_tokenizer(corpus, 1024, phrase_merges=True)
    response = synthetic.generate(5, 1, split="eval")[0].response
    n_words = len(words.encode(response, add_special_tokens=False))
    n_phrases = len(phrases.encode(response, add_special_tokens=False))
    assert n_phrases < n_words / 2
    assert phrases.decode(phrases.encode(response, add_special_tokens=False)) == response


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="family"):
        build_tiny_checkpoint(tmp_path, family="llava")
    with pytest.raises(ValueError, match="vocab_size"):
        build_tiny_checkpoint(tmp_path, corpus=["x"], vocab_size=100)
    with pytest.raises(ValueError, match="min_pixels"):
        build_tiny_checkpoint(
            tmp_path, corpus=["x"], vocab_size=300, min_pixels=5000, max_pixels=100
        )
    with pytest.raises(ValueError, match="hidden_size"):
        build_tiny_checkpoint(tmp_path, corpus=["x"], vocab_size=300, hidden_size=60)
    with pytest.raises(ValueError, match="empty"):
        build_tokenizer([], 300)
