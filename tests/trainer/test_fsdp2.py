"""FSDP2 (fsdp: full_shard) in this process, on a world of one (trainer/model/fsdp.py makes the
process group): the run and its checkpoints, bf16 mixed precision, rollouts that gather the
weights once, LoRA. The 2-process checks (vs DDP, one shard per rank): test_fsdp2_processes.py."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from stepgrpo_fast.trainer.config import SFTConfig, StepGRPOConfig
from stepgrpo_fast.trainer.model import fsdp
from stepgrpo_fast.trainer.model.loading import load_model_and_processor, resolve_precision
from stepgrpo_fast.trainer.model.objective import PolicyObjective


@pytest.fixture(autouse=True)
def no_process_group_left():
    yield
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _sft(tiny_ckpt, synthetic_data, out, **overrides) -> SFTConfig:
    values = dict(model_name_or_path=str(tiny_ckpt), train_data=str(synthetic_data["sft"]),
                  output_dir=str(out), dtype="float32", attn_implementation="sdpa",
                  max_pixels=12544, learning_rate=1e-3, per_device_batch_size=2, max_steps=2,
                  save_steps=1, save_total_limit=0, progress_bar=False, seed=0)
    return SFTConfig(**{**values, **overrides})


def _model(tiny_ckpt):
    model, processor = load_model_and_processor(str(tiny_ckpt), torch_dtype=torch.float32,
                                                device=torch.device("cpu"),
                                                attn_implementation="sdpa", max_pixels=12544)
    model.model.visual.requires_grad_(False)
    return model.train(), processor


def test_fsdp_option_is_checked():
    assert fsdp.parse_fsdp("") == (False, False)
    assert fsdp.parse_fsdp("full_shard offload") == (True, True)
    with pytest.raises(ValueError, match="fsdp must be one of"):
        StepGRPOConfig(fsdp="shard_grad_op")


def test_sft_under_fsdp_matches_plain_and_resumes_exactly(tmp_path, tiny_ckpt, synthetic_data):
    from stepgrpo_fast.trainer.loop import run_sft

    run_sft(_sft(tiny_ckpt, synthetic_data, tmp_path / "plain"))
    sharded = _sft(tiny_ckpt, synthetic_data, tmp_path / "fsdp", fsdp="full_shard")
    run_sft(sharded)
    plain = load_file(tmp_path / "plain" / "final_model" / "model.safetensors")
    final = load_file(tmp_path / "fsdp" / "final_model" / "model.safetensors")
    assert final.keys() == plain.keys()
    assert all(torch.equal(final[k], plain[k]) for k in plain)  # one process: the same numbers

    checkpoint = tmp_path / "fsdp" / "checkpoint-1"
    assert sorted(p.name for p in (checkpoint / "fsdp_shards").iterdir()) == [".metadata",
                                                                              "__0_0.distcp"]
    assert not (checkpoint / "optimizer.pt").exists()
    assert not (checkpoint / "model.safetensors").exists()  # weights only in the shards

    # resume from checkpoint-1: the same final weights, bit for bit
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    import shutil

    shutil.copytree(checkpoint, resumed / "checkpoint-1")
    torch.distributed.destroy_process_group()
    run_sft(dataclasses.replace(sharded, output_dir=str(resumed)), resume=True)
    again = load_file(resumed / "final_model" / "model.safetensors")
    assert all(torch.equal(again[k], final[k]) for k in final)

    # the other kind of run refuses the checkpoint, naming the option
    with pytest.raises(ValueError, match="without fsdp"):
        run_sft(dataclasses.replace(sharded, fsdp="", output_dir=str(tmp_path / "x")),
                resume=str(checkpoint))
    with pytest.raises(ValueError, match="with fsdp: full_shard"):
        run_sft(dataclasses.replace(sharded, output_dir=str(tmp_path / "y")),
                resume=str(tmp_path / "plain" / "checkpoint-1"))


def test_bf16_mixed_precision_matches_the_autocast_path(tiny_ckpt, synthetic_data):
    from stepgrpo_fast.data.prompts import encode_sft
    from stepgrpo_fast.data.records import load_records

    precision = resolve_precision("bfloat16", torch.device("cpu"))
    (plain_model, processor), (model, _) = _model(tiny_ckpt), _model(tiny_ckpt)
    plain = PolicyObjective(plain_model, precision=precision)
    objective = fsdp.shard(PolicyObjective(model, precision=precision), model,
                           device=torch.device("cpu"), compute_dtype=torch.bfloat16)
    seen = []  # the dtype a decoder layer's weights have inside the forward
    layer = model.model.language_model.layers[0]
    layer.mlp.register_forward_pre_hook(lambda m, a: seen.append(m.up_proj.weight.dtype))
    inputs = encode_sft(processor, load_records(synthetic_data["sft"], require_response=True)[:2])
    loss_plain = plain(sft_inputs=inputs, sft=True)[0]
    loss = objective(sft_inputs=inputs, sft=True)[0]
    loss_plain.backward()
    loss.backward()
    assert seen == [torch.bfloat16]  # MixedPrecisionPolicy: the layer computes in bf16
    assert loss.item() == pytest.approx(loss_plain.item(), rel=2e-3)
    a = {n: p.grad for n, p in plain.named_parameters() if p.grad is not None}
    b = {n: p.grad.full_tensor() for n, p in objective.named_parameters() if p.grad is not None}
    assert a.keys() == b.keys()
    assert all(g.dtype == torch.float32 for g in b.values())  # fp32 masters, fp32 gradients
    flat_a = torch.cat([g.flatten() for g in a.values()])
    flat_b = torch.cat([b[k].flatten() for k in a])
    assert torch.nn.functional.cosine_similarity(flat_a, flat_b, dim=0) >= 0.999
    assert all(p.dtype == torch.float32 for p in objective.parameters() if p.requires_grad)


def test_a_rollout_gathers_each_group_once(tiny_ckpt, synthetic_data):
    from torch.distributed.fsdp._fully_shard._fsdp_param_group import FSDPParamGroup

    from stepgrpo_fast.data.prompts import encode_prompts
    from stepgrpo_fast.data.records import load_records
    from stepgrpo_fast.trainer.rl.rollout import generate_rollouts

    (plain_model, processor), (model, _) = _model(tiny_ckpt), _model(tiny_ckpt)
    objective = fsdp.shard(PolicyObjective(model), model, device=torch.device("cpu"))
    prompts = encode_prompts(processor, load_records(synthetic_data["rl"],
                                                     require_response=False)[:1])
    calls = []
    original = FSDPParamGroup._to_unsharded

    def counted(group):
        calls.append(id(group))
        return original(group)

    def rollout(m):
        return generate_rollouts(m, processor.tokenizer, prompts, num_generations=2,
                                 max_new_tokens=6, row_seeds=[3, 4])

    FSDPParamGroup._to_unsharded = counted
    try:
        with fsdp.unsharded(objective):
            texts = rollout(model).texts
        once = len(calls)
        groups = len(set(calls))
        calls.clear()
        with fsdp.root_gathered(objective):  # the units gather per forward: per decoded token
            rollout(model)
        per_token = len(calls)
    finally:
        FSDPParamGroup._to_unsharded = original
    assert groups == once == 1 + len(fsdp.shard_units(model))  # the root and every unit, once
    assert per_token >= 6 * len(model.model.language_model.layers)  # each decoder layer, per token
    assert texts == rollout(plain_model).texts  # the same sampled completions as unsharded
    assert type(model.lm_head.weight).__name__ == "DTensor"  # sharded again afterwards


def test_lora_under_fsdp_saves_adapters_and_matches_plain(tmp_path, tiny_ckpt, synthetic_data,
                                                          tiny_rl_config):
    from stepgrpo_fast.trainer.loop import run_stepgrpo

    lora = dict(use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, max_steps=2,
                save_steps=1, save_total_limit=0, learning_rate=1e-2, beta=0.04)
    run_stepgrpo(tiny_rl_config(tmp_path / "plain", **lora))
    torch.distributed.is_initialized() and torch.distributed.destroy_process_group()
    run_stepgrpo(tiny_rl_config(tmp_path / "fsdp", fsdp="full_shard", **lora))
    checkpoint = tmp_path / "fsdp" / "checkpoint-1"
    assert (checkpoint / "adapter_model.safetensors").is_file()  # the adapter, as without fsdp
    assert (checkpoint / "fsdp_shards" / "__0_0.distcp").is_file()
    final = tmp_path / "fsdp" / "final_model"
    assert not (final / "fsdp_shards").exists() and not (final / "model.safetensors").exists()
    plain = load_file(tmp_path / "plain" / "final_model" / "adapter_model.safetensors")
    adapter = load_file(final / "adapter_model.safetensors")
    assert adapter.keys() == plain.keys() and len(adapter) > 0
    start = load_file(tmp_path / "fsdp" / "checkpoint-1" / "adapter_model.safetensors")
    assert any(not torch.equal(adapter[k], start[k]) for k in adapter)  # step 2 trained it
    assert max((adapter[k] - plain[k]).abs().max().item() for k in plain) < 1e-6


def test_sft_with_cpu_offload_matches_plain(tmp_path, tiny_ckpt, synthetic_data):
    """fsdp: "full_shard offload" (CPUOffloadPolicy on the sharded parameters, gradients and AdamW
    state) trains to the same weights as the plain run on one process."""
    from stepgrpo_fast.trainer.loop import run_sft

    run_sft(_sft(tiny_ckpt, synthetic_data, tmp_path / "plain", save_steps=0))
    run_sft(_sft(tiny_ckpt, synthetic_data, tmp_path / "offload", save_steps=0,
                 fsdp="full_shard offload"))
    plain = load_file(tmp_path / "plain" / "final_model" / "model.safetensors")
    offload = load_file(tmp_path / "offload" / "final_model" / "model.safetensors")
    assert offload.keys() == plain.keys()
    assert all(torch.equal(offload[k], plain[k]) for k in plain)
    assert any(not torch.equal(plain[k], v) for k, v in
               load_file(tiny_ckpt / "model.safetensors").items() if k in plain)  # it trained
