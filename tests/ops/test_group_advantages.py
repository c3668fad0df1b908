"""group_advantages: torch and Triton (interpreter) vs hand-computed values and TRL's nan-aware formula."""
import math

import pytest
import torch

from stepgrpo_fast.functional.grpo import group_advantages

IMPLS = ["torch", "triton"]


def trl_style(rewards: torch.Tensor, group_size: int, scale: str, eps: float = 1e-4) -> torch.Tensor:
    """Independent transcription of TRL's GRPO advantage step (nanmean, Bessel-corrected nanstd,
    std + 1e-4, nan -> 0), in float64."""
    r = rewards.double()
    grouped = r.view(-1, group_size)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(group_size)

    def nanstd(x, dim=None):
        m = torch.nanmean(x, dim=dim, keepdim=True)
        var = torch.nanmean((x - m) ** 2, dim=dim, keepdim=True)
        count = torch.sum(~torch.isnan(x), dim=dim, keepdim=True)
        var = var * torch.where(count > 1, count / (count - 1), torch.full_like(var, float("nan")))
        return var.sqrt().squeeze(dim) if dim is not None else var.sqrt().reshape(())

    adv = r - mean
    if scale == "group":
        adv = adv / (nanstd(grouped, dim=1).repeat_interleave(group_size) + eps)
    elif scale == "batch":
        adv = adv / (nanstd(r) + eps)
    return torch.nan_to_num(adv, nan=0.0)


@pytest.mark.parametrize("impl", IMPLS)
def test_hand_computed_group(impl):
    adv = group_advantages(torch.tensor([0.0, 1.0, 2.0, 3.0]), 4, impl=impl)
    std = math.sqrt(5.0 / 3.0)  # unbiased std of 0..3
    expected = torch.tensor([-1.5, -0.5, 0.5, 1.5]) / (std + 1e-4)
    assert adv.dtype == torch.float32
    torch.testing.assert_close(adv, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_matches_trl_formula_with_nans_and_equal_groups(impl, scale):
    g = torch.Generator().manual_seed(0)
    rewards = torch.rand(40, generator=g) * 2.1
    rewards[4:8] = 1.0            # equal-reward group -> 0
    rewards[9] = float("nan")     # unscorable completion -> 0, excluded from stats
    rewards[12:16] = float("nan")  # all-NaN group
    rewards[17:20] = float("nan")  # a single finite reward in its group
    got = group_advantages(rewards, 4, scale=scale, impl=impl)
    want = trl_style(rewards, 4, scale)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    assert torch.all(got[4:8] == 0) and got[9] == 0 and torch.all(got[12:20] == 0)


@pytest.mark.parametrize("impl", IMPLS)
def test_group_size_one_and_odd_sizes(impl):
    torch.testing.assert_close(group_advantages(torch.tensor([3.0, -1.0]), 1, impl=impl), torch.zeros(2))
    r = torch.arange(15, dtype=torch.float32) ** 1.5
    torch.testing.assert_close(group_advantages(r, 5, impl=impl).double(), trl_style(r, 5, "group"),
                               rtol=1e-5, atol=1e-5)


def test_accepts_sequences_and_none_as_nan():
    got = group_advantages([1, 2, None, 4], 2)
    assert got[2] == 0 and got[3] == 0
    torch.testing.assert_close(got[:2], torch.tensor([-0.5, 0.5]) / (math.sqrt(0.5) + 1e-4))


def test_eps_and_batch_scale_values():
    r = torch.tensor([0.0, 2.0, 1.0, 1.0])
    batch_std = float(r.std())
    got = group_advantages(r, 2, scale="batch", eps=0.5)
    torch.testing.assert_close(got, torch.tensor([-1.0, 1.0, 0.0, 0.0]) / (batch_std + 0.5))


@pytest.mark.parametrize("bad,match", [
    ({"group_size": 3}, "group_size=3 must divide"),
    ({"group_size": 0}, "group_size must be a positive int"),
    ({"group_size": 2, "scale": "global"}, "scale must be one of"),
    ({"group_size": 2, "eps": -1.0}, "eps"),
    ({"group_size": 2, "impl": "gpu"}, "impl"),
])
def test_bad_arguments_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        group_advantages(torch.ones(4), **bad)


def test_bad_rewards_raise():
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(torch.ones(2, 2), 2)
    with pytest.raises(ValueError, match="at least one"):
        group_advantages(torch.ones(0), 2)
    with pytest.raises(TypeError, match="rewards"):
        group_advantages("1234", 2)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_torch_path_equals_the_group_by_group_oracle(scale):
    from stepgrpo_fast.reference.grpo_loss import group_advantages_reference

    gen = torch.Generator().manual_seed(7)
    for group_size in (1, 2, 5):
        rewards = torch.randn(group_size * 6, generator=gen, dtype=torch.float64)
        rewards[torch.rand(rewards.shape, generator=gen) < 0.25] = float("nan")
        rewards[:group_size] = 0.5  # one flat group
        got = group_advantages(rewards, group_size, scale=scale, impl="torch")
        want = group_advantages_reference(rewards, group_size, scale)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
