"""PyTorch FSDP2 (``torch.distributed.fsdp.fully_shard``) for the native trainer.

Config ``fsdp: "full_shard"`` (HF TrainingArguments' spelling; ``"full_shard offload"`` adds CPU
offload of the sharded parameters, gradients and AdamW state):

    every decoder layer and vision block (the model's ``_no_split_modules``)   fully_shard(unit)
    then the PolicyObjective around the model (embeddings, final norm, lm_head, vision merger)
                                                                              fully_shard(root)

Parameters become DTensors sharded on dim 0 over all processes; AdamW runs on the shards (fp32
masters unless low_precision_weights). Under mixed precision the units all-gather and compute in
the compute dtype (MixedPrecisionPolicy(param_dtype=bf16/fp16, reduce_dtype=fp32)) while the
forward keeps today's autocast: matmuls see the same bf16 operands as with fp32 weights cast by
autocast, the residual stream stays fp32 (the root group - embeddings, the final norm, the head
- is gathered in fp32 and the fused head casts its operands as without FSDP), gradients are
reduce-scattered in fp32. The one difference from the DDP path: a decoder layer's norm weights are
rounded to the compute dtype for the forward.

The LM head is a root parameter: the root's forward gathers it once, the fused op reads the whole
weight (never [N, V] logits), and FSDP reduce-scatters its gradient after the backward. Only one
unit is unsharded at a time in training (reshard_after_forward), the root stays gathered from the
forward to the backward.

Outside the objective's forward:
    with unsharded(objective): generate(...)        rollouts / evaluation: every unit gathered
                                                    ONCE for the whole generate call, not per token
    with root_gathered(root): score(...)            reference / old log-probs: the root group
                                                    gathered, the units one at a time as in training
Both are no-ops on a model that is not sharded (DDP, one process).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from stepgrpo_fast.lm_head import unwrap_model

FSDP_CHOICES = ("", "full_shard", "full_shard offload")


def parse_fsdp(value: str) -> tuple[bool, bool]:
    """``fsdp`` option -> (shard, offload). ValueError naming the option for anything else."""
    words = str(value or "").split()
    if words in ([], ["full_shard"], ["full_shard", "offload"]):
        return bool(words), "offload" in words
    raise ValueError(
        f"fsdp: {value!r} is not supported; use \"\" (DDP / one process), \"full_shard\" or "
        "\"full_shard offload\" (HF TrainingArguments' spelling; shard_grad_op / hybrid_shard are "
        "not implemented by the native trainer)"
    )


def ensure_process_group(device: torch.device) -> None:
    """fully_shard needs a process group: one process not started by a launcher gets a
    world-of-one group (an in-memory store, no port)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def _mesh(device: torch.device):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device.type, (dist.get_world_size(),))


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules each wrapped on their own: those whose class is in the HF model's
    ``_no_split_modules`` (Qwen2-VL: Qwen2VLDecoderLayer, Qwen2VLVisionBlock), outermost first."""
    names = set(getattr(unwrap_model(model), "_no_split_modules", None) or ())
    # (the class itself or, once sharded, the FSDP<class> subclass fully_shard makes of it)
    units = [m for m in model.modules() if any(c.__name__ in names for c in type(m).__mro__)]
    if not units:
        raise ValueError(
            f"fsdp: {type(unwrap_model(model)).__name__} names no decoder layer / vision block "
            "class in _no_split_modules, so there is nothing to shard layer by layer"
        )
    return units


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def shard(
    root: nn.Module,
    model: nn.Module,
    *,
    device: torch.device,
    compute_dtype: torch.dtype | None = None,
    offload: bool = False,
) -> nn.Module:
    """fully_shard every unit of ``model`` (a submodule of ``root``, or root itself), then root.

    compute_dtype: under mixed precision, the dtype the units all-gather and compute in (None:
    their own dtype). The root group is gathered in its own dtype. Returns ``root``, initialised
    as the FSDP root (so a rollout may run before the first training forward).
    """
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy
    from torch.distributed.fsdp import fully_shard

    ensure_process_group(device)
    mesh = _mesh(device)
    offload_policy = CPUOffloadPolicy(pin_memory=device.type == "cuda") if offload else OffloadPolicy()
    reduce = torch.float32 if compute_dtype is not None else None
    unit_mp = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=reduce,
                                   cast_forward_inputs=False)
    root_mp = MixedPrecisionPolicy(reduce_dtype=reduce, cast_forward_inputs=False)
    for unit in shard_units(model):
        fully_shard(unit, mesh=mesh, mp_policy=unit_mp, offload_policy=offload_policy)
    fully_shard(root, mesh=mesh, mp_policy=root_mp, offload_policy=offload_policy)
    # the root is the first module to run forward in FSDP's eyes: a rollout (a unit's forward
    # before any root forward) would otherwise make that unit a root of its own
    root._get_fsdp_state()._lazy_init()
    return root


def _fsdp_modules(root: nn.Module) -> list[nn.Module]:
    return [m for m in root.modules() if is_sharded(m)]


@contextlib.contextmanager
def unsharded(root: nn.Module) -> Iterator[None]:
    """Every FSDP group under ``root`` gathered for the block and kept gathered across forwards
    (one all-gather per group for a whole ``generate``), resharded after. Every process must
    enter (the all-gathers are collective); a no-op when ``root`` is not sharded."""
    if not is_sharded(root):
        yield
        return
    modules = _fsdp_modules(root)
    root.set_reshard_after_forward(False)  # recursive: no unit frees its weights per token
    for module in modules:
        module.unshard()
    try:
        yield
    finally:
        for module in modules:
            module.reshard()
        root.set_reshard_after_forward(True)  # FSDP's defaults: units reshard, the root does not
        root.set_reshard_after_forward(False, recurse=False)


@contextlib.contextmanager
def root_gathered(root: nn.Module) -> Iterator[None]:
    """The root group of ``root`` gathered for a forward that does not go through root.forward
    (``completion_logprobs(model, ...)``); the units gather one at a time in their own forward.
    A no-op when ``root`` is not sharded."""
    if not is_sharded(root):
        yield
        return
    root.unshard()
    try:
        yield
    finally:
        root.reshard()


def clip_grad_norm_(params: list[nn.Parameter], max_norm: float) -> float:
    """torch's clip over DTensor gradients: the global norm (all shards), every shard scaled."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total = torch.nn.utils.get_total_norm(grads, 2.0)
    if hasattr(total, "full_tensor"):
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return float(total)


# ------------------------------------------------------------------------------------- bytes
def _local_bytes(tensor: torch.Tensor) -> int:
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def memory_plan(objective: nn.Module, reference: nn.Module | None = None) -> dict[str, int]:
    """Per-rank bytes: params (this rank's shards), grads (fp32 shards of the trained params),
    adamw (exp_avg + exp_avg_sq of them), reference (its shards), largest_unit (one unit
    gathered, the transient peak of the weights on top)."""
    params = list(objective.parameters())
    trained = [p for p in params if p.requires_grad]
    plan = {
        "params": sum(_local_bytes(p) for p in params),
        "grads": sum(_local_bytes(p) for p in trained),
        "adamw": 2 * sum(_local_bytes(p) for p in trained),
        "reference": 0 if reference is None else sum(_local_bytes(p) for p in reference.parameters()),
    }
    units = [m for m in objective.modules() if is_sharded(m) and m is not objective]
    plan["largest_unit"] = max(
        (sum(p.numel() * p.element_size() for p in u.parameters()) for u in units), default=0
    )
    return plan


def memory_line(plan: dict[str, int], world: int, offload: bool) -> str:
    mb = {k: v / 2**20 for k, v in plan.items()}
    where = " (CPU: offloaded)" if offload else ""
    return (
        f"[stepgrpo] fsdp full_shard over {world} process(es), per rank{where}: parameters "
        f"{mb['params']:.1f} MB, gradients {mb['grads']:.1f} MB, AdamW state {mb['adamw']:.1f} MB, "
        f"reference {mb['reference']:.1f} MB; one unit gathered: {mb['largest_unit']:.1f} MB"
    )


def peak_memory_mb(device: torch.device) -> float:
    """The measured peak of this process: CUDA max_memory_allocated, on CPU the peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ------------------------------------------------------------- the run's hooks (trainer/run.py)
def shard_policy(objective: nn.Module, config, precision, accelerator) -> None:
    """fsdp set: shard the objective (units of its model, then itself) and print the per-rank
    byte plan on the main process; no-op otherwise."""
    shard_it, offload = parse_fsdp(config.fsdp)
    if not shard_it:
        return
    compute = precision.compute_dtype if precision.mixed else None
    shard(objective, objective.model, device=accelerator.device, compute_dtype=compute, offload=offload)
    if accelerator.is_main_process:
        print(memory_line(memory_plan(objective), accelerator.num_processes, offload), flush=True)


def shard_reference(reference: nn.Module, config, accelerator) -> None:
    """fsdp set: the frozen reference model sharded like the policy (its own root); no-op otherwise."""
    shard_it, offload = parse_fsdp(config.fsdp)
    if not shard_it:
        return
    shard(reference, reference, device=accelerator.device, offload=offload)
    if accelerator.is_main_process:
        mb = sum(_local_bytes(p) for p in reference.parameters()) / 2**20
        print(f"[stepgrpo] fsdp: reference model {mb:.1f} MB per rank (sharded)", flush=True)


def prepare(accelerator, objective: nn.Module, optimizer, config):
    """accelerator.prepare for both: DDP-wraps the objective without fsdp; under fsdp only the
    optimizer (the sharded objective synchronises its own gradients)."""
    if not parse_fsdp(config.fsdp)[0]:
        return accelerator.prepare(objective, optimizer)
    return objective, accelerator.prepare(optimizer)
