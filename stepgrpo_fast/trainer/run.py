"""The run lifecycle both loops share: start (model, optimizer, schedule, data order, resume),
the per-step data slice, the optimizer step, checkpoints, the final model and evaluation.
Loading the policy itself (full or LoRA, dtypes) is run_model.py's.

``start_run`` returns a :class:`Run`; the loops (sft_loop.py, grpo_loop.py) only iterate its
steps. Data order: epoch e visits the records in ``randperm(len, seed + e)``; step s takes the
next ``B x processes x gradient_accumulation_steps`` of them, so a checkpoint's data cursor is
just its step.
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from stepgrpo_fast.trainer import checkpoint as ckpt
from stepgrpo_fast.trainer import preemption
from stepgrpo_fast.trainer.config import TrainConfigBase
from stepgrpo_fast.data.records import load_records
from stepgrpo_fast.trainer.evaluate import evaluate_run
from stepgrpo_fast.trainer.logging import RunLogger
from stepgrpo_fast.trainer.model.loading import resolve_precision
from stepgrpo_fast.trainer.model import fsdp, sharded_checkpoint as sharded
from stepgrpo_fast.trainer.model.objective import PolicyObjective

# the policy's loading and weight writing live in run_model.py; re-exported for existing callers
from stepgrpo_fast.trainer.model.export import save_weights_as
from stepgrpo_fast.trainer.model.policy_loading import load_kwargs, load_policy

__all__ = ["FINAL_MODEL_DIR", "Run", "epoch_order", "load_kwargs", "load_policy",
           "optimizer_step", "refuse_deepspeed", "resolve_resume", "save_weights_as", "start_run",
           "to_device"]

FINAL_MODEL_DIR = "final_model"


@dataclass
class Run:
    config: TrainConfigBase
    accelerator: Any
    processor: Any
    objective: Any
    optimizer: Any
    scheduler: Any
    records: list
    per_process_batch: int
    global_batch: int
    steps_per_epoch: int
    total_steps: int
    start_step: int
    logger: RunLogger
    precision: Any = None  # modeling.Precision: weight / compute dtypes, autocast
    grad_scaler: Any = None  # torch.amp.GradScaler for fp16 compute, else None
    last_metrics: dict | None = None
    last_saved: Path | None = None
    control: Any = None  # preemption.StopControl: signals, timed saves, agreement of ranks
    step_rng: tuple[int, dict] | None = None  # (step, RNG state when that step began)

    def scaled(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to backpropagate: times the fp16 loss scale when there is one."""
        return loss if self.grad_scaler is None else self.grad_scaler.scale(loss)

    # -- data -----------------------------------------------------------------------
    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    def slice(self, step: int, micro: int) -> tuple[list, list[int]]:
        """This process's B records of micro-batch ``micro`` of ``step`` and their positions
        in the step's global batch."""
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        order = epoch_order(len(self.records), self.config.seed, epoch)
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        first = (micro * world + rank) * self.per_process_batch
        positions = list(range(first, first + self.per_process_batch))
        base = in_epoch * self.global_batch
        return [self.records[order[base + p]] for p in positions], positions

    # -- per step -------------------------------------------------------------------
    def after_step(self, step: int, metrics: dict[str, float]) -> None:
        self.last_metrics = metrics
        if step % self.config.logging_steps == 0 or step == self.total_steps:
            self.logger.log(step, metrics)
        self.logger.advance()
        save_every = self.config.save_steps
        agreed = self.control.agree()  # every rank, after every optimizer step
        if agreed.failed:
            self.control.raise_failures(None)
        if (
            (save_every and step % save_every == 0)
            or step == self.total_steps
            or agreed.save_due
            or agreed.signum
        ):
            self.save(step)
        if agreed.signum:
            self._preempted(step, agreed.signum)
        self.control.phase = "local"

    def stop_point(self, step: int, next_phase: str = "local") -> None:
        """Called by every rank before each rollout and before the update of ``step`` (steps
        done so far): on an agreed signal the step's work is abandoned (no weight has moved),
        the checkpoint of ``step`` is written and :class:`preemption.Preempted` raised.
        next_phase "local": no collective runs until the next stop point."""
        if self.step_rng is None or self.step_rng[0] != step:
            self.step_rng = (step, ckpt.capture_rng_state())
        agreed = self.control.agree()
        if agreed.failed:
            self.control.raise_failures(None)
        if agreed.signum:
            ckpt.restore_rng_state(self.step_rng[1])  # as the step found it: exact resume
            saved = self.last_saved is not None and self.last_saved.name == f"{ckpt.PREFIX}{step}"
            if step > 0 and not saved:
                self.save(step)
            self._preempted(step, agreed.signum)
        self.control.phase = next_phase

    def _preempted(self, step: int, signum: int) -> None:
        """Close the logs, print the one line, raise Preempted (exit status 128 + signum)."""
        self.logger.close()  # still under our handlers: a launcher's follow-up SIGTERM waits
        self.control.restore()
        checkpoint = self.last_saved if step > 0 else None
        where = f"{checkpoint} holds step {step}" if checkpoint else "no step had completed"
        exc = preemption.Preempted(signum, step, checkpoint)
        preemption.announce(
            f"{exc.signal_name} received: stopped after step {step}/{self.total_steps}; {where}; "
            f"continue with --resume; exit status {exc.code}",
            enabled=self.accelerator.is_main_process,
        )
        raise exc

    def save(self, step: int) -> Path:
        acc = self.accelerator
        model = acc.unwrap_model(self.objective).model

        def save_model(directory: Path) -> None:
            if self.precision.mixed and not self.config.use_peft:
                # fp32 masters, the frozen layers held in the compute dtype upcast (exactly)
                save_weights_as(model, directory, self.precision.weight_dtype)
            else:
                model.save_pretrained(directory)
            self.processor.save_pretrained(directory)

        save_model, write_shards = sharded.run_writers(self, save_model)  # fsdp: DCP shards
        self.last_saved = ckpt.save_checkpoint(
            self.config.output_dir,
            step,
            save_model=save_model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            grad_scaler=self.grad_scaler,
            config_yaml=yaml.safe_dump(self.config.to_dict(), sort_keys=False),
            trainer_state={
                "epoch": self.epoch_of(step),
                "global_batch": self.global_batch,
                "samples_seen": step * self.global_batch,
                "total_steps": self.total_steps,
                "num_processes": acc.num_processes,
                "kind": self.config.KIND,
                # an adapter checkpoint resumes only on the base it was trained on
                "base_model": self.config.model_name_or_path if self.config.use_peft else None,
            },
            keep_last=self.config.save_total_limit,
            rank=acc.process_index,
            is_main=acc.is_main_process,
            barrier=acc.wait_for_everyone,
            write_shards=write_shards,
        )
        self.control.saved()
        return self.last_saved

    def finish(self) -> dict[str, Any]:
        acc = self.accelerator
        self.control.restore()  # a signal from here on ends the process the usual way
        self.control.phase = "collective"
        final_dir = Path(self.config.output_dir) / FINAL_MODEL_DIR
        gathered = sharded.final_weights(self)  # fsdp: the full weights (collective), else None
        if acc.is_main_process and self.last_saved is not None:
            # weights + processor only, ready for the next stage or `stepgrpo eval`
            tmp = final_dir.with_name(final_dir.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            skip = ["optimizer.pt", "scheduler.pt", "rng_state_*", ckpt.MANIFEST, ckpt.GRAD_SCALER,
                    sharded.DCP_DIR]
            # the checkpoint holds fp32 masters: rewrite the weights (a LoRA adapter stays fp32,
            # as PEFT keeps it next to a bf16 base)
            rewrite = (self.precision.mixed or gathered is not None) and not self.config.use_peft
            if rewrite:
                skip += ["*.safetensors", "*.safetensors.index.json", "config.json"]
            shutil.copytree(self.last_saved, tmp, ignore=shutil.ignore_patterns(*skip))
            if rewrite:
                model = acc.unwrap_model(self.objective).model
                save_weights_as(model, tmp, self.precision.compute_dtype, state_dict=gathered)
            shutil.rmtree(final_dir, ignore_errors=True)
            tmp.rename(final_dir)
        cfg = self.config
        with fsdp.unsharded(self.objective):  # fsdp: every rank gathers the weights for generate
            eval_result = self.evaluate() if cfg.eval_data and cfg.eval_at_end else None  # all ranks
        acc.wait_for_everyone()
        curve = self.logger.close()
        return {
            "output_dir": self.config.output_dir,
            "steps": self.total_steps,
            "start_step": self.start_step,
            "final_model": str(final_dir),
            "last_checkpoint": str(self.last_saved) if self.last_saved else None,
            "metrics": self.last_metrics,
            "eval": eval_result,
            "curve": str(curve) if curve else None,
        }

    def evaluate(self) -> dict[str, float] | None:
        """Greedy evaluation of the final policy on eval_data: every rank generates its share,
        the results are gathered (evaluate.evaluate_run; eval_results.json)."""
        return evaluate_run(self)


def start_run(
    config: TrainConfigBase,
    records: list,
    *,
    objective_kwargs: dict[str, Any],
    bar_keys: Sequence[str],
    curve_keys: Sequence[str],
    resume: bool | str | None,
) -> Run:
    """Accelerator, model, optimizer, schedule, resume state and logger for either loop."""
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, set_seed
    from transformers import get_scheduler

    refuse_deepspeed(None)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # CPU: MULTI_CPU over gloo
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        # every collective of the run gives up after ddp_timeout (HF TrainingArguments' name)
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=config.ddp_timeout))],
    )
    refuse_deepspeed(accelerator)  # (a CPU Accelerator would silently run a ZeRO config as DDP)
    set_seed(config.seed)
    if not config.model_name_or_path:
        raise ValueError("model_name_or_path is not set")
    precision = resolve_precision(
        config.dtype, accelerator.device, low_precision_weights=config.low_precision_weights
    )
    if config.low_precision_weights and precision.weight_dtype != torch.float32:
        warnings.warn(
            f"low_precision_weights: weights and AdamW state are held in {precision.weight_dtype} "
            "without fp32 masters; AdamW updates smaller than that dtype's spacing round to zero "
            "(bf16 near 0.02: ~1e-4, vs learning_rate "
            f"{config.learning_rate:g}), so training may barely move the weights",
            stacklevel=2,
        )
    if config.eval_data:

        load_records(config.eval_data, column_map=config.column_map,  # a bad eval file must
                     min_pixels=config.min_pixels, max_pixels=config.max_pixels)  # fail now
    world = accelerator.num_processes
    per_process_batch = config.per_device_batch_size
    global_batch = per_process_batch * world * config.gradient_accumulation_steps
    steps_per_epoch = len(records) // global_batch
    if steps_per_epoch < 1:
        raise ValueError(
            f"{config.train_data} has {len(records)} records, fewer than one global batch "
            f"(per_device_batch_size {per_process_batch} x {world} processes x "
            f"gradient_accumulation_steps {config.gradient_accumulation_steps} = {global_batch})"
        )
    total_steps = (
        config.max_steps if config.max_steps > 0 else math.ceil(config.num_epochs * steps_per_epoch)
    )

    # where to start: a verified checkpoint or the configured model
    resume_from = resolve_resume(config, resume, accelerator)
    model, processor = load_policy(config, resume_from, accelerator.device, precision)

    objective = PolicyObjective(model, impl=config.impl, precision=precision, **objective_kwargs)
    fsdp.shard_policy(objective, config, precision, accelerator)  # fsdp: full_shard, else no-op
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        weight_decay=config.weight_decay,
    )
    updates = total_steps * getattr(config, "num_iterations", 1)
    scheduler = get_scheduler(
        config.lr_scheduler_type,
        optimizer,
        num_warmup_steps=int(round(config.warmup_ratio * updates)),
        num_training_steps=updates,
    )
    objective, optimizer = fsdp.prepare(accelerator, objective, optimizer, config)
    grad_scaler = (
        torch.amp.GradScaler(accelerator.device.type) if precision.needs_grad_scaler else None
    )

    start_step = 0
    if resume_from is not None:
        state = ckpt.load_checkpoint_state(
            resume_from,
            optimizer=optimizer,
            scheduler=scheduler,
            grad_scaler=grad_scaler,
            rank=accelerator.process_index,
            # a multi-process CPU Accelerator's device is "cpu:<rank>", which torch.load
            # cannot map storages to; the CPU has one memory
            map_location="cpu" if accelerator.device.type == "cpu" else accelerator.device,
            read_shards=sharded.run_reader(config, objective, optimizer),
        )
        if state.get("global_batch") != global_batch:
            raise ValueError(
                f"cannot resume {resume_from}: it was trained with a global batch of "
                f"{state.get('global_batch')}, this run has {global_batch}"
            )
        start_step = int(state["step"])
    if accelerator.is_main_process:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        config.to_yaml(Path(config.output_dir) / "config.yaml")
    logger = RunLogger(
        config.output_dir,
        enabled=accelerator.is_main_process,
        total_steps=total_steps,
        start_step=start_step,
        resume=resume_from is not None,
        report_to=config.report_to,
        run_name=config.run_name,
        config=config.to_dict(),
        progress_bar=config.progress_bar,
        bar_keys=tuple(bar_keys),
        curve_keys=tuple(curve_keys),
    )
    control = preemption.StopControl(
        config.save_on_signals,
        save_minutes=config.save_minutes,
        num_processes=accelerator.num_processes,
        device=accelerator.device,
    )
    accelerator.wait_for_everyone()
    preemption.activate(control).phase = "local"  # no collective until the loop's first stop point
    return Run(
        config,
        accelerator,
        processor,
        objective,
        optimizer,
        scheduler,
        records,
        per_process_batch,
        global_batch,
        steps_per_epoch,
        total_steps,
        start_step,
        logger,
        precision=precision,
        grad_scaler=grad_scaler,
        last_saved=resume_from,
        control=control,
    )


def refuse_deepspeed(accelerator: Any = None) -> None:
    """The native trainer runs on one process or DDP (``accelerate launch``, NCCL / gloo);
    DeepSpeed ZeRO-2/3 (``accelerate launch`` with a DeepSpeed config sets
    ACCELERATE_USE_DEEPSPEED, or an Accelerator of type DEEPSPEED) is refused with a ValueError."""
    from accelerate.utils import DistributedType

    from_env = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true", "yes")
    from_accelerator = (
        accelerator is not None and accelerator.distributed_type == DistributedType.DEEPSPEED
    )
    if from_env or from_accelerator:
        raise ValueError(
            "the native trainer (stepgrpo sft / train) does not support DeepSpeed ZeRO-2/3: its "
            "checkpoints save the optimizer state of process 0 only (a ZeRO shard), so a resume "
            "would load one shard on every process, and the fused log-prob ops read lm_head.weight "
            "directly (a ZeRO-3 partition is empty). Launch with a DDP config instead, e.g. "
            "accelerate launch --config_file stepgrpo_fast/configs/accelerate/ddp.yaml, with "
            "train_only / gradient_checkpointing to fit memory; or use the TRL adapter "
            "(stepgrpo_fast.integrations.trl.StepGRPOTrainer), which gathers a ZeRO-3 head"
        )


def resolve_resume(
    config: TrainConfigBase, resume: bool | str | None, accelerator: Any
) -> Path | None:
    """resume=True: latest verified checkpoint in output_dir (None when there is none);
    resume=PATH: that checkpoint; falsy: fresh start (refused over existing checkpoints)."""
    out = Path(config.output_dir)
    if isinstance(resume, (str, Path)) and str(resume) not in ("", "latest"):
        path = Path(resume)
        ckpt.verify_checkpoint(path)
        return path
    if resume:
        found = ckpt.find_resume_checkpoint(out)
        if found is None and accelerator.is_main_process:
            print(
                f"[stepgrpo] --resume: no checkpoint in {out}, "
                f"starting from {config.model_name_or_path}"
            )
        return found
    if ckpt.list_checkpoints(out):
        raise ValueError(
            f"{out} already holds checkpoints ({ckpt.list_checkpoints(out)[-1].name}); "
            "pass --resume to continue, or choose another output_dir"
        )
    return None


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(n, generator=generator).tolist()


def to_device(inputs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def optimizer_step(run: Run, max_grad_norm: float) -> float:
    """Clip + step + schedule + zero on the last micro-batch of an accumulation window (inside
    ``accelerator.accumulate``); returns the pre-clip grad norm there, nan elsewhere."""
    acc = run.accelerator
    if not acc.sync_gradients:
        return float("nan")
    params = [p for p in run.objective.parameters() if p.requires_grad]
    if run.grad_scaler is not None:
        run.grad_scaler.unscale_(run.optimizer)  # clip the true gradients
    clip = fsdp.clip_grad_norm_ if run.config.fsdp else acc.clip_grad_norm_  # DTensor grads
    norm = clip(params, max_grad_norm if max_grad_norm > 0 else float("inf"))
    if run.grad_scaler is not None:
        run.grad_scaler.step(run.optimizer)  # skipped when the fp16 gradients overflowed
        run.grad_scaler.update()
    else:
        run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return float(norm) if norm is not None else float("nan")  # DeepSpeed clips inside its engine
