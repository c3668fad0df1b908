"""Shared fixtures for the integration tests: a tiny offline Qwen2 text checkpoint, the tiny
Qwen2-VL checkpoint from stepgrpo_fast.synthetic.tiny_model, and StepGRPO-style completions."""

from __future__ import annotations

import pathlib

import pytest

GOOD = (
    "### Image Description:\nA triangle ABC with a median AD.\n"
    "### Rationales:\nE halves AD, so ABE is a quarter of ABC.\n"
    "### Let's think step by step.\n"
    "### Step 1:\nAD is a median, so ABD has half the area.\n"
    "### Step 2:\n12/2 = 6\n"
    "### Step 3:\n6/2=3\n"
    "### The final answer is:\n3"
)
WRONG_ANSWER = GOOD.replace("The final answer is:\n3", "The final answer is:\n4")
NO_STEPS = (
    "### Image Description:\nA triangle.\n### Rationales:\nGuess.\n### The final answer is:\n3"
)
OUT_OF_ORDER = GOOD.replace("### Step 2:", "### Step 4:")
EMPTY = ""
KEY_STEPS = [
    ["AD is a median", "median is AD"],
    ["12/2 = 6", "frac{12}{2} = 6"],
    ["6/2 = 3", "frac{6}{2} = 3"],
]
RELEASED_KEY_STEPS = {"Steps": ["AD is a median", ["12/2 = 6"], "6/2 = 3"]}


@pytest.fixture(scope="session")
def samples():
    """The sample completions and key steps above, by name."""
    import types

    return types.SimpleNamespace(
        GOOD=GOOD,
        WRONG_ANSWER=WRONG_ANSWER,
        NO_STEPS=NO_STEPS,
        OUT_OF_ORDER=OUT_OF_ORDER,
        EMPTY=EMPTY,
        KEY_STEPS=KEY_STEPS,
        RELEASED_KEY_STEPS=RELEASED_KEY_STEPS,
    )


@pytest.fixture(scope="session")
def reward_batch():
    """(completions, solutions, key_steps): five completions covering the reward cases."""
    completions = [GOOD, WRONG_ANSWER, NO_STEPS, OUT_OF_ORDER, EMPTY]
    solutions = ["3", "3", "3", "3", "3"]
    key_steps = [KEY_STEPS, KEY_STEPS, KEY_STEPS, RELEASED_KEY_STEPS, KEY_STEPS]
    return completions, solutions, key_steps


def build_text_checkpoint(out_dir: pathlib.Path, *, seed: int = 0) -> pathlib.Path:
    """A ~40k-parameter Qwen2ForCausalLM + a byte-level BPE tokenizer trained on StepGRPO text,
    saved with save_pretrained (loads back by path, as TRL needs for its reference model)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    corpus = [
        GOOD,
        WRONG_ANSWER,
        NO_STEPS,
        "What is the area of triangle ABE? Answer with a number.",
    ] * 4
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    eos = tokenizer.eos_token_id
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def text_checkpoint(tmp_path_factory) -> pathlib.Path:
    return build_text_checkpoint(tmp_path_factory.mktemp("tiny_qwen2_text"))


@pytest.fixture(scope="session")
def vl_checkpoint(tmp_path_factory) -> pathlib.Path:
    from stepgrpo_fast.synthetic.tiny_model import build_tiny_checkpoint

    return build_tiny_checkpoint(
        tmp_path_factory.mktemp("tiny_qwen2_vl"), family="qwen2_vl", seed=0
    )
