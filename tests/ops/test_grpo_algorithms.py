"""The GRPO family of TRL 1.16 on grpo_loss and linear_grpo_loss (torch and the Triton
interpreter): loss, dH, dW, db from fp32 inputs equal TRL's own GRPOTrainer._compute_loss run in
float64 on materialised logits (tests/ops/trl_harness.py) and the float64 oracle
(reference/grpo_loss.py), relative error < 1e-5; edge cases; argument checks."""
import pytest
import torch
from trl_harness import trl_compute_loss

from stepgrpo_fast.functional.grpo import grpo_loss, linear_grpo_loss
from stepgrpo_fast.ops import chunking
from stepgrpo_fast.ops.linear_grpo_loss import linear_grpo_loss_triton
from stepgrpo_fast.ops.linear_grpo_loss_chunked import linear_grpo_loss_chunked
from stepgrpo_fast.reference.grpo_loss import grpo_loss_reference, linear_grpo_loss_naive

B, T, H, V = 4, 6, 40, 301
KL = {"beta": 0.04}
CASES = {
    "grpo": {}, "bnpo": {"loss_type": "bnpo"}, "dr_grpo": {"loss_type": "dr_grpo", "max_completion_length": 9},
    "dapo": {"loss_type": "dapo"}, "dapo_num_items": {"loss_type": "dapo", "num_items_in_batch": 37},
    "cispo": {"loss_type": "cispo", "epsilon_high": 1.1, "num_items_in_batch": torch.tensor(29.0)},
    "sapo": {"loss_type": "sapo"}, "sapo_temps": {"loss_type": "sapo", "sapo_temperature_pos": 2.0,
                                                  "sapo_temperature_neg": 0.5},
    "luspo_seq": {"loss_type": "luspo", "importance_sampling_level": "sequence"},
    "gspo": {"importance_sampling_level": "sequence"},
    "gspo_kl": {"importance_sampling_level": "sequence", **KL},
    "delta": {"delta": 1.15, "epsilon_high": 0.1},
    "kl_bias_corrected": {**KL, "loss_type": "dapo"},
    "kl_uncorrected": {**KL, "use_bias_correction_kl": False},
    "entropy_coef": {"entropy_coef": 0.05},
    "top_entropy": {"top_entropy_quantile": 0.45, "loss_type": "bnpo"},
    "top_entropy_bonus": {"top_entropy_quantile": 0.3, "entropy_coef": -0.2, **KL},
    "off_policy": {"off_policy_mask_threshold": 0.02, "sampling": True},
    "off_policy_default": {"off_policy_mask_threshold": 0.0},
    "is_ratio": {"isr": "bt", **KL}, "is_ratio_b1": {"isr": "b1", "loss_type": "sapo"},
    "everything": {"loss_type": "dapo", "importance_sampling_level": "sequence", "delta": 1.3, **KL,
                   "entropy_coef": 0.1, "top_entropy_quantile": 0.6, "off_policy_mask_threshold": 0.01,
                   "sampling": True, "isr": "bt"},
}
# Quantiles are picked so that 1 - q of the 15 counted entropies falls between two of them: at an
# exact order statistic TRL's float64 run (fp32 threshold vs float64 entropies) would drop the
# tie that an fp32 run keeps.


def rel_err(a, b):
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def make_problem(seed=0, t=T, fractional=True):
    g = torch.Generator().manual_seed(seed)
    f = (lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale).float())
    hidden, weight, bias = f(B, t, H), f(V, H, scale=2.0 / H ** 0.5), f(V, scale=0.5)
    targets = torch.randint(0, V, (B, t), generator=g)
    mask = torch.ones(B, t)
    mask[1, t // 2:] = 0
    mask[2] = 0            # a row without counted tokens
    if fractional:
        mask[3, 1] = 0.5   # a fractional weight, as TRL's float masks allow
    with torch.no_grad():
        logp = torch.log_softmax((hidden.double() @ weight.double().t() + bias.double()) / 0.9, -1)
        logp = logp.gather(-1, targets[..., None])[..., 0].float()
    u = (lambda scale: ((torch.rand(B, t, generator=g) - 0.5) * scale).float())
    return {"hidden": hidden, "weight": weight, "bias": bias, "targets": targets, "mask": mask,
            "adv": f(B), "old": logp + u(1.2), "ref": logp + u(0.8), "sampling": logp + u(0.6),
            "isr": {"bt": 0.5 + torch.rand(B, t, generator=g), "b1": 0.5 + torch.rand(B, 1, generator=g)}}


def options(p, case):
    kw = dict(CASES[case])
    kw["sampling_logp"] = p["sampling"] if kw.pop("sampling", False) else None
    isr = kw.pop("isr", None)
    kw["importance_sampling_ratio"] = None if isr is None else p["isr"][isr]
    kw.setdefault("beta", 0.0)
    return kw


def trl_linear(p, kw, temperature=0.9):
    """TRL's _compute_loss on float64 materialised logits -> (loss, (dH, dW, db))."""
    leaves = [p[k].double().requires_grad_() for k in ("hidden", "weight", "bias")]
    logits = (leaves[0] @ leaves[1].t() + leaves[2]) / temperature
    logps = torch.log_softmax(logits, -1)
    logp = logps.gather(-1, p["targets"][..., None])[..., 0]
    entropy = -(logps.exp() * logps).sum(-1)
    d = (lambda x: None if x is None else x.double())
    loss, metrics = trl_compute_loss(
        logp, entropy, p["mask"].double(), p["adv"].double(), old_logp=d(p["old"]),
        ref_logp=d(p["ref"]), **{k: d(v) if isinstance(v, torch.Tensor) else v for k, v in kw.items()})
    return loss.detach(), torch.autograd.grad(loss, leaves), metrics


def ours_linear(p, kw, impl, temperature=0.9):
    leaves = [p[k].clone().requires_grad_() for k in ("hidden", "weight", "bias")]
    loss, metrics = linear_grpo_loss(leaves[0], leaves[1], p["targets"], p["mask"], p["adv"],
                                     old_logp=p["old"], ref_logp=p["ref"], temperature=temperature,
                                     bias=leaves[2], impl=impl, **kw)
    return loss.detach(), torch.autograd.grad(loss, leaves), metrics


@pytest.mark.filterwarnings("ignore:.*importance_sampling_level")
@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("case", list(CASES))
def test_linear_grpo_loss_matches_trl_compute_loss(case, impl):
    """Also the metrics (on a 0/1 mask: TRL weights its metric means by float mask values, ours
    count tokens)."""
    p = make_problem(fractional=False)
    kw = options(p, case)
    want, want_g, trl_metrics = trl_linear(p, kw)
    got, got_g, metrics = ours_linear(p, kw, impl)
    assert abs(float(got) - float(want)) <= 1e-5 * max(1.0, abs(float(want))), (float(got), float(want))
    for a, b in zip(got_g, want_g):
        assert rel_err(a, b) < 1e-5
    oracle, _ = linear_grpo_loss_naive(*(p[k].double() for k in ("hidden", "weight", "targets")),
                                       p["mask"], p["adv"].double(), old_logp=p["old"].double(),
                                       ref_logp=p["ref"].double(), temperature=0.9,
                                       bias=p["bias"].double(), **kw)
    assert abs(float(oracle) - float(want)) <= 1e-12 * max(1.0, abs(float(want)))
    if "entropy" in metrics:   # TRL logs the entropy mean over the mask
        assert abs(float(metrics["entropy"]) - trl_metrics["entropy"][0]) < 1e-5
    if kw.get("beta") and kw.get("importance_sampling_level", "token") == "token":
        assert abs(float(metrics["kl"]) - trl_metrics["kl"][0]) < 1e-6
    if kw.get("loss_type") == "cispo":
        assert abs(float(metrics["cispo_clip_ratio"]) - trl_metrics["cispo_clip_ratio"][0]) < 1e-6
        assert 0 < float(metrics["cispo_clip_ratio"]) < 1
    elif kw.get("loss_type") != "sapo" and kw.get("importance_sampling_level", "token") == "token":
        assert abs(float(metrics["clip_ratio"]) - trl_metrics["clip_ratio/region_mean"][0]) < 1e-6


@pytest.mark.filterwarnings("ignore:.*importance_sampling_level")
@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("case", list(CASES))
def test_grpo_loss_matches_trl_compute_loss(case, impl):
    p = make_problem(seed=1)
    kw = options(p, case)
    g = torch.Generator().manual_seed(5)
    logp = (-torch.rand(B, T, generator=g) * 4).float()
    entropy = (torch.rand(B, T, generator=g) * 3).float()
    needs_ent = kw.get("entropy_coef", 0.0) != 0.0 or kw.get("top_entropy_quantile", 1.0) < 1.0
    x1, e1 = logp.double().requires_grad_(), entropy.double().requires_grad_()
    d = (lambda x: x.double() if isinstance(x, torch.Tensor) else x)
    want, _ = trl_compute_loss(x1, e1, p["mask"].double(), p["adv"].double(), old_logp=p["old"].double(),
                               ref_logp=p["ref"].double(), **{k: d(v) for k, v in kw.items()})
    wants = torch.autograd.grad(want, (x1, e1), allow_unused=True)
    x2, e2 = logp.clone().requires_grad_(), entropy.clone().requires_grad_()
    got, _ = grpo_loss(x2, p["adv"], p["mask"], old_logp=p["old"], ref_logp=p["ref"],
                       entropy=e2 if needs_ent else None, impl=impl, **kw)
    gots = torch.autograd.grad(got, (x2, e2), allow_unused=True)
    assert abs(float(got) - float(want)) <= 1e-6 * max(1.0, abs(float(want)))
    assert rel_err(gots[0], wants[0]) < 1e-6
    if kw.get("entropy_coef", 0.0) != 0.0:
        assert rel_err(gots[1], wants[1]) < 1e-6
    ref_loss, _ = grpo_loss_reference(logp.double(), p["adv"].double(), p["mask"], old_logp=p["old"].double(),
                                      ref_logp=p["ref"].double(), entropy=entropy.double(),
                                      **{k: d(v) for k, v in kw.items()})
    assert abs(float(ref_loss) - float(want)) <= 1e-12 * max(1.0, abs(float(want)))


@pytest.mark.parametrize("case", ["gspo_kl", "off_policy", "everything", "entropy_coef"])
def test_chunking_on_sequence_boundaries_and_long_sequences(monkeypatch, case):
    """8-row chunks (T = 10: every sequence is longer than the row budget -> a chunk of its own)
    and T = 3 (several sequences per chunk, none split) give the one-chunk result."""
    monkeypatch.setattr(chunking, "LOGITS_CHUNK_BYTES", 1)   # -> 8 rows
    for t in (10, 3):
        p = make_problem(seed=2, t=t)
        kw = options(p, case)
        want, want_g, _ = trl_linear(p, kw)
        got, got_g, _ = ours_linear(p, kw, "torch")
        assert abs(float(got) - float(want)) <= 1e-5 * max(1.0, abs(float(want)))
        for a, b in zip(got_g, want_g):
            assert rel_err(a, b) < 1e-5


def test_triton_vocab_splits_merge_the_entropy_partials():
    """Several vocabulary splits (kernel 1 partials merged in the glue) = the chunked path."""
    from stepgrpo_fast.formulas import PolicyOptions, token_weights
    p = make_problem(seed=3)
    opts = PolicyOptions(loss_type="dapo", importance_sampling_level="sequence", beta=0.04)
    w = token_weights(p["mask"], "dapo").reshape(-1)
    flat = (lambda x: x.reshape(-1))
    args = (p["hidden"].reshape(B * T, H), p["weight"], p["targets"].reshape(-1), w,
            p["adv"][:, None].expand(B, T).reshape(-1), flat(p["old"]), flat(p["ref"]))
    common = {"beta": 0.04, "epsilon_low": 0.2, "epsilon_high": 0.2, "temperature": 0.8, "opts": opts,
              "mask": flat(p["mask"]), "seq_len": T, "entropy_coef": 0.3, "top_entropy_quantile": 0.7,
              "bias": p["bias"]}
    want = linear_grpo_loss_chunked(*args, **common)
    got = linear_grpo_loss_triton(*args, blocks={"BLOCK_N": 16, "BLOCK_V": 64, "BLOCK_H": 32}, splits=3,
                                  **common)
    for a, b in zip(got[:4], want[:4]):
        assert rel_err(a, b) < 1e-5
    assert rel_err(got[4], want[4]) < 1e-5   # stats, the entropy sum included
    assert float(want[4][8]) > 0


@pytest.mark.filterwarnings("ignore:.*importance_sampling_level")
@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("case", ["grpo", "gspo_kl", "everything", "cispo", "top_entropy_bonus"])
def test_all_masked_batch_gives_zero_loss_zero_grads(case, impl):
    p = make_problem(seed=4)
    p["mask"] = torch.zeros(B, T)
    kw = options(p, case)
    loss, grads, metrics = ours_linear(p, kw, impl)
    assert float(loss) == 0.0
    assert all(float(g.abs().max()) == 0.0 for g in grads)
    assert all(torch.isfinite(v).all() for v in metrics.values())


@pytest.mark.filterwarnings("ignore:.*importance_sampling_level")
@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("case", ["everything", "cispo", "off_policy", "sapo"])
def test_uncounted_tokens_with_garbage_do_not_matter(case, impl):
    """Targets -100 and inf / NaN old, ref, sampling log-probs where mask == 0 change nothing."""
    p = make_problem(seed=5)
    kw = options(p, case)
    clean, clean_g, _ = ours_linear(p, kw, impl)
    off = p["mask"] == 0
    p["targets"] = torch.where(off, torch.full_like(p["targets"], -100), p["targets"])
    for k, bad in (("old", float("inf")), ("ref", float("-inf")), ("sampling", float("nan"))):
        p[k] = torch.where(off, torch.full_like(p[k], bad), p[k])
    kw = options(p, case)
    dirty, dirty_g, _ = ours_linear(p, kw, impl)
    assert float(dirty) == pytest.approx(float(clean), rel=1e-6, abs=1e-7)
    for a, b in zip(dirty_g, clean_g):
        assert torch.isfinite(a).all() and rel_err(a, b) < 1e-6


BAD = [
    ({"importance_sampling_level": "seq"}, "importance_sampling_level"),
    ({"delta": 0.0}, "delta"), ({"delta": float("nan")}, "delta"),
    ({"use_bias_correction_kl": 1}, "use_bias_correction_kl"),
    ({"entropy_coef": float("inf")}, "entropy_coef"),
    ({"top_entropy_quantile": 1.5}, "top_entropy_quantile"),
    ({"off_policy_mask_threshold": -0.1}, "off_policy_mask_threshold"),
    ({"sapo_temperature_pos": 0.0}, "sapo_temperature_pos"),
    ({"sapo_temperature_neg": -1.0}, "sapo_temperature_neg"),
    ({"num_items_in_batch": -3}, "num_items_in_batch"),
    ({"num_items_in_batch": torch.ones(2)}, "num_items_in_batch"),
    ({"importance_sampling_ratio": torch.ones(B)}, "importance_sampling_ratio"),
    ({"importance_sampling_ratio": torch.ones(B, T, dtype=torch.long)}, "importance_sampling_ratio"),
    ({"sampling_logp": torch.ones(B, T + 1)}, "sampling_logp"),
    ({"importance_sampling_ratio": torch.ones(B, T, device="meta")}, "importance_sampling_ratio"),
    ({"loss_type": "vespo"}, "loss_type"),
]


@pytest.mark.parametrize("bad,name", BAD)
def test_bad_options_raise_naming_the_argument(bad, name):
    p = make_problem()
    with pytest.raises(ValueError, match=name):
        linear_grpo_loss(p["hidden"], p["weight"], p["targets"], p["mask"], p["adv"], beta=0.0, **bad)
    with pytest.raises(ValueError, match=name):
        grpo_loss(p["old"], p["adv"], p["mask"], beta=0.0, **bad)


def test_grpo_loss_entropy_options_need_entropies():
    p = make_problem()
    with pytest.raises(ValueError, match="entropy"):
        grpo_loss(p["old"], p["adv"], p["mask"], beta=0.0, entropy_coef=0.1)
    with pytest.raises(ValueError, match="entropy must be"):
        grpo_loss(p["old"], p["adv"], p["mask"], beta=0.0, entropy=torch.ones(B))


def test_trl_warnings_are_mirrored():
    p = make_problem()
    with pytest.warns(UserWarning, match="luspo"):
        grpo_loss(p["old"], p["adv"], p["mask"], beta=0.0, loss_type="luspo")
    with pytest.warns(UserWarning, match="sequence"):
        grpo_loss(p["old"], p["adv"], p["mask"], beta=0.0, loss_type="dapo", importance_sampling_level="sequence")


def test_bias_corrected_kl_changes_the_gradient_but_not_the_on_policy_loss():
    """Default True (TRL 1.16): on-policy (old = None) the loss equals the uncorrected one, the
    gradient gains beta * kl_t per token."""
    p = make_problem()
    x = p["old"].clone().requires_grad_()
    common = {"ref_logp": p["ref"], "beta": 0.1}
    on, _ = grpo_loss(x, p["adv"], p["mask"], **common)
    off, _ = grpo_loss(x, p["adv"], p["mask"], use_bias_correction_kl=False, **common)
    assert float(on) == pytest.approx(float(off), rel=1e-6)
    g_on, g_off = (torch.autograd.grad(v, x)[0] for v in (on, off))
    assert float((g_on - g_off).abs().max()) > 1e-4


@pytest.mark.gpu
@pytest.mark.filterwarnings("ignore:.*importance_sampling_level")
@pytest.mark.parametrize("case", ["everything", "entropy_coef", "cispo", "gspo_kl"])
def test_triton_on_cuda_matches_trl_compute_loss(case):
    """The compiled kernels (HAS_ENT variants and the glue) on a GPU, fp32 (IEEE dots)."""
    p = make_problem(seed=6, fractional=False)
    kw = options(p, case)
    want, want_g, _ = trl_linear(p, kw)
    cuda = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in p.items() if k != "isr"}
    cuda["isr"] = {k: v.cuda() for k, v in p["isr"].items()}
    kw = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    got, got_g, _ = ours_linear(cuda, kw, "triton")
    assert abs(float(got) - float(want)) <= 1e-4 * max(1.0, abs(float(want)))   # as the GPU test of
    for a, b in zip(got_g, want_g):                                              # test_linear_grpo_loss
        assert rel_err(a.cpu(), b) < 5e-4
