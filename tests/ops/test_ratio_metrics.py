"""The logged ratio / clip / KL metrics against a hand computation (no shared code with the op:
formulas.token_stats feeds both the op and reference/grpo_loss.py, so the oracle tests cannot
see a mistake in it).

Hand case: 2 sequences x 3 tokens, the last token of sequence 1 masked out, ratios chosen as
    seq 0 (A = +1): 1.5, 0.5, 1.0      seq 1 (A = -1): 1.4, 0.7, (9.0 masked)
with epsilon_low 0.2, epsilon_high 0.28 (region clipping as TRL logs it: ratio > 1.28 with A > 0,
ratio < 0.8 with A < 0), so over the 5 counted tokens
    ratio_mean = (1.5 + 0.5 + 1.0 + 1.4 + 0.7) / 5, ratio_min 0.5, ratio_max 1.5 (not 9.0),
    clip_ratio_high = 1/5 (1.5; 1.4 has A < 0), clip_ratio_low = 1/5 (0.7; 0.5 has A > 0),
    clip_ratio = 2/5,
    kl = mean of exp(d) - d - 1 over the counted d = ref - logp (times the ratio with
    use_bias_correction_kl)."""

import math

import pytest
import torch

from stepgrpo_fast.functional.grpo import grpo_loss, linear_grpo_loss

RATIOS = [[1.5, 0.5, 1.0], [1.4, 0.7, 9.0]]
REF_MINUS_LOGP = [[0.0, math.log(2.0), -math.log(2.0)], [0.3, -0.1, 5.0]]
MASK = [[1, 1, 1], [1, 1, 0]]
ADV = [1.0, -1.0]
EPS_LOW, EPS_HIGH = 0.2, 0.28


def _hand_kl(bias_correction: bool) -> float:
    total = 0.0
    for d_row, r_row, m_row in zip(REF_MINUS_LOGP, RATIOS, MASK):
        for d, r, m in zip(d_row, r_row, m_row):
            if m:
                k3 = math.exp(d) - d - 1
                total += k3 * r if bias_correction else k3
    return total / 5


def _inputs(dtype=torch.float32):
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.2, -3.0]], dtype=torch.float64)
    old = logp - torch.tensor(RATIOS, dtype=torch.float64).log()
    ref = logp + torch.tensor(REF_MINUS_LOGP, dtype=torch.float64)
    return (logp.to(dtype), old.to(dtype), ref.to(dtype), torch.tensor(ADV, dtype=dtype),
            torch.tensor(MASK, dtype=dtype))


def _check(metrics, bias_correction):
    want = {
        "ratio_mean": (1.5 + 0.5 + 1.0 + 1.4 + 0.7) / 5,
        "ratio_min": 0.5,
        "ratio_max": 1.5,
        "clip_ratio_high": 1 / 5,
        "clip_ratio_low": 1 / 5,
        "clip_ratio": 2 / 5,
        "num_tokens": 5.0,
        "kl": _hand_kl(bias_correction),
    }
    got = {k: float(metrics[k]) for k in want}
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("bias_correction", [False, True])
def test_grpo_loss_metrics_by_hand(impl, bias_correction):
    logp, old, ref, adv, mask = _inputs()
    _, metrics = grpo_loss(logp, adv, mask, old_logp=old, ref_logp=ref, beta=0.04,
                           epsilon_low=EPS_LOW, epsilon_high=EPS_HIGH, impl=impl,
                           use_bias_correction_kl=bias_correction)
    _check(metrics, bias_correction)


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_linear_grpo_loss_metrics_by_hand(impl):
    """The fused op (the trainer's path): old / ref log-probs are set from the op's own log-probs
    (log_softmax of h W^T, computed here in float64) so that the ratios are the hand case's."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 3, 16, generator=g)
    weight = torch.randn(40, 16, generator=g) * 0.3
    targets = torch.randint(0, 40, (2, 3), generator=g)
    logp = torch.log_softmax(hidden.double() @ weight.double().T, -1)
    logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    old = (logp - torch.tensor(RATIOS, dtype=torch.float64).log()).float()
    ref = (logp + torch.tensor(REF_MINUS_LOGP, dtype=torch.float64)).float()
    _, metrics = linear_grpo_loss(
        hidden, weight, targets, torch.tensor(MASK, dtype=torch.float32),
        torch.tensor(ADV), old_logp=old, ref_logp=ref, beta=0.04, epsilon_low=EPS_LOW,
        epsilon_high=EPS_HIGH, use_bias_correction_kl=False, impl=impl,
    )
    _check(metrics, bias_correction=False)
