"""StepGRPO with TRL: GRPOTrainer + the StepGRPO rewards + linear_logprobs as the LM head.

Offline demo (builds a tiny random Qwen2-VL and a synthetic visual-math set, 2 steps on CPU):

    python examples/trl_stepgrpo.py --output-dir runs/trl_demo

A real run (Qwen2-VL-2B warm-up checkpoint, released RL settings), on 8 GPUs with ZeRO-3:

    accelerate launch --config_file stepgrpo_fast/configs/accelerate/zero3.yaml examples/trl_stepgrpo.py \\
        --model path/to/warmup_checkpoint --data data/rl.jsonl --output-dir runs/trl_2b \\
        --bf16 --max-steps 1000 --max-completion-length 1024 --temperature 1.2 --learning-rate 1e-6

Data: JSON / JSONL records {"image", "question", "solution", "key_steps"} (or the released layout),
read by stepgrpo_fast.trainer.data.load_records. ``--trainer trl`` uses TRL's own fused LM head
instead of ours (same maths; for comparisons).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="checkpoint directory (default: build a tiny offline Qwen2-VL)")
    p.add_argument(
        "--data", help="RL records, JSON or JSONL (default: write a small synthetic set)"
    )
    p.add_argument("--output-dir", default="runs/trl_stepgrpo")
    p.add_argument("--trainer", choices=("stepgrpo", "trl"), default="stepgrpo")
    p.add_argument("--mode", choices=("paper", "official"), default="paper", help="reward mode")
    p.add_argument("--max-steps", type=int, default=2)
    p.add_argument("--num-generations", type=int, default=4, help="M, completions per prompt")
    p.add_argument(
        "--per-device-batch", type=int, default=4, help="completions per device per step"
    )
    p.add_argument("--max-completion-length", type=int, default=24)
    p.add_argument("--temperature", type=float, default=1.2)
    p.add_argument("--beta", type=float, default=0.04)
    p.add_argument("--learning-rate", type=float, default=1e-6)
    p.add_argument("--max-pixels", type=int, default=400_000)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU runs)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build_dataset(records):
    """TRL's VLM layout: a conversational prompt (the image part is inserted before the text by
    TRL), the image, and the columns our rewards read (solution, key_steps)."""
    from datasets import Dataset

    from stepgrpo_fast.data.records import load_image
    from stepgrpo_fast.data.prompts import REASONING_PROMPT

    rows = [
        {
            "prompt": [{"role": "user", "content": f"{r.question}\n{REASONING_PROMPT}"}],
            "image": load_image(r),
            "solution": r.solution,
            "key_steps": r.key_steps,
        }
        for r in records
    ]
    return Dataset.from_list(rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from accelerate import PartialState
    from trl import GRPOConfig

    from stepgrpo_fast.integrations.trl import StepGRPOTrainer, make_reward_funcs
    from stepgrpo_fast.data.records import load_records
    from stepgrpo_fast.trainer.model.loading import load_processor

    out = pathlib.Path(args.output_dir)
    model_path, data_path = args.model, args.data
    on_cpu = not torch.cuda.is_available()
    with PartialState(
        cpu=on_cpu
    ).main_process_first():  # under accelerate launch: one process writes, the others read
        out.mkdir(parents=True, exist_ok=True)
        if model_path is None:
            from stepgrpo_fast.synthetic.tiny_model import build_tiny_checkpoint

            tiny = out / "tiny_model"
            built = (tiny / "model.safetensors").is_file()
            model_path = str(
                tiny if built else build_tiny_checkpoint(tiny, family="qwen2_vl", seed=args.seed)
            )
        if data_path is None:
            from stepgrpo_fast.synthetic.task import write_dataset

            rl = out / "data" / "rl.jsonl"
            data_path = str(
                rl
                if rl.is_file()
                else write_dataset(out / "data", seed=args.seed, n_sft=0, n_rl=16, n_eval=0)["rl"]
            )

    import json

    model_type = json.loads((pathlib.Path(model_path) / "config.json").read_text())["model_type"]
    processor = load_processor(model_path, model_type=model_type, max_pixels=args.max_pixels)
    dataset = build_dataset(load_records(data_path))
    config = GRPOConfig(
        output_dir=str(out),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.per_device_batch,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        temperature=args.temperature,
        beta=args.beta,
        learning_rate=args.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        max_grad_norm=1.0,
        bf16=args.bf16,
        use_cpu=on_cpu,
        seed=args.seed,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        model_init_kwargs={"dtype": "bfloat16" if args.bf16 else "float32"},
    )
    if args.trainer == "stepgrpo":
        trainer_class = StepGRPOTrainer
    else:
        from trl import GRPOTrainer as trainer_class
    trainer = trainer_class(
        model=model_path,
        reward_funcs=make_reward_funcs(args.mode),
        args=config,
        train_dataset=dataset,
        processing_class=processor,
    )
    trainer.train()
    if not trainer.accelerator.is_main_process:
        return 0
    for entry in trainer.state.log_history:
        if "loss" in entry:
            keep = (
                "loss",
                "reward",
                "rewards/step_accuracy/mean",
                "rewards/step_validity/mean",
                "step_accuracy/key_step_fraction",
                "kl",
                "entropy",
            )
            print("step", entry.get("step"), {k: round(entry[k], 4) for k in keep if k in entry})
    return 0


if __name__ == "__main__":
    sys.exit(main())
