"""fp16 compute: the GradScaler's loss scale never reaches the clipping or the update.

* the gradients are unscaled before clipping: step 1's logged (pre-clip) grad_norm is the fp32
  run's within 1e-2 (relative), and the first update matches the fp32 one;
* a step whose gradients overflow is skipped (no weight moves, the scale halves) and the next
  one trains;
* the scaler's state (scale, growth tracker) is in the checkpoint and a resumed run continues
  with it: killed-and-resumed ends where the straight run does, scaler included.

An overflow is made by writing inf into one gradient right before the optimizer step of
chosen steps (what an fp16 overflow leaves there)."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from stepgrpo_fast.trainer import sft_loop
from stepgrpo_fast.trainer.checkpoint import GRAD_SCALER
from stepgrpo_fast.trainer.config import SFTConfig

INIT_SCALE = 2.0**16  # torch.amp.GradScaler's default


def _sft(tiny_ckpt, synthetic_data, out, **overrides):
    values = dict(
        model_name_or_path=str(tiny_ckpt), train_data=str(synthetic_data["sft"]),
        output_dir=str(out), per_device_batch_size=2, max_steps=1, learning_rate=1e-3,
        lr_scheduler_type="constant", warmup_ratio=0.0, max_grad_norm=1.0, save_steps=1,
        save_total_limit=0,
        progress_bar=False, seed=0,
    )
    return SFTConfig(**{**values, **overrides})


def _overflow_at(monkeypatch, steps: set[int]):
    """Make the gradients of the given (1-based) steps overflow."""
    real = sft_loop.optimizer_step

    def step(run, max_grad_norm):
        if run.accelerator.sync_gradients and run.scheduler.last_epoch + 1 in steps:
            grad = next(p.grad for p in run.objective.parameters() if p.grad is not None)
            grad.view(-1)[0] = float("inf")
        return real(run, max_grad_norm)

    monkeypatch.setattr(sft_loop, "optimizer_step", step)


def _weights(checkpoint):
    return load_file(f"{checkpoint}/model.safetensors")


def _scaler(checkpoint):
    return torch.load(f"{checkpoint}/{GRAD_SCALER}", weights_only=True)


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_gradients_are_unscaled_before_clipping(tiny_ckpt, synthetic_data, tmp_path):
    start = load_file(tiny_ckpt / "model.safetensors")
    norms, updates = {}, {}
    for dtype in ("float32", "float16"):
        # max_grad_norm below the true norm: clipping is active and must see unscaled gradients
        summary = sft_loop.run_sft(_sft(tiny_ckpt, synthetic_data, tmp_path / dtype, dtype=dtype,
                                        max_grad_norm=0.5))
        norms[dtype] = _rows(tmp_path / dtype)[0]["grad_norm"]
        end = _weights(summary["last_checkpoint"])
        updates[dtype] = torch.cat([(end[k] - start[k]).flatten() for k in start
                                    if end[k].dtype == torch.float32])
    assert norms["float32"] > 0.5  # clipped
    assert norms["float16"] == pytest.approx(norms["float32"], rel=1e-2)
    assert _scaler(tmp_path / "float16" / "checkpoint-1")["scale"] == INIT_SCALE
    # the clipped fp16 update is the fp32 one (a scaled-gradient clip would shrink it ~65536x)
    size = updates["float16"].norm() / updates["float32"].norm()
    assert size == pytest.approx(1.0, rel=0.05)
    cos = torch.nn.functional.cosine_similarity(updates["float16"], updates["float32"], dim=0)
    assert cos > 0.99


def test_overflow_skips_the_step_and_the_scaler_survives_a_resume(
    tiny_ckpt, synthetic_data, tmp_path, monkeypatch
):
    _overflow_at(monkeypatch, {2})
    cfg = dict(dtype="float16", max_steps=4)
    straight = sft_loop.run_sft(_sft(tiny_ckpt, synthetic_data, tmp_path / "straight", **cfg))
    ckpts = [tmp_path / "straight" / f"checkpoint-{s}" for s in range(1, 5)]
    w = [_weights(c) for c in ckpts]
    # step 1 trains, step 2 overflows: nothing moves and the scale halves; step 3 trains again
    assert any(not torch.equal(w[0][k], load_file(tiny_ckpt / "model.safetensors")[k]) for k in w[0])
    assert all(torch.equal(w[0][k], w[1][k]) for k in w[0])
    assert any(not torch.equal(w[1][k], w[2][k]) for k in w[1])
    scales = [_scaler(c)["scale"] for c in ckpts]
    assert scales == [INIT_SCALE, INIT_SCALE / 2, INIT_SCALE / 2, INIT_SCALE / 2]
    rows = _rows(tmp_path / "straight")
    assert not math.isfinite(float(rows[1]["grad_norm"]))  # the overflow is visible
    assert all(math.isfinite(float(r["grad_norm"])) for r in rows[2:])

    # the same run stopped after the overflow and resumed: the halved scale comes back
    split = tmp_path / "split"
    sft_loop.run_sft(_sft(tiny_ckpt, synthetic_data, split, **{**cfg, "max_steps": 2}))
    resumed = sft_loop.run_sft(_sft(tiny_ckpt, synthetic_data, split, **cfg), resume=True)
    assert resumed["start_step"] == 2
    a, b = _scaler(straight["last_checkpoint"]), _scaler(resumed["last_checkpoint"])
    assert a == b
    wa, wb = _weights(straight["last_checkpoint"]), _weights(resumed["last_checkpoint"])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
