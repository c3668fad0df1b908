"""The two training loops: SFT warm-up and StepGRPO online RL (docs/METHOD.md sections 1-4).

Both run unchanged on one process or under ``accelerate launch --num_processes N`` (DDP over
gloo on CPU, NCCL on GPU): every process takes its own slice of each global batch, gradients are
averaged by the DDP wrapper around :class:`PolicyObjective`, and only the main process writes
files.

Shapes: B = per_device_batch_size prompts, M = num_generations, N = B*M completions,
P = prompt length, C = completion length, H = hidden size, V = vocabulary.

Data order: epoch e visits the records in ``randperm(len, seed + e)``; step s of an epoch takes
the next ``B x processes x gradient_accumulation_steps`` of them, so the order depends only on
the seed and the global batch size (not on the number of processes), and the data cursor of a
checkpoint is just its step. Rollout sampling is seeded per completion from (seed, step, position
in the global batch, sample index); a resumed or re-sharded run draws the same completions.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import yaml

from stepgrpo_fast.trainer import checkpoint as ckpt
from stepgrpo_fast.trainer.config import SFTConfig, StepGRPOConfig, TrainConfigBase
from stepgrpo_fast.trainer.logging import RunLogger

FINAL_MODEL_DIR = "final_model"
RL_BAR_KEYS = ("reward", "kl", "step_time")
RL_CURVE_KEYS = ("reward", "reward_accuracy", "reward_validity", "key_step_match")
SFT_BAR_KEYS = ("loss", "step_time")
SFT_CURVE_KEYS = ("loss",)


# ========================================================================================
# SFT warm-up


def run_sft(config: SFTConfig, *, resume: bool | str | None = None) -> dict[str, Any]:
    """Token-level NLL on (image, question, reference reasoning); returns a summary dict."""
    from stepgrpo_fast.trainer.data import encode_sft, load_records

    # 1. every record is validated (image readable, fields present, response given) up front
    records = load_records(config.train_data, require_response=True)
    run = _start_run(
        config,
        records,
        objective_kwargs={},
        bar_keys=SFT_BAR_KEYS,
        curve_keys=SFT_CURVE_KEYS,
        resume=resume,
    )
    acc, device = run.accelerator, run.accelerator.device

    for step in range(run.start_step, run.total_steps):
        t0, lr = time.perf_counter(), run.scheduler.get_last_lr()[0]
        micro_metrics: list[dict[str, float]] = []
        # 2. G micro-batches of B examples on every process; one optimizer step after the last.
        #    The objective is the mean NLL over the label tokens of the whole global batch (all
        #    micro-batches, all processes; HF Trainer's num_items_in_batch), so the update does
        #    not depend on how the batch is split into micro-batches and processes.
        micro_inputs = [  # G x input_ids/labels [B, S]
            _to(
                encode_sft(
                    run.processor, run.slice(step, micro)[0], template=config.prompt_template
                ),
                device,
            )
            for micro in range(config.gradient_accumulation_steps)
        ]
        micro_tokens = [int((x["labels"][:, 1:] != -100).sum()) for x in micro_inputs]
        label_tokens = sum(micro_tokens)  # this process's, for tokens_per_s
        # label tokens of the global batch per (micro-batch x process)
        tokens_per_slice = _sum_across_processes(acc, sum(micro_tokens)) / (
            config.gradient_accumulation_steps * acc.num_processes
        )
        for inputs, tokens in zip(micro_inputs, micro_tokens):
            with acc.accumulate(run.objective):
                loss, metrics = run.objective(
                    sft_inputs=inputs, sft=True
                )  # mean NLL over this micro-batch's label tokens
                # after the 1/G of accumulate and DDP's mean over processes: the gradient of
                # the global token mean (the factor is exactly 1 for G = 1 on one process)
                loss = loss * (tokens / tokens_per_slice)
                acc.backward(run.scaled(loss))  # scaled by 1/G inside (and the fp16 loss scale)
                grad_norm = _optimizer_step(run, config.max_grad_norm)  # no-op until the G-th
            micro_metrics.append({"loss": loss.item()})
        step_time = time.perf_counter() - t0
        logged = _mean_over(micro_metrics)
        logged.update(grad_norm=grad_norm, tokens_per_s=label_tokens / max(step_time, 1e-9))
        logged = _reduce_across_processes(acc, logged)
        logged.update(learning_rate=lr, epoch=run.epoch_of(step + 1), step_time=step_time)
        run.after_step(step + 1, logged)

    return run.finish()


# ========================================================================================
# StepGRPO online RL


def run_stepgrpo(config: StepGRPOConfig, *, resume: bool | str | None = None) -> dict[str, Any]:
    """Online RL with StepRAR + StepRVR rewards and group-relative advantages; returns a summary."""
    from stepgrpo_fast.trainer.data import encode_prompts, load_records
    from stepgrpo_fast.trainer.episodes import (
        build_episodes,
        global_batch_advantages,
        load_extra_rewards,
    )
    from stepgrpo_fast.trainer.modeling import load_model_and_processor
    from stepgrpo_fast.trainer.policy import build_policy_batch, completion_logprobs
    from stepgrpo_fast.trainer.rollout import derive_seed, generate_rollouts

    # 1. every record validated before any model is loaded
    records = load_records(config.train_data, require_response=False)
    if config.repetition_penalty != 1.0:
        warnings.warn(
            f"repetition_penalty={config.repetition_penalty:g}: rollouts are then not sampled from "
            "the policy the loss scores (softmax(logits / temperature)), which biases the policy "
            "gradient; 1.0 turns it off",
            stacklevel=2,
        )
    extra_rewards = load_extra_rewards(config.extra_reward_funcs, config.extra_reward_weights)
    run = _start_run(
        config,
        records,
        bar_keys=RL_BAR_KEYS,
        curve_keys=RL_CURVE_KEYS,
        resume=resume,
        objective_kwargs=dict(
            beta=config.beta,
            epsilon_low=config.epsilon_low,
            epsilon_high=config.epsilon_high,
            temperature=config.temperature,
            loss_type=config.loss_type,
            max_completion_length=config.max_new_tokens,
        ),
    )
    acc, device = run.accelerator, run.accelerator.device
    M, G = config.num_generations, config.gradient_accumulation_steps

    # 2. the reference policy: a frozen copy of the STARTING model (also when resuming)
    ref_model = None
    if config.beta > 0:
        ref_model, _ = load_model_and_processor(  # frozen: held in the compute dtype
            config.model_name_or_path, **_load_kwargs(config, device, run.precision.compute_dtype)
        )
        ref_model.requires_grad_(False).eval()

    policy_model = acc.unwrap_model(run.objective).model
    tokenizer = run.processor.tokenizer
    vision_start = getattr(policy_model.config, "vision_start_token_id", None)

    for step in range(run.start_step, run.total_steps):
        t0, lr = time.perf_counter(), run.scheduler.get_last_lr()[0]
        batches, episode_metrics, micro_episodes = [], [], []
        generated_tokens = 0
        # 3. rollouts: G micro-batches of B prompts x M samples on every process
        for micro in range(G):
            batch_records, positions = run.slice(step, micro)
            prompt_inputs = _to(
                encode_prompts(run.processor, batch_records, template=config.prompt_template),
                device,
            )  # input_ids [B, P]
            seeds = [derive_seed(config.seed, step, pos, j) for pos in positions for j in range(M)]
            with run.precision.autocast():
                rollout = generate_rollouts(  # completion_ids [N, C]
                    policy_model,
                    tokenizer,
                    prompt_inputs,
                    num_generations=M,
                    max_new_tokens=config.max_new_tokens,
                    temperature=config.temperature,
                    top_k=config.top_k,
                    top_p=config.top_p,
                    row_seeds=seeds,
                    vision_start_token_id=vision_start,
                    repetition_penalty=config.repetition_penalty,
                )
            # 4. rewards r = w_acc * StepRAR + w_val * StepRVR  ->  group-relative advantages [N]
            episodes = build_episodes(
                rollout.texts,
                batch_records,
                num_generations=M,
                reward_weights=config.reward_weights,
                mode=config.reward_mode,
                alpha=config.alpha,
                advantage_scale=config.advantage_scale,
                extra_rewards=extra_rewards,
            )
            batch = build_policy_batch(
                rollout.prompt_inputs,
                rollout.completion_ids,
                rollout.completion_mask,
                episodes.advantages.to(device),
            )
            # 5. reference log-probs [N, C] (frozen start model) and old log-probs when reused
            with run.precision.autocast():
                if ref_model is not None:
                    batch.ref_logp = completion_logprobs(
                        ref_model, batch, temperature=config.temperature, impl=config.impl
                    )
                if config.num_iterations > 1:
                    batch.old_logp = completion_logprobs(
                        policy_model, batch, temperature=config.temperature, impl=config.impl
                    )
            batches.append(batch)
            lengths = rollout.completion_lengths.float()
            generated_tokens += int(lengths.sum().item())
            episode_metrics.append(
                {
                    **episodes.metrics(),
                    "completion_length": lengths.mean().item(),
                    "completion_length_max": lengths.max().item(),
                }
            )
            micro_episodes.append(episodes)
            if micro == 0:
                first_prompt = (batch_records[0], rollout.texts[:M])

        # 4b. advantage_scale "batch": one reward std over the whole global batch (all G
        #     micro-batches, all processes), as TRL's scale_rewards="batch"
        if config.advantage_scale == "batch":
            gather = None if acc.num_processes == 1 else (lambda t: acc.gather(t.to(device)))
            advantages = global_batch_advantages(
                [e.reward for e in micro_episodes], M, gather=gather
            )
            for episodes, batch, adv in zip(micro_episodes, batches, advantages):
                episodes.advantages = adv
                batch.advantages = adv.to(device)
        record, texts = first_prompt
        samples = [
            {
                "question": record.question,
                "solution": record.solution,
                "completion": texts[j],
                **micro_episodes[0].row(j),
            }
            for j in range(M)
        ]

        # 6. policy update(s): fused hidden-state GRPO loss, no logits tensor
        loss_metrics: list[dict[str, float]] = []
        grad_norms = []
        for _ in range(config.num_iterations):
            for batch in batches:
                with acc.accumulate(run.objective):
                    loss, metrics = run.objective(batch)
                    acc.backward(run.scaled(loss))  # scaled by 1/G inside (+ fp16 loss scale)
                    grad_norm = _optimizer_step(run, config.max_grad_norm)  # no-op until the G-th
                loss_metrics.append(
                    {"loss": loss.item(), **{k: v.item() for k, v in metrics.items()}}
                )
            grad_norms.append(grad_norm)

        # 7. metrics (averaged over micro-batches, then over processes) and checkpoint
        step_time = time.perf_counter() - t0
        logged = {
            **_mean_over(episode_metrics),
            **_mean_over(loss_metrics),
            "grad_norm": sum(grad_norms) / len(grad_norms),
            "tokens_per_s": generated_tokens / max(step_time, 1e-9),
        }
        logged = _reduce_across_processes(acc, logged)
        logged.update(learning_rate=lr, epoch=run.epoch_of(step + 1), step_time=step_time)
        if config.sample_log_steps and (step + 1) % config.sample_log_steps == 0:
            run.logger.log_samples(step + 1, samples)
        run.after_step(step + 1, logged)

    return run.finish()


# ========================================================================================
# shared machinery


@dataclass
class _Run:
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
        order = _epoch_order(len(self.records), self.config.seed, epoch)
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
        if (save_every and step % save_every == 0) or step == self.total_steps:
            self.save(step)

    def save(self, step: int) -> Path:
        acc = self.accelerator
        model = acc.unwrap_model(self.objective).model

        def save_model(directory: Path) -> None:
            model.save_pretrained(directory)
            self.processor.save_pretrained(directory)

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
            },
            keep_last=self.config.save_total_limit,
            rank=acc.process_index,
            is_main=acc.is_main_process,
            barrier=acc.wait_for_everyone,
        )
        return self.last_saved

    def finish(self) -> dict[str, Any]:
        acc = self.accelerator
        final_dir = Path(self.config.output_dir) / FINAL_MODEL_DIR
        if acc.is_main_process and self.last_saved is not None:
            # weights + processor only, ready for the next stage or `stepgrpo eval`
            tmp = final_dir.with_name(final_dir.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            skip = ["optimizer.pt", "scheduler.pt", "rng_state_*", ckpt.MANIFEST, ckpt.GRAD_SCALER]
            if self.precision.mixed:  # the checkpoint holds fp32 masters: rewrite the weights
                skip += ["*.safetensors", "*.safetensors.index.json", "config.json"]
            shutil.copytree(self.last_saved, tmp, ignore=shutil.ignore_patterns(*skip))
            if self.precision.mixed:
                model = acc.unwrap_model(self.objective).model
                save_weights_as(model, tmp, self.precision.compute_dtype)
            shutil.rmtree(final_dir, ignore_errors=True)
            tmp.rename(final_dir)
        cfg = self.config
        eval_result = self.evaluate() if cfg.eval_data and cfg.eval_at_end else None
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
        """Greedy evaluation of the final policy on eval_data (main process; eval_results.json)."""
        from stepgrpo_fast.trainer.evaluate import evaluate

        if not self.accelerator.is_main_process:
            return None
        cfg = self.config
        model = self.accelerator.unwrap_model(self.objective).model
        with self.precision.autocast():  # fp32 masters: evaluate in the compute dtype
            result = evaluate(
                cfg.output_dir,
                cfg.eval_data,
                model=model,
                processor=self.processor,
                batch_size=cfg.eval_batch_size,
                max_new_tokens=cfg.eval_max_new_tokens,
                reward_mode=getattr(cfg, "reward_mode", "paper"),
                alpha=getattr(cfg, "alpha", 0.1),
                reward_weights=getattr(cfg, "reward_weights", (1.0, 1.0)),
                limit=cfg.eval_limit or None,
                predictions_path=Path(cfg.output_dir) / "eval_predictions.jsonl",
            )
        (Path(cfg.output_dir) / "eval_results.json").write_text(json.dumps(result, indent=2))
        return result


def _start_run(
    config: TrainConfigBase,
    records: list,
    *,
    objective_kwargs: dict[str, Any],
    bar_keys: Sequence[str],
    curve_keys: Sequence[str],
    resume: bool | str | None,
) -> _Run:
    """Accelerator, model, optimizer, schedule, resume state and logger for either loop."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    from stepgrpo_fast.trainer.modeling import load_model_and_processor, resolve_precision
    from stepgrpo_fast.trainer.policy import PolicyObjective, freeze_vision_tower, train_only

    refuse_deepspeed(None)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # CPU: MULTI_CPU over gloo
        gradient_accumulation_steps=config.gradient_accumulation_steps,
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
        from stepgrpo_fast.trainer.data import load_records

        load_records(config.eval_data)  # a bad eval file must fail now, not after training
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
    resume_from = _resolve_resume(config, resume, accelerator)
    model_path = str(resume_from) if resume_from is not None else config.model_name_or_path
    model, processor = load_model_and_processor(  # fp32 masters unless low_precision_weights
        model_path, **_load_kwargs(config, accelerator.device, precision.weight_dtype)
    )
    model.train()
    if config.freeze_vision:
        freeze_vision_tower(model)
    if config.train_only:
        train_only(model, config.train_only)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()

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
    objective = PolicyObjective(model, impl=config.impl, precision=precision, **objective_kwargs)
    objective, optimizer = accelerator.prepare(objective, optimizer)
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
            map_location=accelerator.device,
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
    accelerator.wait_for_everyone()
    return _Run(
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
    )


def refuse_deepspeed(accelerator: Any = None) -> None:
    """The native trainer runs on one process or DDP (``accelerate launch``, NCCL / gloo);
    DeepSpeed ZeRO-2/3 (``accelerate launch`` with a DeepSpeed config sets
    ACCELERATE_USE_DEEPSPEED, or an Accelerator of type DEEPSPEED) is refused with a ValueError."""
    import os

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


def _resolve_resume(
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


def _load_kwargs(
    config: TrainConfigBase, device: torch.device, dtype: torch.dtype
) -> dict[str, Any]:
    return dict(
        torch_dtype=dtype,
        attn_implementation=None
        if config.attn_implementation == "auto"
        else config.attn_implementation,
        device=device,
        min_pixels=config.min_pixels,
        max_pixels=config.max_pixels,
    )


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(n, generator=generator).tolist()


def _to(inputs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def _optimizer_step(run: _Run, max_grad_norm: float) -> float:
    """Clip + step + schedule + zero on the last micro-batch of an accumulation window (inside
    ``accelerator.accumulate``); returns the pre-clip grad norm there, nan elsewhere."""
    acc = run.accelerator
    if not acc.sync_gradients:
        return float("nan")
    params = [p for p in run.objective.parameters() if p.requires_grad]
    if run.grad_scaler is not None:
        run.grad_scaler.unscale_(run.optimizer)  # clip the true gradients
    norm = acc.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else float("inf"))
    if run.grad_scaler is not None:
        run.grad_scaler.step(run.optimizer)  # skipped when the fp16 gradients overflowed
        run.grad_scaler.update()
    else:
        run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return float(norm) if norm is not None else float("nan")  # DeepSpeed clips inside its engine


def save_weights_as(model: torch.nn.Module, directory: Path, dtype: torch.dtype) -> None:
    """save_pretrained ``model`` into ``directory`` with its floating weights cast to ``dtype``
    (config.json says ``dtype``); the in-memory model (the fp32 masters) is left as it is."""
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    model.save_pretrained(directory, state_dict=state)
    # save_pretrained records the in-memory parameters' dtype (fp32); record the written one
    config_path = Path(directory) / "config.json"
    saved = json.loads(config_path.read_text())
    name = str(dtype).removeprefix("torch.")
    for section in (saved, *(v for v in saved.values() if isinstance(v, dict))):
        if "dtype" in section:
            section["dtype"] = name
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")


def _mean_over(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over micro-batches (min over *_min keys, max over *_max keys)."""
    out: dict[str, float] = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        out[key] = (
            min(values)
            if key.endswith("_min")
            else max(values)
            if key.endswith("_max")
            else sum(values) / len(values)
        )
    return out


def _sum_across_processes(accelerator: Any, value: float) -> float:
    """``value`` summed over all processes (the value itself on one process)."""
    if accelerator.num_processes == 1:
        return value
    local = torch.tensor([float(value)], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.gather(local).sum().item())


def _reduce_across_processes(accelerator: Any, metrics: dict[str, float]) -> dict[str, float]:
    """Mean over processes (min / max for *_min / *_max keys; sum for tokens_per_s)."""
    if accelerator.num_processes == 1:
        return metrics
    keys = sorted(metrics)
    local = torch.tensor(
        [[float(metrics[k]) for k in keys]], dtype=torch.float64, device=accelerator.device
    )
    table = accelerator.gather(local).cpu()  # [processes, K]
    out = {}
    for i, key in enumerate(keys):
        column = table[:, i]
        out[key] = (
            column.min()
            if key.endswith("_min")
            else column.max()
            if key.endswith("_max")
            else column.sum()
            if key == "tokens_per_s"
            else column.mean()
        ).item()
    return out


def run_config(kind: str) -> tuple[type[TrainConfigBase], Callable[..., dict[str, Any]]]:
    """'sft' -> (SFTConfig, run_sft); 'stepgrpo' -> (StepGRPOConfig, run_stepgrpo)."""
    if kind == "sft":
        return SFTConfig, run_sft
    if kind == "stepgrpo":
        return StepGRPOConfig, run_stepgrpo
    raise ValueError(f"unknown run kind {kind!r}: expected 'sft' or 'stepgrpo'")
