"""The GRPO-family trainer options (issue [algorithms]): each StepGRPOConfig loss option reaches
functional.linear_grpo_loss unchanged, dapo's num_items_in_batch makes G micro-batches update as
one batch, mask_truncated_completions, multi_objective_aggregation and the validation errors.

The tiny random model rarely writes the response layout, so ``digit_share`` (extra reward)
gives the groups a spread; ``spy`` records every call of the fused loss op."""

import json

import pytest
import torch
from episode_samples import GOOD, WRONG, digit_share, record

import stepgrpo_fast.functional as F
from stepgrpo_fast.trainer.config import StepGRPOConfig
from stepgrpo_fast.trainer.rl.episodes import build_episodes, global_batch_normalize
from stepgrpo_fast.trainer.rl.grpo_loop import LOSS_OPTIONS, dapo_num_items
from stepgrpo_fast.trainer.loop import run_stepgrpo

DIGIT_REWARD = f"{__name__}:digit_share"


def _config(tiny_rl_config, out, **overrides):
    """The tiny RL config (conftest) with these tests' scale and the library's vision defaults."""
    values = dict(
        max_new_tokens=24,
        learning_rate=1e-3,
        freeze_vision=StepGRPOConfig.freeze_vision,
        max_pixels=StepGRPOConfig.max_pixels,
        extra_reward_funcs=[DIGIT_REWARD],
        extra_reward_weights=[1.0],
    )
    values.update(overrides)
    return tiny_rl_config(out, **values)


@pytest.fixture
def spy(monkeypatch):
    """(the real op, the list of recorded calls): every tensor argument cloned, detached."""
    real = F.linear_grpo_loss
    calls = []

    def recording(hidden, weight, targets, mask, advantages, **kwargs):
        keep = lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v  # noqa: E731
        calls.append(
            dict(
                hidden=keep(hidden),
                weight=keep(weight),
                targets=keep(targets),
                mask=keep(mask),
                advantages=keep(advantages),
                **{k: keep(v) for k, v in kwargs.items()},
            )
        )
        return real(hidden, weight, targets, mask, advantages, **kwargs)

    monkeypatch.setattr(F, "linear_grpo_loss", recording)
    return real, calls


def _replay(real, call, **changes):
    """The op's loss on a recorded call's inputs, with some arguments changed."""
    args = {**call, **changes}
    positional = [args.pop(k) for k in ("hidden", "weight", "targets", "mask", "advantages")]
    return real(*positional, **args)[0].item()


def _rows(out):
    return [json.loads(line) for line in open(f"{out}/metrics.jsonl")]


OPTION_SETS = [
    dict(
        loss_type="dapo",
        importance_sampling_level="sequence",
        delta=2.0,
        use_bias_correction_kl=False,
        entropy_coef=0.01,
        top_entropy_quantile=0.5,
        off_policy_mask_threshold=0.5,
    ),
    dict(loss_type="sapo", sapo_temperature_pos=0.5, sapo_temperature_neg=2.0),
    dict(loss_type="cispo", epsilon_high=4.0),
    dict(loss_type="luspo", importance_sampling_level="sequence"),
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=[o["loss_type"] for o in OPTION_SETS])
def test_every_loss_option_reaches_the_op(options, spy, tiny_rl_config, tmp_path):
    real, calls = spy
    config = _config(tiny_rl_config, tmp_path, **options)
    run_stepgrpo(config)
    assert len(calls) == 1  # one micro-batch, one update
    call = calls[0]
    for name in (*LOSS_OPTIONS, "loss_type", "epsilon_high", "beta", "temperature"):
        assert call[name] == getattr(config, name), name
    assert call["max_completion_length"] == config.max_new_tokens
    tokens = call["mask"].sum().item()
    if config.loss_type in ("dapo", "cispo"):  # one process, G = 1: the batch's active tokens
        assert call["num_items_in_batch"] == pytest.approx(tokens)
    else:
        assert call["num_items_in_batch"] is None
    logged = _rows(tmp_path)[0]
    assert logged["loss"] == pytest.approx(_replay(real, call), rel=1e-6, abs=1e-9)
    if config.entropy_coef > 0:
        assert logged["entropy"] > 0
    if config.loss_type == "cispo":
        assert "cispo_clip_ratio" in logged
    # the loss type matters on this very batch: grpo's per-sequence mean differs from it
    grpo = _replay(real, call, loss_type="grpo", num_items_in_batch=None)
    assert abs(grpo - logged["loss"]) > 1e-6


def test_dapo_two_micro_batches_update_as_one_batch(spy, tiny_rl_config, tmp_path):
    """G = 2 micro-batches of 2 prompts == G = 1 of the same 4 prompts (same completions: the
    sampling seeds follow the position in the global batch), gradient norm included."""
    _, calls = spy
    kw = dict(loss_type="dapo", beta=0.04)
    big = run_stepgrpo(
        _config(tiny_rl_config, tmp_path / "big", per_device_batch_size=4, **kw)
    )
    acc = run_stepgrpo(
        _config(
            tiny_rl_config,
            tmp_path / "acc",
            per_device_batch_size=2,
            gradient_accumulation_steps=2,
            **kw,
        )
    )
    one, (first, second) = calls[0], calls[1:]
    total = one["mask"].sum().item()
    n1, n2 = first["mask"].sum().item(), second["mask"].sum().item()
    assert n1 + n2 == total and n1 != n2  # unequal micro-batches: a per-call mean would differ
    g_big, g_acc = (_rows(tmp_path / d)[0]["grad_norm"] for d in ("big", "acc"))
    assert g_acc == pytest.approx(g_big, rel=1e-4)  # the pre-clip norm: scale-sensitive
    assert big["metrics"]["loss"] == pytest.approx(acc["metrics"]["loss"], rel=1e-4, abs=1e-7)
    assert one["num_items_in_batch"] == pytest.approx(total)
    assert first["num_items_in_batch"] == second["num_items_in_batch"] == pytest.approx(total / 2)


def test_dapo_num_items_counts_every_micro_batch_and_process():
    masks = [torch.ones(2, 3), torch.tensor([[1, 1, 0], [1, 0, 0]])]  # 6 + 3 active tokens
    assert dapo_num_items(masks, 1) == pytest.approx(9 / 2)
    other_process = torch.tensor([7.0])  # what a second process counted
    gather = lambda t: torch.cat([t.float(), other_process])  # noqa: E731
    assert dapo_num_items(masks, 2, gather=gather) == pytest.approx((9 + 7) / 4)
    assert dapo_num_items([torch.zeros(2, 3)], 1) == 1.0  # never a division by zero


def test_mask_truncated_completions_drops_rows_without_eos(
    spy, tiny_ckpt, tiny_rl_config, tmp_path
):
    from stepgrpo_fast.trainer.model.loading import load_model_and_processor
    from stepgrpo_fast.trainer.rl.rollout import ended_with_eos, eos_token_ids

    _, calls = spy
    model, processor = load_model_and_processor(str(tiny_ckpt))
    eos = eos_token_ids(model, processor.tokenizer)
    for masked in (False, True):
        out = tmp_path / str(masked)
        run_stepgrpo(_config(tiny_rl_config, out, mask_truncated_completions=masked))
        assert 0 < _rows(out)[0]["truncated_fraction"] < 1
    plain, masked = calls
    assert torch.equal(plain["targets"], masked["targets"])  # the same completions
    ended = ended_with_eos(plain["targets"], plain["mask"], eos)
    assert ended.any() and not ended.all()
    assert plain["mask"][~ended].sum() > 0  # without the option truncated rows count
    assert masked["mask"][~ended].sum() == 0
    assert torch.equal(masked["mask"][ended], plain["mask"][ended])
    assert torch.equal(masked["advantages"], plain["advantages"])  # rewards still count them


# ------------------------------------------------------------ multi_objective_aggregation


BROKEN = "the answer is 5 or 55"


def _group_norm(x, m):
    g = x.view(-1, m)
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-4)).view(-1)


def test_normalize_then_sum_matches_a_hand_computation():
    records = [record("5", [["2 + 3 = 5"]]), record("6", [["2 + 3 = 5"]])]
    texts = [GOOD, WRONG, BROKEN, GOOD, BROKEN, WRONG]  # M = 3, two groups
    digits = torch.tensor(digit_share(texts))
    weights, w_extra = (1.0, 0.5), 2.0
    kw = dict(
        num_generations=3, reward_weights=weights, extra_rewards=[("d", digit_share, w_extra)]
    )
    ep = build_episodes(texts, records, aggregation="normalize_then_sum", **kw)
    r_acc = torch.tensor([1.1, 0.1, 0.0, 0.1, 0.0, 1.1])
    r_val = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    assert ep.reward_accuracy.tolist() == pytest.approx(r_acc.tolist())
    assert ep.reward_validity.tolist() == r_val.tolist()
    summed = (
        1.0 * _group_norm(r_acc, 3) + 0.5 * _group_norm(r_val, 3) + 2.0 * _group_norm(digits, 3)
    )
    assert ep.advantages.tolist() == pytest.approx(summed.tolist(), rel=1e-5, abs=1e-6)
    # the logged reward stays the weighted sum of the raw rewards
    assert ep.reward.tolist() == pytest.approx((r_acc + 0.5 * r_val + 2.0 * digits).tolist())
    # ... and differs from the weighted sum then normalised
    plain = build_episodes(texts, records, **kw)
    assert not torch.allclose(plain.advantages, ep.advantages, atol=1e-3)
    # last step, over the global batch (two micro-batches here)
    other = torch.tensor([0.3, -0.3, 1.0, -1.0])
    a, b = global_batch_normalize([ep.advantages, other])
    everything = torch.cat([summed, other])
    expected = (everything - everything.mean()) / (everything.std() + 1e-4)
    assert torch.cat([a, b]).tolist() == pytest.approx(expected.tolist(), rel=1e-5, abs=1e-6)


def test_normalize_then_sum_in_a_run(spy, tiny_rl_config, tmp_path):
    _, calls = spy
    run_stepgrpo(
        _config(
            tiny_rl_config, tmp_path, multi_objective_aggregation="normalize_then_sum"
        )
    )
    adv = calls[0]["advantages"]
    assert adv.mean().item() == pytest.approx(0.0, abs=1e-5)  # normalised over the batch
    assert adv.std().item() == pytest.approx(1.0, abs=1e-3)


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(loss_type="ppo"), "loss_type"),
        (dict(importance_sampling_level="batch"), "importance_sampling_level"),
        (dict(multi_objective_aggregation="mean"), "multi_objective_aggregation"),
        (dict(delta=0.0), "delta"),
        (dict(entropy_coef=-0.1), "entropy_coef"),
        (dict(top_entropy_quantile=0.0), "top_entropy_quantile"),
        (dict(top_entropy_quantile=1.5), "top_entropy_quantile"),
        (dict(off_policy_mask_threshold=-1.0), "off_policy_mask_threshold"),
        (dict(sapo_temperature_pos=0.0), "sapo_temperature_pos"),
        (dict(sapo_temperature_neg=-1.0), "sapo_temperature_neg"),
        (dict(dynamic_sampling_max_rounds=0), "dynamic_sampling_max_rounds"),
        (dict(loss_type="cispo", epsilon_high=0.2), "epsilon_high"),
        (
            dict(multi_objective_aggregation="normalize_then_sum", advantage_scale="batch"),
            "advantage_scale",
        ),
    ],
)
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        StepGRPOConfig(**overrides)


def test_defaults_and_yaml_overrides():
    c = StepGRPOConfig()
    assert c.loss_type == "grpo"  # the released recipe (TRL 1.16 defaults to dapo)
    assert c.use_bias_correction_kl is True  # as TRL 1.16
    assert (c.dynamic_sampling, c.mask_truncated_completions) == (False, False)
    assert c.multi_objective_aggregation == "sum_then_normalize"
    c = StepGRPOConfig.from_yaml(
        None,
        ["loss_type=dapo", "delta=4", "off_policy_mask_threshold=0.5", "dynamic_sampling=true"],
    )
    assert (c.loss_type, c.delta, c.off_policy_mask_threshold, c.dynamic_sampling) == (
        "dapo",
        4.0,
        0.5,
        True,
    )
