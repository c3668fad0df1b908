"""Atomic checkpoints: manifest + checksums, keep-last-K, RNG round trip, corrupt detection."""

import json
import random

import numpy as np
import pytest
import torch

from stepgrpo_fast.trainer import checkpoint as ckpt


def _model_and_optim(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def _save(out, step, model, opt, sched, keep_last=0):
    def save_model(directory):
        torch.save(model.state_dict(), directory / "weights.pt")
        (directory / "sub").mkdir()
        (directory / "sub" / "note.txt").write_text(f"step {step}")

    return ckpt.save_checkpoint(
        out,
        step,
        save_model=save_model,
        optimizer=opt,
        scheduler=sched,
        trainer_state={"global_batch": 4},
        config_yaml="seed: 1\n",
        keep_last=keep_last,
    )


def _tree_bytes(path):
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def test_save_writes_manifest_with_checksums(tmp_path):
    model, opt, sched = _model_and_optim()
    path = _save(tmp_path, 3, model, opt, sched)
    assert path == tmp_path / "checkpoint-3" and path.is_dir()
    manifest = ckpt.verify_checkpoint(path)
    assert manifest["step"] == 3
    assert {
        "weights.pt",
        "sub/note.txt",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state_0.pth",
        "trainer_state.json",
        "training_config.yaml",
    } <= set(manifest["files"])
    assert json.loads((path / "trainer_state.json").read_text()) == {"global_batch": 4, "step": 3}
    assert not list(tmp_path.glob(".tmp-*"))  # temp dir renamed away


def test_keep_last_k_deletes_only_older_ones(tmp_path):
    model, opt, sched = _model_and_optim()
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, model, opt, sched, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-3", "checkpoint-4"]
    # 10 sorts after 9 numerically, not as text
    for step in (9, 10):
        _save(tmp_path, step, model, opt, sched, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-9", "checkpoint-10"]


def test_rewriting_the_same_step_replaces_it(tmp_path):
    model, opt, sched = _model_and_optim()
    _save(tmp_path, 2, model, opt, sched)
    with torch.no_grad():
        model.weight.add_(1.0)
    path = _save(tmp_path, 2, model, opt, sched)
    ckpt.verify_checkpoint(path)
    assert torch.equal(torch.load(path / "weights.pt")["weight"], model.weight)


def test_rng_state_round_trip():
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    state = ckpt.capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.random(), np.random.rand(), torch.rand(5)  # move every generator on
    ckpt.restore_rng_state(state)
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_load_restores_optimizer_scheduler_and_rng(tmp_path):
    model, opt, sched = _model_and_optim()
    torch.manual_seed(123)
    path = _save(tmp_path, 5, model, opt, sched)
    after_save = torch.rand(4)
    fresh_model, fresh_opt, fresh_sched = _model_and_optim(seed=7)
    fresh_opt2 = torch.optim.AdamW(fresh_model.parameters(), lr=0.1)
    fresh_sched2 = torch.optim.lr_scheduler.LambdaLR(fresh_opt2, lambda s: 1.0 / (1 + s))
    torch.manual_seed(999)
    state = ckpt.load_checkpoint_state(path, optimizer=fresh_opt2, scheduler=fresh_sched2)
    assert state["step"] == 5 and state["restored_rng"] is True
    assert torch.equal(torch.rand(4), after_save)  # RNG continues where it was saved
    assert fresh_sched2.last_epoch == sched.last_epoch
    saved_state = opt.state_dict()["state"][0]
    loaded_state = fresh_opt2.state_dict()["state"][0]
    assert torch.equal(saved_state["exp_avg"], loaded_state["exp_avg"])
    assert fresh_opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_find_resume_skips_unfinished_temp_dirs(tmp_path):
    assert ckpt.find_resume_checkpoint(tmp_path / "missing") is None
    model, opt, sched = _model_and_optim()
    _save(tmp_path, 1, model, opt, sched)
    # a kill in the middle of saving step 2 leaves only a temp dir without a manifest
    partial = tmp_path / ".tmp-checkpoint-2"
    partial.mkdir()
    (partial / "weights.pt").write_bytes(b"half")
    assert ckpt.find_resume_checkpoint(tmp_path) == tmp_path / "checkpoint-1"
    _save(tmp_path, 3, model, opt, sched)  # the next save cleans it up
    assert not partial.exists()


@pytest.mark.parametrize(
    "damage", ["truncate", "flip", "delete_file", "delete_manifest", "garbage_manifest"]
)
def test_corrupt_latest_checkpoint_is_named_and_previous_untouched(tmp_path, damage):
    model, opt, sched = _model_and_optim()
    good = _save(tmp_path, 1, model, opt, sched)
    bad = _save(tmp_path, 2, model, opt, sched)
    before = _tree_bytes(good)
    target = bad / "weights.pt"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:10])
    elif damage == "flip":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "delete_file":
        target.unlink()
    elif damage == "delete_manifest":
        (bad / "manifest.json").unlink()
    else:
        (bad / "manifest.json").write_text("{not json")
    with pytest.raises(ckpt.CorruptCheckpointError) as info:
        ckpt.find_resume_checkpoint(tmp_path)
    message = str(info.value)
    assert str(bad) in message and "corrupt" in message
    assert str(good) in message and "not touched" in message
    assert _tree_bytes(good) == before
    ckpt.verify_checkpoint(good)


def test_corrupt_only_checkpoint_says_so(tmp_path):
    model, opt, sched = _model_and_optim()
    only = _save(tmp_path, 1, model, opt, sched)
    (only / "optimizer.pt").write_bytes(b"")
    with pytest.raises(ckpt.CorruptCheckpointError, match="No earlier checkpoint"):
        ckpt.find_resume_checkpoint(tmp_path)
    with pytest.raises(ckpt.CorruptCheckpointError, match="optimizer.pt"):
        ckpt.load_checkpoint_state(only, optimizer=opt, scheduler=sched)


def test_checkpoint_step_parsing():
    assert ckpt.checkpoint_step("/x/checkpoint-12") == 12
    with pytest.raises(ValueError, match="not a checkpoint directory"):
        ckpt.checkpoint_step("/x/final_model")
