"""Parity with the outside world, fp32 on CPU, loss and gradients to ~1e-5 relative:

* Liger-Kernel's LigerFusedLinearGRPOLoss (compiled=False), which runs on CPU;
* an independent transcription of TRL 1.16 GRPOTrainer._compute_loss (token-level importance
  sampling, two-sided clip, k3 KL added after the surrogate, the grpo/bnpo/dr_grpo reductions),
  with use_bias_correction_kl=False (Liger and this transcription predate it). The rest of the
  family, and TRL's own _compute_loss code: tests/ops/test_grpo_algorithms.py.
"""
import pytest
import torch

from stepgrpo_fast.functional.grpo import grpo_loss, linear_grpo_loss

B, T, H, V = 3, 8, 32, 203
MAX_LEN = 10


def trl_compute_loss(per_token_logps, advantages, mask, *, old_per_token_logps, ref_per_token_logps, beta,
                     epsilon_low, epsilon_high, loss_type, max_completion_length):
    """What TRL's _compute_loss does for loss types grpo/bnpo/dr_grpo (written from reading it)."""
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    old = per_token_logps.detach() if old_per_token_logps is None else old_per_token_logps
    coef_1 = torch.exp(per_token_logps - old)
    if beta != 0.0:
        d = ref_per_token_logps - per_token_logps
        per_token_kl = torch.exp(d) - d - 1
    coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
    per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type == "grpo":
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    return (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)


def problem(seed=0, temperature=1.0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=g)
    weight = torch.randn(V, H, generator=g) / H ** 0.5
    bias = torch.randn(V, generator=g) * 0.1
    targets = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T)
    mask[1, T // 2:] = 0
    adv = torch.randn(B, generator=g)
    with torch.no_grad():
        logits = (hidden @ weight.t() + bias) / temperature
        logp = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
    old = logp + (torch.rand(B, T, generator=g) - 0.5) * 1.2
    refl = logp + (torch.rand(B, T, generator=g) - 0.5) * 0.8
    return hidden, weight, bias, targets, mask, adv, old, refl


def rel_err(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30))


LEGACY_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo")
CASES = [(lt, old, ref) for lt in LEGACY_LOSS_TYPES for old, ref in [(False, False), (True, False), (True, True)]]


@pytest.mark.parametrize("loss_type,with_old,with_ref", CASES)
@pytest.mark.parametrize("temperature", [1.0, 1.2])
def test_linear_grpo_loss_matches_liger(loss_type, with_old, with_ref, temperature):
    liger = pytest.importorskip("liger_kernel.chunked_loss")
    hidden, weight, bias, targets, mask, adv, old, refl = problem(temperature=temperature)
    beta = 0.04 if with_ref else 0.0
    kw = {"epsilon_low": 0.2, "epsilon_high": 0.28}
    module = liger.LigerFusedLinearGRPOLoss(beta=beta, compiled=False, use_ref_model=with_ref, loss_type=loss_type,
                                            max_completion_length=MAX_LEN, temperature=temperature, **kw)
    h1, w1, b1 = (x.clone().requires_grad_() for x in (hidden, weight, bias))
    want, want_metrics = module(h1, w1, targets, mask, adv, bias=b1,
                                ref_per_token_logps=refl if with_ref else None,
                                old_per_token_logps=old if with_old else None)
    want_g = torch.autograd.grad(want, (h1, w1, b1))
    h2, w2, b2 = (x.clone().requires_grad_() for x in (hidden, weight, bias))
    got, metrics = linear_grpo_loss(h2, w2, targets, mask, adv, old_logp=old if with_old else None,
                                    ref_logp=refl if with_ref else None, beta=beta, temperature=temperature,
                                    loss_type=loss_type, max_completion_length=MAX_LEN, bias=b2,
                                    use_bias_correction_kl=False, **kw)
    got_g = torch.autograd.grad(got, (h2, w2, b2))
    assert abs(float(got.detach()) - float(want.detach())) <= 1e-5 * max(1.0, abs(float(want.detach())))
    for a, b in zip(got_g, want_g):
        assert rel_err(a, b) < 1e-5
    if with_ref:
        assert abs(float(metrics["kl"]) - float(want_metrics[0])) < 1e-6
    assert abs(float(metrics["clip_ratio"]) - float(want_metrics[-1])) < 1e-6
    if with_old:
        assert float(metrics["clip_ratio"]) > 0


@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("loss_type,with_old,with_ref", CASES)
def test_linear_grpo_loss_matches_trl_formula(impl, loss_type, with_old, with_ref):
    temperature = 0.9
    hidden, weight, bias, targets, mask, adv, old, refl = problem(seed=1, temperature=temperature)
    beta = 0.04 if with_ref else 0.0
    kw = {"old_per_token_logps": old if with_old else None, "ref_per_token_logps": refl if with_ref else None,
              "beta": beta, "epsilon_low": 0.2, "epsilon_high": 0.2, "loss_type": loss_type,
              "max_completion_length": MAX_LEN}
    h1, w1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logits = (h1 @ w1.t() + bias) / temperature  # TRL: logits / temperature, then selective log-softmax
    per_token_logps = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
    want = trl_compute_loss(per_token_logps, adv, mask, **kw)
    want_g = torch.autograd.grad(want, (h1, w1))
    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    got, _ = linear_grpo_loss(h2, w2, targets, mask, adv, old_logp=kw["old_per_token_logps"],
                              ref_logp=kw["ref_per_token_logps"], beta=beta, temperature=temperature,
                              loss_type=loss_type, max_completion_length=MAX_LEN, bias=bias, impl=impl,
                              use_bias_correction_kl=False)
    got_g = torch.autograd.grad(got, (h2, w2))
    assert abs(float(got.detach()) - float(want.detach())) <= 1e-5 * max(1.0, abs(float(want.detach())))
    for a, b in zip(got_g, want_g):
        assert rel_err(a, b) < 1e-5


@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("loss_type,with_old,with_ref", CASES)
def test_grpo_loss_matches_trl_formula(impl, loss_type, with_old, with_ref):
    _, _, _, _, mask, _, old, refl = problem(seed=2)
    g = torch.Generator().manual_seed(3)
    logp = -torch.rand(B, T, generator=g) * 4
    adv = torch.randn(B, T, generator=g)  # [B, T] advantages, as TRL subclasses may pass
    beta = 0.04 if with_ref else 0.0
    kw = {"old_per_token_logps": old if with_old else None, "ref_per_token_logps": refl if with_ref else None,
              "beta": beta, "epsilon_low": 0.2, "epsilon_high": 0.2, "loss_type": loss_type,
              "max_completion_length": MAX_LEN}
    x1 = logp.clone().requires_grad_()
    want = trl_compute_loss(x1, adv, mask, **kw)
    (want_g,) = torch.autograd.grad(want, x1)
    x2 = logp.clone().requires_grad_()
    got, _ = grpo_loss(x2, adv, mask, old_logp=kw["old_per_token_logps"], ref_logp=kw["ref_per_token_logps"],
                       beta=beta, loss_type=loss_type, max_completion_length=MAX_LEN, impl=impl,
                       use_bias_correction_kl=False)
    (got_g,) = torch.autograd.grad(got, x2)
    assert abs(float(got.detach()) - float(want.detach())) <= 1e-6 * max(1.0, abs(float(want.detach())))
    assert rel_err(got_g, want_g) < 1e-6
