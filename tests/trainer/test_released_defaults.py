"""Defaults as released, options as users expect: RL trains the vision tower unless
``freeze_vision``; ``prompt_template: r1vl`` (instruction before the question; a question that
carries its own instruction is used as is); ``advantage_scale: batch`` over the global batch."""

import pytest
import torch
from safetensors.torch import load_file

from stepgrpo_fast.functional import group_advantages
from stepgrpo_fast.trainer.config import SFTConfig, StepGRPOConfig
from stepgrpo_fast.data.records import Record, load_records
from stepgrpo_fast.data.prompts import REASONING_PROMPT, build_messages, encode_prompts, user_text
from stepgrpo_fast.trainer.rl.episodes import global_batch_advantages
from stepgrpo_fast.trainer.loop import run_stepgrpo
from stepgrpo_fast.trainer.model.loading import load_processor

DIGIT_REWARD = "test_stepgrpo:digit_share"


def _rl(tiny_rl_config, out, **overrides):
    values = dict(
        learning_rate=1e-3,
        extra_reward_funcs=[DIGIT_REWARD],
        extra_reward_weights=[1.0],
    )
    values.update(overrides)
    return tiny_rl_config(out, **values)


# ------------------------------------------------------------------------- freeze_vision


def test_vision_defaults_rl_trains_it_sft_freezes_it():
    assert StepGRPOConfig().freeze_vision is False
    assert SFTConfig().freeze_vision is True


def test_rl_step_moves_the_vision_tower_by_default(tiny_rl_config, tiny_ckpt, tmp_path):
    default = StepGRPOConfig.freeze_vision  # the library's (configs/stepgrpo_tiny.yaml freezes it)
    summary = run_stepgrpo(_rl(tiny_rl_config, tmp_path, freeze_vision=default))
    before = load_file(tiny_ckpt / "model.safetensors")
    after = load_file(f"{summary['final_model']}/model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("visual" in k for k in changed)
    assert any("visual" not in k for k in changed)


# ------------------------------------------------------------------------ prompt_template


def _record(question):
    return Record(image_path="x.png", question=question, solution="3", key_steps=[])


def test_prompt_templates_order_instruction_and_question():
    record = _record("What is the area of ABE?")
    assert user_text(record) == f"{record.question}\n{REASONING_PROMPT}"
    assert user_text(record, "r1vl") == f"{REASONING_PROMPT}\n{record.question}"
    # a released record: `problem` already carries the instruction -> used as it is
    own = _record("Solve it. End with ### The final answer is: xxx\nWhat is 2 + 3?")
    assert user_text(own) == own.question == user_text(own, "r1vl")
    parts = build_messages(record, template="r1vl")[0]["content"]
    assert [p["type"] for p in parts] == ["image", "text"]  # the image still comes first
    assert parts[1]["text"].startswith(REASONING_PROMPT)
    with pytest.raises(ValueError, match="prompt template must be one of"):
        user_text(record, "llava")
    with pytest.raises(ValueError, match="prompt_template must be one of"):
        StepGRPOConfig(prompt_template="llava")


def test_r1vl_template_reaches_the_encoded_prompts(tiny_ckpt, synthetic_data):
    processor = load_processor(tiny_ckpt, model_type="qwen2_vl")
    records = load_records(synthetic_data["rl"])[:1]
    default = encode_prompts(processor, records)["input_ids"][0]
    r1vl = encode_prompts(processor, records, template="r1vl")["input_ids"][0]
    assert sorted(default.tolist()) == sorted(r1vl.tolist())  # same tokens, other order
    assert not torch.equal(default, r1vl)
    text = processor.tokenizer.decode(r1vl)
    assert text.index(REASONING_PROMPT[:30]) < text.index(records[0].question[:20])


# ------------------------------------------------------------------ advantage_scale: batch


def test_batch_advantages_use_one_std_over_every_micro_batch_and_process():
    torch.manual_seed(0)
    m = 2
    micro = [torch.rand(4), torch.rand(4)]  # one process, G = 2 micro-batches of 2 groups
    ours = global_batch_advantages(micro, m)
    want = group_advantages(torch.cat(micro), m, scale="batch")
    torch.testing.assert_close(torch.cat(ours), want, rtol=0, atol=1e-6)
    per_micro = torch.cat([group_advantages(r, m, scale="batch") for r in micro])
    assert (per_micro - want).abs().max() > 1e-3  # what a micro-batch-only std gives
    # two processes: the std spans the other process's rewards too (gather = accelerator.gather)
    other = torch.rand(8) * 5
    both = global_batch_advantages(micro, m, gather=lambda t: torch.cat([t, other]))
    want = group_advantages(torch.cat([*micro, other]), m, scale="batch")[:8]
    torch.testing.assert_close(torch.cat(both), want, rtol=0, atol=1e-6)
    flat = global_batch_advantages([torch.ones(4), torch.tensor([0.0, 1.0, float("nan"), 2.0])], m)
    assert torch.isfinite(torch.cat(flat)).all() and (flat[0] == 0).all()


def test_batch_scale_gives_the_same_update_however_the_batch_is_split(
    tiny_rl_config, tiny_ckpt, tmp_path
):
    kw = dict(advantage_scale="batch", freeze_vision=True)
    one = run_stepgrpo(_rl(tiny_rl_config, tmp_path / "one", **kw))
    two = run_stepgrpo(
        _rl(
            tiny_rl_config,
            tmp_path / "two",
            per_device_batch_size=1,
            gradient_accumulation_steps=2,
            **kw,
        )
    )
    a = load_file(f"{one['final_model']}/model.safetensors")
    b = load_file(f"{two['final_model']}/model.safetensors")
    assert any(not torch.equal(a[k], load_file(tiny_ckpt / "model.safetensors")[k]) for k in a)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 5e-5


# ------------------------------------------------------------------------------- DeepSpeed


def test_native_trainer_refuses_deepspeed(tiny_rl_config, tmp_path, monkeypatch):
    # what `accelerate launch --config_file configs/accelerate/zero2.yaml` sets in each process
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ValueError, match="does not support DeepSpeed ZeRO-2/3.*ddp.yaml"):
        run_stepgrpo(_rl(tiny_rl_config, tmp_path))
    assert not (tmp_path / "config.yaml").exists()  # refused before anything was loaded
