"""Worker for tests/trainer/test_fsdp2_processes.py, started by
``torchrun --nproc_per_node 2 fsdp2_worker.py CKPT SFT_DATA RL_DATA OUT``.

Every rank takes its own SFT record and its own GRPO micro-batch; the same tiny model is run
under DDP and under FSDP2 (trainer/model/fsdp.py) and rank 0 writes OUT/result.json:

    sft_grad_diff / grpo_grad_diff  max |FSDP2 gradient (gathered) - DDP gradient| over every
                                    parameter, and the largest DDP gradient entry for scale
    head_grad_diff                  the same for lm_head.weight (the fused head) alone
    gathered_head_diff              the head read OUTSIDE a forward (lm_head.gathered_head on
                                    the DTensor) vs the mean over ranks of the plain gradient
    shard_files                     the .distcp files a DCP save of both ranks wrote
    roundtrip_diff                  the trained parameters after a DCP save + load into a fresh
                                    sharded model
Both ranks save OUT/full_rank{r}.pt: the trained parameters gathered after one AdamW step (for
the 1-process reload in the test).
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from stepgrpo_fast.data.prompts import encode_prompts, encode_sft
from stepgrpo_fast.data.records import load_records
from stepgrpo_fast.lm_head import gathered_head, head_logprobs
from stepgrpo_fast.trainer.model import fsdp, sharded_checkpoint
from stepgrpo_fast.trainer.model.loading import load_model_and_processor, resolve_precision
from stepgrpo_fast.trainer.model.objective import PolicyObjective, build_policy_batch

torch.set_num_threads(1)
ckpt, sft_data, rl_data, out = sys.argv[1:5]
out = Path(out)
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
cpu = torch.device("cpu")
precision = resolve_precision("float32", cpu)


def load():
    model, processor = load_model_and_processor(ckpt, torch_dtype=torch.float32, device=cpu,
                                                attn_implementation="sdpa", min_pixels=3136,
                                                max_pixels=12544)
    for p in model.model.visual.parameters():  # freeze_vision, as the tiny configs
        p.requires_grad_(False)
    return model.train(), processor


ddp_model, processor = load()
ddp = DistributedDataParallel(PolicyObjective(ddp_model, precision=precision, beta=0.0))
sharded_model, _ = load()
sharded = fsdp.shard(PolicyObjective(sharded_model, precision=precision, beta=0.0), sharded_model,
                     device=cpu)

sft_inputs = encode_sft(processor, [load_records(sft_data, require_response=True)[rank]])
record = load_records(rl_data, require_response=False)[rank]
prompt = encode_prompts(processor, [record, record])  # 2 rows: the same prompt twice
generator = torch.Generator().manual_seed(rank)
texts = [f"### Step 1: {rank} + 2 = {rank + 2}", "### The final answer is: 7"]
completion = processor.tokenizer(texts, padding=True, return_tensors="pt").input_ids  # [2, C]
grpo_batch = build_policy_batch(prompt, completion, torch.ones_like(completion),
                                torch.tensor([1.0, -1.0]))


def grads(objective):
    found = {}
    for name, p in objective.named_parameters():
        if p.grad is not None:
            g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
            found[name.removeprefix("module.")] = g.detach().clone()
            p.grad = None
    return found


def compare(run):
    run(ddp)
    run(sharded)
    a, b = grads(ddp), grads(sharded)
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    head = "model.lm_head.weight"
    return {"max_diff": max((a[k] - b[k]).abs().max().item() for k in a),
            "scale": max(a[k].abs().max().item() for k in a),
            "head_diff": (a[head] - b[head]).abs().max().item(),
            "head_scale": a[head].abs().max().item(), "params": len(a)}


result = {
    "sft": compare(lambda m: m(sft_inputs=sft_inputs, sft=True)[0].backward()),
    "grpo": compare(lambda m: m(grpo_batch)[0].backward()),
}

# the head read outside the objective's forward: a DTensor, gathered by lm_head.gathered_head
hidden = torch.randn(5, sharded_model.lm_head.weight.shape[1], generator=generator)
targets = torch.randint(0, sharded_model.lm_head.weight.shape[0], (5,), generator=generator)
with gathered_head(sharded_model.lm_head.weight, None) as (weight, bias, regather):
    logp, _ = head_logprobs(hidden, weight, bias, targets, temperature=1.0, regather=regather)
(-logp.mean()).backward()
plain = ddp_model.lm_head.weight.detach().clone().requires_grad_()
logp, _ = head_logprobs(hidden, plain, None, targets, temperature=1.0)
(-logp.mean()).backward()
mean_grad = plain.grad.clone()
dist.all_reduce(mean_grad)
mean_grad /= world
result["gathered_head_diff"] = (
    sharded_model.lm_head.weight.grad.full_tensor() - mean_grad
).abs().max().item()
result["gathered_head_scale"] = mean_grad.abs().max().item()
sharded_model.lm_head.weight.grad = None

# one AdamW step on the shards, then a DCP save by both ranks and a load into a fresh model
optimizer = torch.optim.AdamW([p for p in sharded.parameters() if p.requires_grad], lr=1e-2)
sharded(sft_inputs=sft_inputs, sft=True)[0].backward()
optimizer.step()
sharded_checkpoint.write_shards(out / "ckpt", sharded, optimizer)
trained = {k: v.detach().clone() for k, v in sharded_checkpoint.gathered_state(sharded, trained_only=True).items()}
if rank == 0:
    torch.save(trained, out / "trained.pt")
fresh_model, _ = load()
fresh = fsdp.shard(PolicyObjective(fresh_model, precision=precision, beta=0.0), fresh_model,
                   device=cpu)
fresh_optimizer = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad], lr=1e-2)
sharded_checkpoint.read_shards(out / "ckpt", fresh, fresh_optimizer)
reloaded = sharded_checkpoint.gathered_state(fresh, trained_only=True)
if rank == 0:
    result["roundtrip_diff"] = max((reloaded[k] - trained[k]).abs().max().item() for k in trained)
    result["shard_files"] = sorted(p.name for p in (out / "ckpt" / "fsdp_shards").glob("*.distcp"))
    result["exp_avg_steps"] = len(fresh_optimizer.state)
    (out / "result.json").write_text(json.dumps(result, indent=2))
dist.barrier()
dist.destroy_process_group()
