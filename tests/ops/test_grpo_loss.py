"""grpo_loss (torch closed form and Triton under the interpreter) vs the float64 autograd oracle."""
import pytest
import torch

from stepgrpo_fast.formulas import LOSS_TYPES
from stepgrpo_fast.functional.grpo import grpo_loss
from stepgrpo_fast.reference.grpo_loss import grpo_loss_reference

# loss_type="luspo" runs at token level here too: TRL's warning about that is expected
pytestmark = pytest.mark.filterwarnings("ignore:loss_type='luspo'")

IMPLS = ["torch", "triton"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def make_batch(b=4, t=9, *, seed=0, adv_per_token=False):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    # old differs by up to +-0.6 in log space: ratios from ~0.55 to ~1.8, clipping active on some tokens
    old = logp + (torch.rand(b, t, generator=g, dtype=torch.float64) - 0.5) * 1.2
    ref = logp + (torch.rand(b, t, generator=g, dtype=torch.float64) - 0.5) * 0.8
    adv = torch.randn(b, t, generator=g, dtype=torch.float64) if adv_per_token else \
        torch.randn(b, generator=g, dtype=torch.float64)
    mask = torch.ones(b, t)
    mask[1, t // 2:] = 0          # half-masked row
    if b > 2:
        mask[2, -2:] = 0
    return logp, old, ref, adv, mask


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("with_old,with_ref", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("adv_per_token", [False, True])
def test_matches_float64_oracle(impl, loss_type, with_old, with_ref, adv_per_token):
    logp, old, ref, adv, mask = make_batch(adv_per_token=adv_per_token)
    beta = 0.04 if with_ref else 0.0
    kw = {"old_logp": old if with_old else None, "ref_logp": ref if with_ref else None, "beta": beta,
              "epsilon_low": 0.2, "epsilon_high": 0.28, "loss_type": loss_type}
    x64 = logp.clone().requires_grad_()
    want, want_m = grpo_loss_reference(x64, adv, mask, **kw)
    (want_g,) = torch.autograd.grad(want, x64)
    x32 = logp.float().requires_grad_()
    kw32 = {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    got, got_m = grpo_loss(x32, adv.float(), mask, impl=impl, **kw32)
    (got_g,) = torch.autograd.grad(got, x32)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert abs(float(got.detach()) - float(want.detach())) <= 2e-6 * max(1.0, abs(float(want.detach())))
    assert rel_err(got_g, want_g) < 2e-6
    for key in ("kl", "clip_ratio", "clip_ratio_low", "clip_ratio_high", "ratio_mean", "ratio_min", "ratio_max"):
        assert abs(float(got_m[key]) - float(want_m[key])) < 1e-5, key
    if with_old:
        assert float(got_m["clip_ratio"]) > 0, "the test data must put some tokens in the clipped region"


def test_float64_torch_path_is_exact():
    logp, old, ref, adv, mask = make_batch(seed=3)
    x = logp.clone().requires_grad_()
    got, _ = grpo_loss(x, adv, mask, old_logp=old, ref_logp=ref, impl="torch")
    (g,) = torch.autograd.grad(got, x)
    y = logp.clone().requires_grad_()
    want, _ = grpo_loss_reference(y, adv, mask, old_logp=old, ref_logp=ref)
    (wg,) = torch.autograd.grad(want, y)
    assert got.dtype == torch.float64
    assert abs(float((got - want).detach())) < 1e-14 and rel_err(g, wg) < 1e-13


@pytest.mark.parametrize("impl", IMPLS)
def test_no_old_logp_is_reinforce_with_ratio_one(impl):
    logp, _, _, adv, mask = make_batch(seed=1)
    x = logp.float().requires_grad_()
    loss, metrics = grpo_loss(x, adv.float(), mask, beta=0.0, loss_type="bnpo", impl=impl)
    (g,) = torch.autograd.grad(loss, x)
    expected = -(adv.float()[:, None] * mask) / mask.sum()
    torch.testing.assert_close(g, expected, rtol=1e-6, atol=1e-8)
    assert float(metrics["ratio_min"]) == float(metrics["ratio_max"]) == 1.0
    assert float(metrics["clip_ratio"]) == 0.0


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_all_zero_mask_gives_zero_loss_and_gradient(impl, loss_type):
    logp, old, ref, adv, _ = make_batch()
    logp[0, 0] = float("-inf")  # padding garbage where nothing counts must not leak NaN
    x = logp.float().requires_grad_()
    loss, metrics = grpo_loss(x, adv.float(), torch.zeros(4, 9), old_logp=old.float(), ref_logp=ref.float(),
                              loss_type=loss_type, impl=impl)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert all(torch.isfinite(v).all() for v in metrics.values())
    assert float(metrics["num_tokens"]) == 0 and float(metrics["ratio_mean"]) == 1.0


@pytest.mark.parametrize("impl", IMPLS)
def test_sequence_without_tokens_counts_as_zero_in_grpo_mean(impl):
    logp, _, _, adv, mask = make_batch(b=3, t=5, seed=4)
    mask[1] = 0
    x = logp.float().requires_grad_()
    loss, _ = grpo_loss(x, adv.float(), mask, beta=0.0, impl=impl)
    per_seq = -(adv.float()[:, None] * mask).sum(1) / mask.sum(1).clamp(min=1)
    assert abs(float(loss.detach()) - float(per_seq.mean())) < 1e-6


def test_float_mask_weights_tokens_like_trl():
    logp, old, ref, adv, mask = make_batch(seed=5)
    mask = mask * torch.linspace(0.25, 1.0, 9)
    x = logp.clone().requires_grad_()
    got, _ = grpo_loss(x, adv, mask, old_logp=old, ref_logp=ref, loss_type="bnpo", impl="torch")
    want, _ = grpo_loss_reference(logp, adv, mask, old_logp=old, ref_logp=ref, loss_type="bnpo")
    assert abs(float((got - want).detach())) < 1e-12


def test_grad_output_scales_gradient():
    logp, old, ref, adv, mask = make_batch(seed=6)
    x = logp.float().requires_grad_()
    loss, _ = grpo_loss(x, adv.float(), mask, old_logp=old.float(), ref_logp=ref.float())
    (g1,) = torch.autograd.grad(loss, x, retain_graph=True)
    (g3,) = torch.autograd.grad(3.0 * loss, x)
    torch.testing.assert_close(g3, 3.0 * g1)


def test_dr_grpo_max_completion_length():
    logp, _, _, adv, mask = make_batch(b=2, t=6, seed=7)
    a, _ = grpo_loss(logp, adv, mask, beta=0.0, loss_type="dr_grpo")
    b, _ = grpo_loss(logp, adv, mask, beta=0.0, loss_type="dr_grpo", max_completion_length=12)
    assert abs(float(a.detach()) - 2.0 * float(b.detach())) < 1e-12


# ------------------------------------------------------------------------------- bad input
def _good():
    logp, old, ref, adv, mask = make_batch(b=2, t=5)
    return {"logp": logp, "advantages": adv, "mask": mask, "old_logp": old, "ref_logp": ref}


@pytest.mark.parametrize("key,value,match", [
    ("mask", torch.ones(2, 4), "mask must be"),
    ("mask", torch.ones(5, 2), "mask must be"),
    ("advantages", torch.ones(3), "advantages must be"),
    ("advantages", torch.ones(2, 4), "advantages must be"),
    ("advantages", torch.ones(2, dtype=torch.long), "advantages must be floating"),
    ("old_logp", torch.zeros(2, 6), "old_logp must be"),
    ("ref_logp", torch.zeros(1, 5), "ref_logp must be"),
    ("logp", torch.zeros(10), "logp must be"),
])
def test_shape_mismatches_raise_naming_the_tensor(key, value, match):
    args = _good()
    args[key] = value
    with pytest.raises(ValueError, match=match):
        grpo_loss(args.pop("logp"), args.pop("advantages"), args.pop("mask"), **args)


def test_bad_hyperparameters_raise():
    a = _good()
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(a["logp"], a["advantages"], a["mask"], ref_logp=a["ref_logp"], loss_type="vespo")
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(a["logp"], a["advantages"], a["mask"], beta=0.04)
    with pytest.raises(ValueError, match="epsilon_low"):
        grpo_loss(a["logp"], a["advantages"], a["mask"], beta=0.0, epsilon_low=-0.1)
    with pytest.raises(ValueError, match="max_completion_length"):
        grpo_loss(a["logp"], a["advantages"], a["mask"], beta=0.0, max_completion_length=0)
    with pytest.raises(ValueError, match="impl"):
        grpo_loss(a["logp"], a["advantages"], a["mask"], beta=0.0, impl="cuda")
    with pytest.raises(TypeError, match="logp"):
        grpo_loss([[0.0]], a["advantages"], a["mask"], beta=0.0)


def test_beta_zero_ignores_ref_logp():
    a = _good()
    with_ref, _ = grpo_loss(a["logp"], a["advantages"], a["mask"], ref_logp=a["ref_logp"], beta=0.0)
    without, m = grpo_loss(a["logp"], a["advantages"], a["mask"], beta=0.0)
    assert float(with_ref) == float(without) and float(m["kl"]) == 0.0
