"""SFT warm-up: token-level NLL on (image, question, reference reasoning) (docs/METHOD.md section 1).

Shapes: B = per_device_batch_size examples, S = sequence length, G = gradient_accumulation_steps.
The objective is the mean NLL over the label tokens of the whole global batch (all G
micro-batches on all processes; HF Trainer's num_items_in_batch), so an update does not depend
on how the batch is split.
"""

from __future__ import annotations

import time
from typing import Any

from stepgrpo_fast.trainer.config import SFTConfig
from stepgrpo_fast.data.records import load_records, record_options
from stepgrpo_fast.data.checks import replace_unreadable
from stepgrpo_fast.data.prompts import encode_sft
from stepgrpo_fast.trainer.preemption import preemptible
from stepgrpo_fast.trainer.metrics import mean_over, reduce_across_processes, sum_across_processes
from stepgrpo_fast.trainer.run import optimizer_step, start_run, to_device

SFT_BAR_KEYS = ("loss", "step_time")
SFT_CURVE_KEYS = ("loss",)


@preemptible  # signals: checkpoint + exit at the run's stop points (trainer/preemption.py)
def run_sft(config: SFTConfig, *, resume: bool | str | None = None) -> dict[str, Any]:
    """Token-level NLL on (image, question, reference reasoning); returns a summary dict."""
    # 1. every record is validated (image readable, fields present, response given) up front
    records = load_records(config.train_data, require_response=True, **record_options(config))
    run = start_run(
        config,
        records,
        objective_kwargs={},
        bar_keys=SFT_BAR_KEYS,
        curve_keys=SFT_CURVE_KEYS,
        resume=resume,
    )
    acc, device = run.accelerator, run.accelerator.device
    unreadable: set[int] = set()  # records whose images failed to decode: never drawn again
    skipped = [0]  # records replaced in this step

    def readable(batch):  # a record whose image fails to decode mid-run: replaced, warned
        batch, replaced = replace_unreadable(batch, run.records, unreadable)
        skipped[0] += replaced
        return batch

    for step in range(run.start_step, run.total_steps):
        run.stop_point(step, next_phase="collective")  # a signal so far: checkpoint, exit
        t0, lr = time.perf_counter(), run.scheduler.get_last_lr()[0]
        micro_metrics: list[dict[str, float]] = []
        # 2. G micro-batches of B examples on every process; one optimizer step after the last.
        #    The objective is the mean NLL over the label tokens of the whole global batch (all
        #    micro-batches, all processes; HF Trainer's num_items_in_batch), so the update does
        #    not depend on how the batch is split into micro-batches and processes.
        micro_inputs = [  # G x input_ids/labels [B, S]
            to_device(
                encode_sft(
                    run.processor, readable(run.slice(step, micro)[0]),
                    template=config.prompt_template,
                ),
                device,
            )
            for micro in range(config.gradient_accumulation_steps)
        ]
        micro_tokens = [int((x["labels"][:, 1:] != -100).sum()) for x in micro_inputs]
        label_tokens = sum(micro_tokens)  # this process's, for tokens_per_s
        # label tokens of the global batch per (micro-batch x process)
        tokens_per_slice = sum_across_processes(acc, sum(micro_tokens)) / (
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
                grad_norm = optimizer_step(run, config.max_grad_norm)  # no-op until the G-th
            micro_metrics.append({"loss": loss.item()})
        step_time = time.perf_counter() - t0
        logged = mean_over(micro_metrics)
        logged.update(grad_norm=grad_norm, tokens_per_s=label_tokens / max(step_time, 1e-9),
                      skipped_records=float(skipped[0]))
        skipped[0] = 0
        logged = reduce_across_processes(acc, logged)
        logged.update(learning_rate=lr, epoch=run.epoch_of(step + 1), step_time=step_time)
        run.after_step(step + 1, logged)

    return run.finish()
