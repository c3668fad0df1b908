"""StepGRPO online RL: the training step, top to bottom (docs/METHOD.md sections 3-4).

Shapes: B = per_device_batch_size prompts, M = num_generations, N = B*M completions,
P = prompt length, C = completion length, G = gradient_accumulation_steps.

For every step and each of its G micro-batches (on every process):

    o_{i,1..M} ~ pi_theta(. | q_i, image_i)                  rollouts, softmax(logits / T) (+ top-k/p)
    r_ij  = w_acc StepRAR(o_ij) + w_val StepRVR(o_ij)        (+ extra rewards)
    A_ij  = (r_ij - mean_j r_ij) / (std_j r_ij + eps)        advantage_scale "group" ("batch": the
                                                             std of the whole global batch)
    ratio_t = pi_theta(o_t | o_<t) / pi_old(o_t | o_<t)      (1 with gradient when num_iterations == 1)
    l_t   = -min(ratio_t A, clip(ratio_t, 1-eps_low, 1+eps_high) A) + beta KL_k3(pi_theta || pi_ref)_t
    loss  = sum_t w_t l_t                                    w_t from loss_type (formulas.token_weights)

The loss is computed by functional.linear_grpo_loss straight from the last hidden states and
lm_head.weight (never [N*C, V] logits); the readable statement it is tested against is
reference/grpo_loss.py (grpo_loss_reference on log-probs, linear_grpo_loss_naive on logits).
pi_ref is the frozen starting model (use_peft: the same model with its LoRA adapters disabled,
no second copy); pi_old is the policy that sampled (one update per rollout by default, so
ratio = 1 and the gradient is the REINFORCE one with the KL term).

Rollout sampling is seeded per completion from (seed, step, position in the global batch,
sample index): a resumed or re-sharded run draws the same completions.

Options (docs/METHOD.md section 4.2): the loss options of TRL 1.16 (LOSS_OPTIONS, loss_type)
go to the op unchanged; dapo / cispo get num_items_in_batch = T / (G * processes), T the active
tokens of the global batch (dapo_num_items); mask_truncated_completions zeroes the loss mask of
completions without an EOS; multi_objective_aggregation "normalize_then_sum" normalises each
reward in its group, then their weighted sum over the global batch; dynamic_sampling drops
flat groups and refills them (dynamic_sampling.py).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any, Callable

from stepgrpo_fast.lm_head import unwrap_model
from stepgrpo_fast.trainer.config import StepGRPOConfig
from stepgrpo_fast.data.records import load_records, record_options
from stepgrpo_fast.data.checks import replace_unreadable, warn_missing_key_steps
from stepgrpo_fast.data.prompts import encode_prompts, user_text
from stepgrpo_fast.trainer.rl.dynamic_sampling import refill_slice, sample_informative_groups
from stepgrpo_fast.trainer.preemption import preemptible, rollout_stop_criteria
from stepgrpo_fast.trainer.rl.episodes import (
    RewardTrainerState,
    build_episodes,
    global_batch_advantages,
    global_batch_normalize,
    load_extra_rewards,
)
from stepgrpo_fast.trainer.metrics import mean_over, reduce_across_processes
from stepgrpo_fast.trainer.model.loading import load_model_and_processor
from stepgrpo_fast.trainer.model import fsdp
from stepgrpo_fast.trainer.model.lora import adapters_disabled
from stepgrpo_fast.trainer.model.objective import (
    build_policy_batch,
    build_shared_policy_batch,
    completion_logprobs,
)
from stepgrpo_fast.trainer.rl.shared_prompt import group_prompt_inputs, unsupported_reason
from stepgrpo_fast.trainer.rl.rollout import (
    derive_seed,
    ended_with_eos,
    eos_token_ids,
    generate_rollouts,
    repeat_prompt_inputs,
)
from stepgrpo_fast.trainer.run import optimizer_step, start_run, to_device
from stepgrpo_fast.trainer.model.policy_loading import load_kwargs

RL_BAR_KEYS = ("reward", "kl", "step_time")
# StepGRPOConfig fields passed to functional.linear_grpo_loss unchanged (TRL 1.16's names)
LOSS_OPTIONS = (
    "importance_sampling_level",
    "delta",
    "use_bias_correction_kl",
    "entropy_coef",
    "top_entropy_quantile",
    "off_policy_mask_threshold",
    "sapo_temperature_pos",
    "sapo_temperature_neg",
)
NUM_ITEMS_LOSS_TYPES = ("dapo", "cispo")  # normalised by the global batch's active tokens
RL_CURVE_KEYS = ("reward", "reward_accuracy", "reward_validity", "key_step_match")
# seconds of each step's phases, logged beside step_time (this process's wall clock)
PHASE_KEYS = ("time_rollout", "time_rewards", "time_reference", "time_update")


@contextlib.contextmanager
def timed(phases: dict[str, float], key: str):
    """Add the seconds spent inside the block to ``phases[key]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        phases[key] += time.perf_counter() - start


@preemptible  # signals: checkpoint + exit at the run's stop points (trainer/preemption.py)
def run_stepgrpo(config: StepGRPOConfig, *, resume: bool | str | None = None) -> dict[str, Any]:
    """Online RL with StepRAR + StepRVR rewards and group-relative advantages; returns a summary."""
    # 1. every record validated before any model is loaded
    records = load_records(config.train_data, require_response=False, **record_options(config))
    warn_missing_key_steps(records, config.train_data)  # StepRAR is answer-only on those
    if config.repetition_penalty != 1.0:
        warnings.warn(
            f"repetition_penalty={config.repetition_penalty:g}: rollouts are then not sampled from "
            "the policy the loss scores (softmax(logits / temperature)), which biases the policy "
            "gradient; 1.0 turns it off",
            stacklevel=2,
        )
    extra_rewards = load_extra_rewards(config.extra_reward_funcs, config.extra_reward_weights)
    run = start_run(
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
            loss_options={name: getattr(config, name) for name in LOSS_OPTIONS},
        ),
    )
    acc, device = run.accelerator, run.accelerator.device
    M, G = config.num_generations, config.gradient_accumulation_steps

    # 2. the reference policy: a frozen copy of the STARTING model (also when resuming); with
    #    use_peft the policy itself with its adapters disabled (the frozen base), no second copy
    wrapped = acc.unwrap_model(run.objective).model  # a PeftModel with use_peft
    policy_model = unwrap_model(wrapped)  # the HF model (LoRA layers inside): rollouts, scores
    ref_model = None
    if config.beta > 0 and config.use_peft:
        ref_model = policy_model  # scored inside adapters_disabled(wrapped)
    elif config.beta > 0:
        ref_model, _ = load_model_and_processor(  # frozen: held in the compute dtype
            config.model_name_or_path, **load_kwargs(config, device, run.precision.compute_dtype)
        )
        ref_model.requires_grad_(False).eval()
        fsdp.shard_reference(ref_model, config, acc)  # fsdp: sharded like the policy
    # fsdp: the root whose group a scoring pass outside the objective's forward gathers
    ref_root = run.objective if ref_model is policy_model else ref_model

    tokenizer = run.processor.tokenizer
    vision_start = getattr(policy_model.config, "vision_start_token_id", None)
    eos_ids = eos_token_ids(policy_model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    gather = None if acc.num_processes == 1 else (lambda t: acc.gather(t.to(device)))
    # each group's images + prompt once (rl/shared_prompt.py), else the prompt repeated M times
    share = config.share_prompt and M > 1
    reason = unsupported_reason(policy_model, training=True) if share else None
    if reason is not None:  # one notice line, never a silently different computation
        warnings.warn(f"share_prompt: {reason}; using the repeated prompt layout", stacklevel=2)
        share = False
    stop_on_signal = rollout_stop_criteria(run.control)  # a signal cuts a rollout short

    unreadable: set[int] = set()  # records whose images failed to decode: never drawn again
    skipped = [0]  # records replaced in this step

    def readable(batch_records, positions=None):  # an image fails to decode: record replaced
        batch_records, replaced = replace_unreadable(batch_records, run.records, unreadable)
        skipped[0] += replaced
        return batch_records if positions is None else (batch_records, positions)

    def encode(batch_records):  # input_ids [B, P] (left-padded)
        inputs = encode_prompts(run.processor, batch_records, template=config.prompt_template)
        return to_device(inputs, device)

    for step in range(run.start_step, run.total_steps):
        t0, lr = time.perf_counter(), run.scheduler.get_last_lr()[0]
        phases = dict.fromkeys(PHASE_KEYS, 0.0)
        batches, episode_metrics, micro_episodes = [], [], []
        generated_tokens = 0

        def generate(batch_records, positions, step=step):
            # 3. rollouts: B prompts x M samples, completion_ids [N, C]
            seeds = [derive_seed(config.seed, step, pos, j) for pos in positions for j in range(M)]
            with run.precision.autocast(), timed(phases, "time_rollout"), \
                    fsdp.unsharded(run.objective):  # fsdp: gathered once per rollout
                rollout = generate_rollouts(
                    policy_model,
                    tokenizer,
                    encode(batch_records),
                    num_generations=M,
                    max_new_tokens=config.max_new_tokens,
                    temperature=config.temperature,
                    top_k=config.top_k,
                    top_p=config.top_p,
                    row_seeds=seeds,
                    vision_start_token_id=vision_start,
                    repetition_penalty=config.repetition_penalty,
                    share_prompt=share,
                    stopping_criteria=stop_on_signal,
                )
            # 4. rewards r = w_acc * StepRAR + w_val * StepRVR  ->  group-relative advantages [N]
            with timed(phases, "time_rewards"):
                episodes = build_episodes(
                    rollout.texts,
                    batch_records,
                    num_generations=M,
                    reward_weights=config.reward_weights,
                    mode=config.reward_mode,
                    alpha=config.alpha,
                    advantage_scale=config.advantage_scale,
                    extra_rewards=extra_rewards,
                    aggregation=config.multi_objective_aggregation,
                    prompts=[user_text(r, config.prompt_template) for r in batch_records],
                    completion_ids=[
                        row[: int(n)].tolist()
                        for row, n in zip(rollout.completion_ids, rollout.completion_lengths)
                    ],
                    trainer_state=RewardTrainerState(step, run.total_steps, run.epoch_of(step)),
                )
            return rollout, episodes

        # G micro-batches of B prompts x M samples on every process
        for micro in range(G):
            run.stop_point(step)  # a signal so far: abandon the step, checkpoint, exit
            batch_records, positions = run.slice(step, micro)
            batch_records = readable(batch_records)
            if config.dynamic_sampling:  # 3-4 in rounds: flat groups dropped and refilled
                sampled = sample_informative_groups(
                    batch_records,
                    positions,
                    generate=generate,
                    refill=lambda r, pos=positions, step=step: readable(*refill_slice(
                        run.records,
                        pos,
                        seed=config.seed,
                        step=step,
                        round_index=r,
                        global_batch=run.global_batch,
                    )),
                    max_rounds=config.dynamic_sampling_max_rounds,
                    encode=lambda recs: repeat_prompt_inputs(
                        encode(recs), M, vision_start_token_id=vision_start
                    ),
                    pad_token_id=pad_id,
                )
                batch_records, rollout, episodes = (
                    sampled.records,
                    sampled.rollout,
                    sampled.episodes,
                )
                sampling_metrics = {
                    "flat_group_fraction": sampled.flat_before,
                    "flat_group_fraction_kept": sampled.flat_after,
                    "dynamic_sampling_rounds": float(sampled.rounds),
                }
            else:
                rollout, episodes = generate(batch_records, positions)
                informative = episodes.informative_groups().float().mean().item()
                sampling_metrics = {"flat_group_fraction": 1.0 - informative}
            ended = ended_with_eos(rollout.completion_ids, rollout.completion_mask, eos_ids)
            loss_mask = rollout.completion_mask  # [N, C]
            if config.mask_truncated_completions:  # no EOS: out of the loss (TRL's option)
                loss_mask = loss_mask * ended.unsqueeze(1).to(loss_mask.dtype)
            if share:  # [B, P] prompts + [N, C] completions
                prompts = rollout.prompt_inputs
                batch = build_shared_policy_batch(
                    group_prompt_inputs(prompts, M, vision_start_token_id=vision_start),
                    rollout.completion_ids,
                    loss_mask,
                    episodes.advantages.to(device),
                    M,
                )
            else:  # [N, P + C]
                batch = build_policy_batch(
                    rollout.prompt_inputs,
                    rollout.completion_ids,
                    loss_mask,
                    episodes.advantages.to(device),
                )
            # 5. reference log-probs [N, C] (frozen start model) and old log-probs when reused
            with run.precision.autocast(), timed(phases, "time_reference"):
                if ref_model is not None:
                    with adapters_disabled(wrapped), fsdp.root_gathered(ref_root):
                        batch.ref_logp = completion_logprobs(
                            ref_model, batch, temperature=config.temperature, impl=config.impl
                        )
                if config.num_iterations > 1:
                    with fsdp.root_gathered(run.objective):
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
                    "truncated_fraction": 1.0 - ended.float().mean().item(),
                    **sampling_metrics,
                }
            )
            micro_episodes.append(episodes)
            if micro == 0:
                first_prompt = (batch_records[0], rollout.texts[:M])

        run.stop_point(step, next_phase="collective")  # last exit before the weights move

        # 4b. advantage_scale "batch": one reward std over the whole global batch (all G
        #     micro-batches, all processes), as TRL's scale_rewards="batch"
        #     normalize_then_sum: the sum of group-normalised rewards normalised over it (GDPO)
        advantages = None
        if config.multi_objective_aggregation == "normalize_then_sum":
            advantages = global_batch_normalize(
                [e.advantages for e in micro_episodes], gather=gather
            )
        elif config.advantage_scale == "batch":
            advantages = global_batch_advantages(
                [e.reward for e in micro_episodes], M, gather=gather
            )
        for episodes, batch, adv in zip(micro_episodes, batches, advantages or ()):
            episodes.advantages = adv
            batch.advantages = adv.to(device)
        # 4c. dapo / cispo: the loss is sum(l_t) / (active tokens of the global batch), TRL's
        #     num_items_in_batch; each micro-batch gets the share that survives the 1/G of
        #     accelerator.backward and the 1/world of DDP's gradient average
        if config.loss_type in NUM_ITEMS_LOSS_TYPES:
            num_items = dapo_num_items(
                [b.completion_mask for b in batches], acc.num_processes, gather=gather
            )
            for batch in batches:
                batch.num_items_in_batch = num_items
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
        with timed(phases, "time_update"):
            for _ in range(config.num_iterations):
                for batch in batches:
                    with acc.accumulate(run.objective):
                        loss, metrics = run.objective(batch)
                        acc.backward(run.scaled(loss))  # scaled by 1/G inside (+ fp16 scale)
                        grad_norm = optimizer_step(run, config.max_grad_norm)  # no-op until G-th
                    loss_metrics.append(
                        {"loss": loss.item(), **{k: v.item() for k, v in metrics.items()}}
                    )
                grad_norms.append(grad_norm)

        # 7. metrics (averaged over micro-batches, then over processes) and checkpoint
        step_time = time.perf_counter() - t0
        logged = {
            **mean_over(episode_metrics),
            **mean_over(loss_metrics),
            "grad_norm": sum(grad_norms) / len(grad_norms),
            "tokens_per_s": generated_tokens / max(step_time, 1e-9),
            "skipped_records": float(skipped[0]),  # replaced: an image failed to decode
        }
        skipped[0] = 0
        logged = reduce_across_processes(acc, logged)
        logged.update(
            learning_rate=lr, epoch=run.epoch_of(step + 1), step_time=step_time, **phases
        )
        if config.sample_log_steps and (step + 1) % config.sample_log_steps == 0:
            run.logger.log_samples(step + 1, samples)
        run.after_step(step + 1, logged)

    return run.finish()


def dapo_num_items(
    masks: list, num_processes: int, *, gather: Callable[[Any], Any] | None = None
) -> float:
    """The ``num_items_in_batch`` to pass with each micro-batch for dapo / cispo.

    masks: this process's loss masks of the step's G micro-batches, [N, C] each
    gather: [L] -> [world * L] (accelerator.gather); None = one process
    Returns T / (G * world), T = max(1, active tokens of every micro-batch of every process):
    each micro-batch's loss sum_t l_t / (T / (G world)) is divided by G in
    ``accelerator.backward`` and averaged over processes by DDP, so the update is that of
    sum over the whole global batch of l_t / T, TRL 1.16's dapo.
    """
    import torch

    if not masks:
        raise ValueError("dapo_num_items: no micro-batches")
    local = torch.stack([m.sum().float().cpu() for m in masks]).sum().reshape(1)
    total = local if gather is None else gather(local).float().cpu().sum()
    return max(float(total.sum().item()), 1.0) / (len(masks) * num_processes)
