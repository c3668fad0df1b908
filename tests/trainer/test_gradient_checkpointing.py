"""gradient_checkpointing: really on when asked, and the update is the one without it.

"On" is observed, not read from the config: the trained model reports it, and the MLP of every
text decoder layer runs again inside ``accelerator.backward`` (recomputed) with it, never
without it. Counted with forward hooks on the MLPs (inside the checkpointed layer forward; hooks
on the layer itself stay outside it). The weights after the step equal the run without
checkpointing (fp32 on the CPU: the recomputation repeats the same arithmetic). StepGRPO runs
with share_prompt off in both: with checkpointing it falls back to the repeated prompt layout,
whose (equal up to rounding) sums would otherwise be compared with the shared one's."""

import pytest
import torch
from safetensors.torch import load_file

from stepgrpo_fast.trainer import sft_loop
from stepgrpo_fast.trainer.config import SFTConfig
from stepgrpo_fast.trainer.rl import grpo_loop

DIGIT_REWARD = "test_stepgrpo:digit_share"


def _count_layer_calls(module, monkeypatch, seen: dict):
    """Wrap ``module.start_run``: hook the MLP of every text decoder layer of the run's model;
    seen gets the model and {layer name: MLP calls inside accelerator.backward}."""
    real = module.start_run

    def start_run(*args, **kwargs):
        run = real(*args, **kwargs)
        model = run.accelerator.unwrap_model(run.objective).model
        calls, backward, in_backward = {}, run.accelerator.backward, [False]

        def counting_backward(*args, **kwargs):
            in_backward[0] = True
            try:
                return backward(*args, **kwargs)
            finally:
                in_backward[0] = False

        run.accelerator.backward = counting_backward
        for name, layer in model.named_modules():
            if type(layer).__name__.endswith("DecoderLayer"):
                calls[name] = 0

                def hook(mod, args, name=name):
                    if in_backward[0]:
                        calls[name] += 1

                layer.mlp.register_forward_pre_hook(hook)
        assert calls, "no decoder layers found"
        seen.update(model=model, calls=calls)
        return run

    monkeypatch.setattr(module, "start_run", start_run)


def _run(kind, tiny_ckpt, synthetic_data, tiny_rl_config, out, checkpointing, fsdp=""):
    common = dict(gradient_checkpointing=checkpointing, max_steps=1, save_steps=0, fsdp=fsdp)
    if kind == "sft":
        return sft_loop.run_sft(SFTConfig(
            model_name_or_path=str(tiny_ckpt), train_data=str(synthetic_data["sft"]),
            output_dir=str(out), per_device_batch_size=2, learning_rate=1e-3,
            progress_bar=False, seed=0, **common,
        ))
    return grpo_loop.run_stepgrpo(tiny_rl_config(
        out, max_new_tokens=8, learning_rate=1e-3, extra_reward_funcs=[DIGIT_REWARD],
        extra_reward_weights=[1.0], share_prompt=False, **common,
    ))


@pytest.fixture
def no_process_group_left():
    yield
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("fsdp", ["", "full_shard"])
@pytest.mark.parametrize("kind", ["sft", "stepgrpo"])
def test_checkpointing_recomputes_and_leaves_the_update_unchanged(
    kind, fsdp, tiny_ckpt, synthetic_data, tiny_rl_config, tmp_path, monkeypatch,
    no_process_group_left
):
    """Also under FSDP2 (a world of one: trainer/model/fsdp.py makes the process group), where
    the recomputed layer forward must gather its shards again inside backward."""
    module = sft_loop if kind == "sft" else grpo_loop
    start = load_file(tiny_ckpt / "model.safetensors")
    weights, calls = {}, {}
    for checkpointing in (False, True):
        seen = {}
        _count_layer_calls(module, monkeypatch, seen)
        summary = _run(kind, tiny_ckpt, synthetic_data, tiny_rl_config,
                       tmp_path / str(checkpointing), checkpointing, fsdp)
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        model = seen["model"]
        on = getattr(model, "is_activation_checkpointing", None)
        assert (model.is_gradient_checkpointing if on is None else on) is checkpointing
        if fsdp:   # the run really sharded: every decoder layer is an FSDP2 module
            from torch.distributed.fsdp import FSDPModule

            assert all(isinstance(m, FSDPModule) for m in model.modules()
                       if type(m).__name__.endswith("DecoderLayer"))
        calls[checkpointing] = set(seen["calls"].values())
        weights[checkpointing] = load_file(f"{summary['final_model']}/model.safetensors")
    # one micro-batch, one iteration: every layer recomputed once in backward, only when asked
    assert calls == {False: {0}, True: {1}}
    a, b = weights[False], weights[True]
    assert any(not torch.equal(a[k], start[k]) for k in a)  # the step trained
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-7, f"with vs without gradient checkpointing: {worst}"
