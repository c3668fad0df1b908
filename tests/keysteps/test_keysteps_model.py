"""The model-based extractor: prompt, parsing, verification against the reasoning, and the
plumbing with the tiny offline checkpoints (Qwen2-VL through the trainer's loader, a plain
causal LM through AutoModelForCausalLM)."""

import json

import pytest
import torch

from stepgrpo_fast.cli import main
from stepgrpo_fast.keysteps.model import (
    ModelExtractor,
    build_prompt,
    chat_prompt,
    parse_proposals,
    steps_text,
    verified_groups,
)
from stepgrpo_fast.rewards import match_key_steps

REASONING = ("### Image Description:\nTwo numbers.\n### Rationales:\nAdd them.\n"
             "### Let's think step by step.\n### Step 1:\nThe numbers are 6 and 2.\n"
             "### Step 2:\n6 + 2 = 8\n### The final answer is:\n8")


def test_prompt_shows_only_the_steps():
    assert steps_text(REASONING) == "Step 1: The numbers are 6 and 2.\nStep 2: 6 + 2 = 8"
    prompt = build_prompt(REASONING)
    assert prompt.endswith("Solution:\nStep 1: The numbers are 6 and 2.\nStep 2: 6 + 2 = 8\n\nKey steps:\n")
    assert "Two numbers" not in prompt and "Add them" not in prompt


def test_parse_proposals_strips_bullets_and_numbering():
    raw = "Key steps:\n1. 6 + 2 = 8\n- The numbers are 6 and 2\n\n  * \"x = 3\"\n2) AD is a median\nStep 3: y = 1"
    assert parse_proposals(raw) == ["6 + 2 = 8", "The numbers are 6 and 2", "x = 3", "AD is a median",
                                    "y = 1"]


def test_only_proposals_found_in_the_reasoning_are_kept():
    proposals = ["6+2=8", "6 + 2 = 9", "So the answer is 8", "the NUMBERS are 6 and 2.",
                 "AD is a median", "Therefore 6 + 2 = 8, so the numbers are 6 and 2"]
    result = verified_groups(REASONING, proposals)
    assert result.kept == ["6+2=8", "the NUMBERS are 6 and 2.", "Therefore 6 + 2 = 8, so the numbers are 6 and 2"]
    assert result.rejected == ["6 + 2 = 9", "So the answer is 8", "AD is a median"]
    # the model's order ranks the groups; duplicates (same normalised form) merge
    assert [g[0] for g in result.groups] == ["6+2=8", "the NUMBERS are 6 and 2"]
    assert "6 + 2 = 8" in result.groups[0] and "2 + 6 = 8" in result.groups[0]
    assert match_key_steps([REASONING], [result.groups]) == [1.0]
    assert verified_groups(REASONING, proposals, max_groups=1).groups == result.groups[:1]


def test_tiny_vlm_plumbing(tiny_ckpt):
    """The random tiny Qwen2-VL proposes noise: the run completes, the prompt goes through the
    chat template, and nothing that is not in the reasoning survives."""
    extractor = ModelExtractor(tiny_ckpt, max_new_tokens=24, batch_size=2)
    prompts = extractor.prompts([REASONING])
    assert prompts[0].startswith("<|im_start|>user\n") and prompts[0].endswith("<|im_start|>assistant\n")
    assert build_prompt(REASONING) in prompts[0]
    results = extractor.extract([REASONING, "no steps here", REASONING])
    assert results[1].groups == [] and results[1].raw == ""  # no model call without steps
    assert results[0].raw == results[2].raw != ""  # greedy: same input, same output
    for r in (results[0], results[2]):
        assert r.proposals == parse_proposals(r.raw)
        assert len(r.kept) + len(r.rejected) == len(r.proposals)
        if r.groups:
            assert match_key_steps([REASONING], [r.groups]) == [1.0]


@pytest.mark.slow
def test_tiny_vlm_trained_to_answer_keeps_the_true_step_and_drops_the_invented_one(tiny_ckpt, tmp_path):
    """The tiny Qwen2-VL is first taught (~150 Adam steps on this one prompt, a few seconds) to
    answer "6 + 2 = 8 / 6 + 2 = 9 / The numbers are 6 and 2": the real step and the fact are
    kept, the invented "6 + 2 = 9" is rejected, through the same path `--model` takes."""
    from stepgrpo_fast.trainer.model.loading import load_model_and_processor

    model, processor = load_model_and_processor(tiny_ckpt)
    tok = processor.tokenizer
    prompt = chat_prompt(tok, processor.chat_template, REASONING)
    answer = "6 + 2 = 8\n6 + 2 = 9\nThe numbers are 6 and 2"
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tok(answer, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    ids = torch.tensor([p_ids + a_ids])
    labels = torch.tensor([[-100] * len(p_ids) + a_ids])
    torch.manual_seed(0)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")

    (result,) = ModelExtractor(tmp_path / "ckpt", max_new_tokens=32).extract([REASONING])
    assert result.raw == answer
    assert result.kept == ["6 + 2 = 8", "The numbers are 6 and 2"] and result.rejected == ["6 + 2 = 9"]
    assert [g[0] for g in result.groups] == ["6 + 2 = 8", "The numbers are 6 and 2"]
    # and through the command line
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"response": REASONING}) + "\n")
    assert main(["keysteps", "--data", str(src), "--out", str(tmp_path / "out.jsonl"),
                 "--model", str(tmp_path / "ckpt"), "--max-new-tokens", "32"]) == 0
    assert json.loads((tmp_path / "out.jsonl").read_text())["key_steps"] == result.groups


def test_causal_lm_checkpoint(tiny_ckpt, tmp_path):
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_ckpt)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Qwen2ForCausalLM(config).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    extractor = ModelExtractor(tmp_path / "lm", max_new_tokens=8)
    assert type(extractor.model).__name__ == "Qwen2ForCausalLM" and extractor.chat_template
    (result,) = extractor.extract([REASONING])
    assert result.raw and result.proposals == parse_proposals(result.raw)


def test_bad_model_paths(tmp_path, capsys):
    with pytest.raises(ValueError, match="not a local checkpoint directory"):
        ModelExtractor(tmp_path / "missing")
    with pytest.raises(ValueError, match="no config.json"):
        ModelExtractor(tmp_path)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"response": REASONING}) + "\n")
    assert main(["keysteps", "--data", str(src), "--out", str(tmp_path / "o.jsonl"),
                 "--model", str(tmp_path / "missing")]) == 2
    assert "not a local checkpoint directory" in capsys.readouterr().err
    with pytest.raises(ValueError, match="max_new_tokens"):
        ModelExtractor(tmp_path, max_new_tokens=0)
