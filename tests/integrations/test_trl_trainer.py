"""StepGRPOTrainer: TRL 1.16's GRPOTrainer with linear_logprobs as its LM head.

Parity is checked in fp32 (bf16=False: TRL 1.16 defaults to bf16 autocast, where both heads
round differently) against TRL's own fused head on the same batch and the same weights."""

from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch

from stepgrpo_fast.integrations import trl as sg_trl

TOL = 1e-5


def grpo_args(tmp_path, **overrides):
    from trl import GRPOConfig

    options = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": 4,
        "num_generations": 4,
        "max_completion_length": 10,
        "max_steps": 2,
        "beta": 0.04,
        "learning_rate": 1e-2,
        "report_to": [],
        "logging_steps": 1,
        "use_cpu": True,
        "bf16": False,
        "save_strategy": "no",
        "seed": 0,
        "temperature": 0.7,
    }
    options.update(overrides)
    return GRPOConfig(**options)


def text_dataset(samples, n=8):
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": "What is the area of triangle ABE? Answer with a number.",
                "solution": "3",
                "key_steps": samples.KEY_STEPS,
            }
        ]
        * n
    )


# ---------------------------------------------------------------------------------------------
# version pin
# ---------------------------------------------------------------------------------------------
def test_trl_version_pin(monkeypatch):
    monkeypatch.delenv(sg_trl.ALLOW_ANY_TRL_ENV, raising=False)
    assert sg_trl.check_trl_version("1.16.0") == "1.16.0"
    assert sg_trl.check_trl_version("1.16.4.dev0") == "1.16.4.dev0"
    for bad in ("1.15.2", "1.17.0", "2.0.0", "0.16.1"):
        with pytest.raises(
            ImportError,
            match=r"tested with TRL 1\.16\.\* only and found TRL " + bad.replace(".", r"\."),
        ):
            sg_trl.check_trl_version(bad)
    monkeypatch.setenv(sg_trl.ALLOW_ANY_TRL_ENV, "1")
    assert sg_trl.check_trl_version("1.17.0") == "1.17.0"


def test_installed_trl_is_the_tested_one():
    import trl

    assert sg_trl.check_trl_version() == trl.__version__


# ---------------------------------------------------------------------------------------------
# the head itself, on bare models
# ---------------------------------------------------------------------------------------------
def _load_text_model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def _labels(input_ids, prompt_len):
    labels = input_ids.clone()
    labels[:, :prompt_len] = -100
    labels[1, -3:] = -100  # a shorter completion
    return labels


def test_head_matches_trl_head_and_full_logits_with_gradients(text_checkpoint):
    from trl.trainer.utils import add_fused_lm_head

    theirs, ours = _load_text_model(text_checkpoint), _load_text_model(text_checkpoint)
    add_fused_lm_head(theirs, temperature=0.7, outputs=("log_probs", "entropy"))
    sg_trl.install_linear_logprobs_head(ours, temperature=0.7, outputs=("log_probs", "entropy"))
    torch.manual_seed(0)
    input_ids = torch.randint(1, theirs.config.vocab_size, (3, 17))
    attention_mask = torch.ones_like(input_ids)
    labels = _labels(input_ids, 6)

    out_t = theirs(
        input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True
    )
    out_o = ours(
        input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True
    )
    assert out_o.log_probs.shape == out_t.log_probs.shape == (3, 16)
    torch.testing.assert_close(out_o.log_probs, out_t.log_probs, atol=TOL, rtol=0)
    torch.testing.assert_close(out_o.entropy, out_t.entropy, atol=TOL, rtol=0)
    assert torch.equal(out_o.label_mask, out_t.label_mask)
    torch.testing.assert_close(out_o.loss, out_t.loss, atol=TOL, rtol=0)

    # independent oracle: full logits from the unpatched forward path
    with torch.no_grad():
        logits = ours.lm_head(
            ours.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        )
        logp_full = (logits[:, :-1].double() / 0.7).log_softmax(-1)
        target = labels[:, 1:]
        want = logp_full.gather(-1, target.clamp(min=0)[..., None])[..., 0].masked_fill(
            target == -100, 0
        )
        want_entropy = -(logp_full.exp() * logp_full).sum(-1).masked_fill(target == -100, 0)
    torch.testing.assert_close(out_o.log_probs.double(), want, atol=TOL, rtol=0)
    torch.testing.assert_close(out_o.entropy.double(), want_entropy, atol=TOL, rtol=0)

    # gradients of a GRPO-like objective reach every parameter identically
    for model, out in ((theirs, out_t), (ours, out_o)):
        (out.log_probs.sum() - 0.1 * out.entropy.sum()).backward()
    for (name, p_t), p_o in zip(theirs.named_parameters(), ours.parameters()):
        torch.testing.assert_close(
            p_o.grad, p_t.grad, atol=1e-4, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}"
        )


def test_generation_path_is_untouched(text_checkpoint):
    plain, ours = _load_text_model(text_checkpoint), _load_text_model(text_checkpoint)
    sg_trl.install_linear_logprobs_head(ours, temperature=0.7)
    input_ids = torch.tensor([[5, 9, 11, 3]])
    torch.testing.assert_close(ours(input_ids=input_ids).logits, plain(input_ids=input_ids).logits)
    g_plain = plain.generate(input_ids, max_new_tokens=5, do_sample=False)
    g_ours = ours.generate(input_ids, max_new_tokens=5, do_sample=False)
    assert torch.equal(g_plain, g_ours)


def test_all_masked_rows_give_zeros_and_a_connected_graph(text_checkpoint):
    ours = _load_text_model(text_checkpoint)
    sg_trl.install_linear_logprobs_head(ours, outputs=("log_probs", "entropy"))
    input_ids = torch.tensor([[5, 9, 11, 3], [7, 7, 2, 4]])
    out = ours(input_ids=input_ids, labels=torch.full_like(input_ids, -100), fused_lm_head=True)
    assert torch.equal(out.log_probs, torch.zeros(2, 3)) and torch.equal(
        out.entropy, torch.zeros(2, 3)
    )
    (out.log_probs.sum() + out.loss).backward()
    assert (
        ours.lm_head.weight.grad is not None and torch.count_nonzero(ours.lm_head.weight.grad) == 0
    )


def test_unsupported_models_and_outputs_fail_clearly(text_checkpoint):
    model = _load_text_model(text_checkpoint)
    sg_trl.install_linear_logprobs_head(model)
    input_ids = torch.tensor([[5, 9, 11, 3]])
    with pytest.raises(ValueError, match="needs TRL's add_fused_lm_head"):
        model(input_ids=input_ids, labels=input_ids, fused_lm_head=True, output_router_logits=True)
    with pytest.raises(ValueError, match="needs labels"):
        model(input_ids=input_ids, fused_lm_head=True)
    model = _load_text_model(text_checkpoint)
    with pytest.raises(ValueError, match="is_top1"):
        sg_trl.install_linear_logprobs_head(model, outputs=("log_probs", "is_top1"))
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match="final_logit_softcapping"):
        sg_trl.install_linear_logprobs_head(model)


class _FakeZero3Param:
    """Simulates DeepSpeed ZeRO-3 on one Parameter: outside ``gather()`` its data is empty."""

    def __init__(self, param):
        self.param, self.full = param, param.data.clone()
        self.gathers = 0
        param.data = torch.empty(0, dtype=self.full.dtype)

    @contextlib.contextmanager
    def gather(self):
        self.gathers += 1
        self.param.data = self.full
        try:
            yield
        finally:
            self.param.data = torch.empty(0, dtype=self.full.dtype)


@pytest.mark.parametrize("with_bias", [False, True])
def test_regathered_head_matches_direct_and_keeps_weight_partitioned(with_bias):
    torch.manual_seed(0)
    n, h, v = 9, 16, 37
    hidden = torch.randn(n, h, dtype=torch.float64, requires_grad=True)
    weight = torch.nn.Parameter(torch.randn(v, h, dtype=torch.float64) * 0.3)
    bias = torch.nn.Parameter(torch.randn(v, dtype=torch.float64)) if with_bias else None
    targets = torch.randint(0, v, (n,))
    g_logp, g_ent = torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64)

    logp, ent = sg_trl.head_logprobs(hidden, weight, bias, targets, temperature=0.8)
    torch.autograd.backward((logp, ent), (g_logp.float(), g_ent.float()))
    want = [t.grad.clone() for t in (hidden, weight, bias) if t is not None]
    for t in (hidden, weight, bias):
        if t is not None:
            t.grad = None

    fake = _FakeZero3Param(weight)
    with fake.gather():
        logp2, ent2 = sg_trl.head_logprobs(
            hidden, weight, bias, targets, temperature=0.8, regather=fake.gather
        )
    assert weight.data.numel() == 0  # partitioned again between forward and backward
    torch.autograd.backward((logp2, ent2), (g_logp.float(), g_ent.float()))
    assert fake.gathers == 2 and weight.data.numel() == 0
    torch.testing.assert_close(logp2, logp, atol=1e-6, rtol=0)
    torch.testing.assert_close(ent2, ent, atol=1e-6, rtol=0)
    got = [t.grad for t in (hidden, weight, bias) if t is not None]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------
def _zero_reward(completions, **_):
    return [float(len(c) % 3) for c in completions]


def _train(trainer_class, checkpoint, samples, out, reward_funcs):
    trainer = trainer_class(model=str(checkpoint), reward_funcs=reward_funcs,
                            args=grpo_args(out), train_dataset=text_dataset(samples))
    trainer.train()
    steps = [h for h in trainer.state.log_history if "loss" in h]
    return steps, {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


def test_step_grpo_trainer_trains_like_trl_under_the_same_seed(text_checkpoint, samples, tmp_path):
    """2 steps of trl.GRPOTrainer and of StepGRPOTrainer, same seed and arguments: the same
    completions and rewards, the loss / KL / entropy / grad norm TRL logs, the same weights."""
    from trl import GRPOTrainer

    from stepgrpo_fast.integrations.trl import StepGRPOTrainer, make_reward_funcs

    reward_funcs = [*make_reward_funcs("paper"), _zero_reward]
    start = {n: p.detach().clone() for n, p in _load_text_model(text_checkpoint).named_parameters()}
    theirs, w_theirs = _train(GRPOTrainer, text_checkpoint, samples, tmp_path / "a", reward_funcs)
    ours, w_ours = _train(StepGRPOTrainer, text_checkpoint, samples, tmp_path / "b", reward_funcs)
    assert len(theirs) == len(ours) == 2
    for t, o in zip(theirs, ours):
        same = [k for k in t if k.startswith(("reward", "completions/"))]
        assert same and {k: o[k] for k in same} == {k: t[k] for k in same}  # same samples
        for key in ("loss", "kl", "entropy"):
            assert o[key] == pytest.approx(t[key], rel=1e-4, abs=1e-6), key
        assert o["grad_norm"] == pytest.approx(t["grad_norm"], rel=1e-4)
    assert theirs[1]["kl"] > 1e-6  # step 2 left the reference: the KL term is in play
    update = torch.cat([(w_theirs[n] - start[n]).flatten() for n in start])
    mismatch = torch.cat([(w_ours[n] - w_theirs[n]).flatten() for n in start])
    assert update.norm() > 0.1
    assert mismatch.norm() <= 1e-3 * update.norm(), f"{mismatch.norm()} vs update {update.norm()}"


@pytest.mark.slow
def test_step_grpo_trainer_logprobs_equal_trl_and_it_trains(text_checkpoint, samples, tmp_path):
    from trl import GRPOTrainer

    from stepgrpo_fast.integrations.trl import StepGRPOTrainer, make_reward_funcs

    # + a reward with spread whatever the random model samples (StepRAR / StepRVR alone are
    # often 0 for every completion of the random model: zero advantages, nothing to learn)
    reward_funcs = [*make_reward_funcs("paper"), _zero_reward]
    theirs = GRPOTrainer(
        model=str(text_checkpoint),
        reward_funcs=reward_funcs,
        args=grpo_args(tmp_path / "a"),
        train_dataset=text_dataset(samples),
    )
    ours = StepGRPOTrainer(
        model=str(text_checkpoint),
        reward_funcs=reward_funcs,
        args=grpo_args(tmp_path / "b"),
        train_dataset=text_dataset(samples),
    )
    assert isinstance(ours, GRPOTrainer) and ours.ref_model is not None

    torch.manual_seed(1)
    input_ids = torch.randint(1, ours.model.config.vocab_size, (4, 20))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :5] = 0  # left padding of the prompt
    attention_mask[2, -4:] = 0  # a completion that ended early
    for get, entropy in (
        ("model", True),
        ("ref_model", False),
    ):  # TRL asks entropies of the policy only
        lp_t, ent_t, _ = theirs._get_per_token_logps_and_entropies(
            getattr(theirs, get), input_ids, attention_mask, 8, compute_entropy=entropy
        )
        lp_o, ent_o, _ = ours._get_per_token_logps_and_entropies(
            getattr(ours, get), input_ids, attention_mask, 8, compute_entropy=entropy, batch_size=3
        )
        assert lp_o.shape == (4, 8)
        torch.testing.assert_close(lp_o, lp_t, atol=TOL, rtol=0)
        if entropy:
            torch.testing.assert_close(ent_o, ent_t, atol=TOL, rtol=0)

    before = [p.detach().clone() for p in ours.model.parameters()]
    ours.train()
    steps = [h for h in ours.state.log_history if "loss" in h]
    assert len(steps) == 2
    for h in steps:
        assert math.isfinite(h["loss"]) and math.isfinite(h["entropy"]) and math.isfinite(h["kl"])
        assert "step_accuracy/key_step_fraction" in h
    moved = sum(not torch.equal(b, p) for b, p in zip(before, ours.model.parameters()))
    assert moved > 0


@pytest.mark.slow
def test_step_grpo_trainer_vlm_logprobs_equal_trl_with_an_image(vl_checkpoint, tmp_path):
    from PIL import Image
    from trl import GRPOTrainer

    from stepgrpo_fast.integrations.trl import StepGRPOTrainer
    from stepgrpo_fast.trainer.model.loading import (
        decoder_hidden_states,
        lm_head,
        load_model_and_processor,
    )

    model, processor = load_model_and_processor(str(vl_checkpoint))
    model_ours = copy.deepcopy(model)
    image = Image.new("RGB", (80, 60), (200, 30, 30))
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "What is the area?"}],
        }
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    texts = [
        prompt + "### Step 1:\nAD is a median\n### The final answer is:\n3",
        prompt + "### Step 1:\n12/2 = 6",
    ]
    batch = processor(
        text=texts,
        images=[[image], [image]],
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )
    assert batch["pixel_values"].shape[0] > 0 and batch["image_grid_thw"].shape == (2, 3)

    from datasets import Dataset

    data = Dataset.from_list([{"prompt": "q", "solution": "3"}] * 4)
    args = {"beta": 0.0, "max_steps": 1}
    theirs = GRPOTrainer(
        model=model,
        reward_funcs=[_zero_reward],
        args=grpo_args(tmp_path / "a", **args),
        train_dataset=data,
        processing_class=processor,
    )
    ours = StepGRPOTrainer(
        model=model_ours,
        reward_funcs=[_zero_reward],
        args=grpo_args(tmp_path / "b", **args),
        train_dataset=data,
        processing_class=processor,
    )
    keep = 10
    call = {
        "compute_entropy": True,
        "pixel_values": batch["pixel_values"],
        "image_grid_thw": batch["image_grid_thw"],
        "num_images": [1, 1],
        "mm_token_type_ids": batch["mm_token_type_ids"],
    }
    lp_t, ent_t, _ = theirs._get_per_token_logps_and_entropies(
        theirs.model, batch["input_ids"], batch["attention_mask"], keep, **call
    )
    lp_o, ent_o, _ = ours._get_per_token_logps_and_entropies(
        ours.model, batch["input_ids"], batch["attention_mask"], keep, batch_size=1, **call
    )
    torch.testing.assert_close(lp_o, lp_t, atol=TOL, rtol=0)
    torch.testing.assert_close(ent_o, ent_t, atol=TOL, rtol=0)

    # the image matters (the vision tower ran) and gradients reach the vision tower
    with torch.no_grad():
        hidden = decoder_hidden_states(model, **batch)
        logits = lm_head(model)(hidden)[:, -keep - 1 : -1] / 0.7
        want = (
            logits.double().log_softmax(-1).gather(-1, batch["input_ids"][:, -keep:, None])[..., 0]
        )
    torch.testing.assert_close(lp_o.double(), want, atol=TOL, rtol=0)
    dark = processor(
        text=texts,
        images=[[Image.new("RGB", (80, 60), (0, 0, 0))]] * 2,
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )
    lp_dark, _, _ = ours._get_per_token_logps_and_entropies(
        ours.model,
        dark["input_ids"],
        dark["attention_mask"],
        keep,
        pixel_values=dark["pixel_values"],
        image_grid_thw=dark["image_grid_thw"],
        num_images=[1, 1],
        mm_token_type_ids=dark["mm_token_type_ids"],
    )
    assert (lp_dark - lp_o).abs().max() > 1e-6
    lp_o.sum().backward()
    vision_grads = [
        p.grad for n, p in ours.model.named_parameters() if "visual" in n and p.grad is not None
    ]
    assert vision_grads and any(g.abs().sum() > 0 for g in vision_grads)
