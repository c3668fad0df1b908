"""Rollouts sample the configured distribution whatever the checkpoint's generation_config.json
says.

Qwen's Instruct checkpoints ship top_k 1, top_p 0.001, temperature 0.01 and repetition_penalty
1.05 (others no_repeat_ngram_size); ``model.generate`` fills every option a call leaves unset from
that file. The same weights with such a file and with a neutral one must draw the same samples.
"""

import json
import shutil

import pytest
import torch

from stepgrpo_fast.data.records import load_records
from stepgrpo_fast.data.prompts import encode_prompts
from stepgrpo_fast.trainer.model.loading import load_model_and_processor
from stepgrpo_fast.trainer.rl.rollout import GumbelSampler, generate_rollouts, repeat_prompt_inputs

INSTRUCT_STYLE = {
    "bos_token_id": None,  # filled from the tiny checkpoint
    "do_sample": True,
    "top_k": 1,
    "top_p": 0.001,
    "temperature": 0.01,
    "repetition_penalty": 1.05,
    "no_repeat_ngram_size": 1,  # as some checkpoints ship (n = 1: no token twice)
}


def _with_generation_config(src, dst, values):
    shutil.copytree(src, dst)
    neutral = json.loads((src / "generation_config.json").read_text())
    merged = {**neutral, **{k: v for k, v in values.items() if v is not None}}
    (dst / "generation_config.json").write_text(json.dumps(merged, indent=2))
    return dst


@pytest.fixture(scope="module")
def two_models(tiny_ckpt, synthetic_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("genconfig")
    instruct = _with_generation_config(tiny_ckpt, root / "instruct", INSTRUCT_STYLE)
    neutral_model, processor = load_model_and_processor(tiny_ckpt)
    instruct_model, _ = load_model_and_processor(instruct)
    assert instruct_model.generation_config.top_k == 1  # the file did load
    prompts = encode_prompts(processor, load_records(synthetic_data["rl"])[:2])
    return neutral_model, instruct_model, processor, prompts


def _sample(model, processor, prompts, **kw):
    values = dict(
        num_generations=4,
        max_new_tokens=24,
        temperature=1.0,
        vision_start_token_id=model.config.vision_start_token_id,
    )
    values.update(kw)
    return generate_rollouts(model, processor.tokenizer, prompts, **values)


def _distinct_per_prompt(rollout, m=4):
    rows = rollout.completion_ids.tolist()
    return [len({tuple(r) for r in rows[i : i + m]}) for i in range(0, len(rows), m)]


def _repeats(rollout):
    """Tokens that repeat an earlier token of their completion, summed over rows."""
    rows = zip(rollout.completion_ids.tolist(), rollout.completion_lengths.tolist())
    return sum(int(n) - len(set(row[: int(n)])) for row, n in rows)


def test_instruct_file_would_collapse_hf_sampling(two_models):
    """The hazard itself: plain HF sampling with the Instruct file draws M identical samples."""
    _, instruct, processor, prompts = two_models
    inputs = repeat_prompt_inputs(
        prompts, 4, vision_start_token_id=instruct.config.vision_start_token_id
    )
    torch.manual_seed(0)
    out = instruct.generate(**inputs, do_sample=True, max_new_tokens=8)
    rows = out[:, inputs["input_ids"].shape[1] :].tolist()
    assert len({tuple(r) for r in rows[:4]}) == 1


@pytest.mark.parametrize("seeded", [True, False], ids=["row_seeds", "global_rng"])
def test_generation_config_does_not_leak_into_rollouts(two_models, seeded):
    neutral, instruct, processor, prompts = two_models
    outs = []
    for model in (neutral, instruct):
        torch.manual_seed(1234)
        seeds = list(range(100, 108)) if seeded else None
        outs.append(_sample(model, processor, prompts, row_seeds=seeds))
    assert torch.equal(outs[0].completion_ids, outs[1].completion_ids)
    assert outs[0].texts == outs[1].texts
    assert all(n > 1 for n in _distinct_per_prompt(outs[0]))  # the M samples of a prompt differ
    # the file is back in place afterwards
    assert instruct.generation_config.top_k == 1 and instruct.generation_config.top_p == 0.001


def test_greedy_ignores_the_file_too(two_models):
    neutral, instruct, processor, prompts = two_models
    a = _sample(neutral, processor, prompts, do_sample=False, num_generations=1)
    b = _sample(instruct, processor, prompts, do_sample=False, num_generations=1)
    assert torch.equal(a.completion_ids, b.completion_ids)


def test_repetition_penalty_only_when_asked(two_models):
    neutral, _, processor, prompts = two_models
    seeds = list(range(8))
    plain = _sample(neutral, processor, prompts, row_seeds=seeds, max_new_tokens=24)
    penalised = _sample(
        neutral, processor, prompts, row_seeds=seeds, max_new_tokens=24, repetition_penalty=50.0
    )
    assert not torch.equal(plain.completion_ids, penalised.completion_ids)
    assert _repeats(penalised) < _repeats(plain)
    with pytest.raises(ValueError, match="repetition_penalty"):
        _sample(neutral, processor, prompts, row_seeds=seeds, repetition_penalty=0.0)


def test_global_rng_sampler_follows_softmax():
    scores = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(6000, 1)
    torch.manual_seed(0)
    picks = GumbelSampler(temperature=1.5)(None, scores).argmax(-1)
    freq = torch.bincount(picks, minlength=4).float() / 6000
    assert torch.allclose(freq, torch.softmax(scores[0] / 1.5, -1), atol=0.025)
    top1 = GumbelSampler(temperature=1.0, top_k=1)(None, scores[:50]).argmax(-1)
    assert set(top1.tolist()) == {0}
    with pytest.raises(ValueError, match="top_p"):
        GumbelSampler(temperature=1.0, top_p=0.0)
