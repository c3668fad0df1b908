"""Rollout sampling keeps exactly the tokens it should: top-k the k most likely, top-p the
smallest prefix of the sorted distribution whose mass reaches top_p (the token that crosses
top_p included, after top-k renormalised), and never an image / video placeholder token.

Checked on sampled frequencies, on the sampler alone and through the trainer's rollouts: a hook
on the tiny model's lm_head makes every generation step's logits a distribution chosen here
(the fused loss reads lm_head.weight, not the hook, and the hook is on during sampling only)."""

import contextlib

import pytest
import torch

from stepgrpo_fast.trainer.rl import grpo_loop
from stepgrpo_fast.trainer.rl.rollout import GumbelSampler, SeededGumbelSampler

PROBS = torch.tensor([0.4, 0.3, 0.2, 0.1])

# (top_k, top_p) -> the distribution the sampler must follow over PROBS's four tokens
CASES = {
    (0, 0.5): [4 / 7, 3 / 7, 0, 0],  # 0.4 < 0.5: token 1 crosses top_p and is kept
    (0, 0.75): [4 / 9, 3 / 9, 2 / 9, 0],  # 0.7 < 0.75 <= 0.9: token 2 crosses
    (0, 0.35): [1, 0, 0, 0],  # token 0 alone reaches top_p
    (2, 1.0): [4 / 7, 3 / 7, 0, 0],
    (3, 1.0): [4 / 9, 3 / 9, 2 / 9, 0],
    (2, 0.55): [1, 0, 0, 0],  # top-p on the top-k renormalised mass (4/7 >= 0.55), as HF
    (0, 1.0): [0.4, 0.3, 0.2, 0.1],
}


def _frequencies(picks: torch.Tensor, n_tokens: int) -> torch.Tensor:
    return torch.bincount(picks.flatten(), minlength=n_tokens).float() / picks.numel()


def _check(freq: torch.Tensor, want: list[float], atol: float, where: str) -> None:
    want = torch.tensor(want, dtype=torch.float32)
    support = want > 0
    assert torch.equal(freq > 0, support), f"{where}: sampled {freq.tolist()}, want {want.tolist()}"
    assert torch.allclose(freq, want, atol=atol), f"{where}: sampled {freq.tolist()}, want {want.tolist()}"


@pytest.mark.parametrize("top_k,top_p", list(CASES))
def test_sampler_keeps_exactly_the_nucleus(top_k, top_p):
    logits = PROBS.log().repeat(8000, 1)
    torch.manual_seed(0)
    picks = GumbelSampler(1.0, top_k, top_p)(None, logits).argmax(-1)
    _check(_frequencies(picks, 4), CASES[(top_k, top_p)], 0.02, "global RNG")
    seeded = SeededGumbelSampler(range(4000), 1.0, top_k, top_p)
    picks = seeded(None, logits[:4000]).argmax(-1)
    _check(_frequencies(picks, 4), CASES[(top_k, top_p)], 0.03, "row seeds")


def _tempered_nucleus(temperature: float, top_p: float, keep: int) -> list[float]:
    """softmax(log PROBS / T) renormalised over its first ``keep`` tokens."""
    tempered = torch.softmax(PROBS.log() / temperature, -1)
    return [*(tempered[:keep] / tempered[:keep].sum()).tolist(), *[0.0] * (4 - keep)]


def test_temperature_applies_before_the_filters():
    # T = 2 flattens PROBS to ~[0.325, 0.282, 0.230, 0.163] (cumulative 0.607 < 0.65 < 0.837):
    # top_p 0.65 keeps three tokens; filtering the untempered PROBS would keep two (0.7 >= 0.65)
    logits = PROBS.log().repeat(8000, 1)
    torch.manual_seed(1)
    picks = GumbelSampler(2.0, 0, 0.65)(None, logits).argmax(-1)
    _check(_frequencies(picks, 4), _tempered_nucleus(2.0, 0.65, 3), 0.02, "T=2")


@contextlib.contextmanager
def fixed_logits(model, logits: torch.Tensor):
    """Every lm_head output of ``model`` becomes ``logits`` [V] while the context is open."""
    head = model.get_output_embeddings()
    handle = head.register_forward_hook(
        lambda module, args, out: logits.to(out.dtype).expand(out.shape).clone()
    )
    try:
        yield
    finally:
        handle.remove()


def _train_one_step(tiny_rl_config, out, monkeypatch, make_logits, **overrides):
    """One StepGRPO step on the tiny model with rollouts sampled from make_logits(model) [V];
    returns (model, completion ids [N, C], completion mask [N, C])."""
    from stepgrpo_fast.trainer.loop import run_stepgrpo

    real, seen = grpo_loop.generate_rollouts, {}

    def generate(model, *args, **kwargs):
        with fixed_logits(model, make_logits(model)):
            rollout = real(model, *args, **kwargs)
        seen.update(model=model, ids=rollout.completion_ids, mask=rollout.completion_mask)
        return rollout

    monkeypatch.setattr(grpo_loop, "generate_rollouts", generate)
    values = dict(num_generations=32, max_new_tokens=16, temperature=1.0, beta=0.0)
    summary = run_stepgrpo(tiny_rl_config(out, **{**values, **overrides}))
    assert summary["steps"] == 1
    return seen["model"], seen["ids"], seen["mask"]


def _content_tokens(model, count: int) -> list[int]:
    """``count`` ordinary token ids: no EOS / pad / placeholder / special token."""
    cfg = model.config
    special = {getattr(cfg, name, None) for name in (
        "image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id",
        "eos_token_id", "pad_token_id", "bos_token_id")}
    eos = model.generation_config.eos_token_id
    special |= set(eos if isinstance(eos, (list, tuple)) else [eos])
    return [t for t in range(10, 1000) if t not in special][:count]


@pytest.mark.parametrize("top_k,top_p,temperature", [(0, 0.5, 1.0), (0, 0.75, 1.0), (2, 0.55, 1.0),
                                                   (0, 0.65, 2.0)])
def test_trainer_rollouts_sample_exactly_the_nucleus(tmp_path, tiny_rl_config, monkeypatch,
                                                     top_k, top_p, temperature):
    tokens = {}

    def make_logits(model):
        tokens["ids"] = _content_tokens(model, 4)
        logits = torch.full((model.config.get_text_config().vocab_size,), -1e4)
        logits[tokens["ids"]] = PROBS.log()
        return logits

    _, ids, mask = _train_one_step(tiny_rl_config, tmp_path, monkeypatch, make_logits,
                                   top_k=top_k, top_p=top_p, temperature=temperature)
    assert bool(mask.bool().all())  # no EOS among the four: 2 x 32 x 16 = 1024 draws
    lookup = {t: i for i, t in enumerate(tokens["ids"])}
    assert set(ids.flatten().tolist()) <= set(lookup)
    picks = torch.tensor([lookup[t] for t in ids.flatten().tolist()])
    want = CASES[(top_k, top_p)] if temperature == 1.0 else _tempered_nucleus(temperature, top_p, 3)
    _check(_frequencies(picks, 4), want, 0.06, f"top_k {top_k}, top_p {top_p}, T {temperature}")


def test_placeholder_tokens_are_never_sampled(tmp_path, tiny_rl_config, monkeypatch):
    """The model puts ~all its mass on the image / video / vision-start / vision-end tokens;
    the rollouts sample only the two ordinary tokens left (and the step trains)."""
    tokens = {}

    def make_logits(model):
        cfg = model.config
        placeholders = [cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id,
                        cfg.vision_end_token_id]
        tokens.update(placeholders=placeholders, ordinary=_content_tokens(model, 2))
        logits = torch.full((cfg.get_text_config().vocab_size,), -1e4)
        logits[placeholders] = 10.0  # each ~e^10 times as likely as an ordinary token
        logits[tokens["ordinary"]] = torch.tensor([0.0, -1.0])
        return logits

    _, ids, mask = _train_one_step(tiny_rl_config, tmp_path, monkeypatch, make_logits)
    sampled = ids[mask.bool()].tolist()
    assert not set(sampled) & set(tokens["placeholders"])
    freq = torch.tensor([sampled.count(t) for t in tokens["ordinary"]]).float() / len(sampled)
    want = torch.softmax(torch.tensor([0.0, -1.0]), -1)
    assert len(sampled) == 1024 and torch.allclose(freq, want, atol=0.06)
