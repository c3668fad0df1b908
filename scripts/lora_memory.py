"""Peak RSS of one StepGRPO step, LoRA vs full fine-tuning, each in a fresh process.

    python scripts/lora_memory.py [--out DIR] [--layers 2] [--beta 0.04]

Builds (once, under DIR) a real-shaped random Qwen2-VL-2B checkpoint (real widths and vocabulary,
``--layers`` decoder layers, 1 vision block; stepgrpo_fast.synthetic.real_shapes) and a synthetic RL
set, then runs ``max_steps=1`` of ``stepgrpo train`` twice in child processes: full fine-tuning
(policy + frozen reference copy + AdamW state) and ``use_peft`` (one model, the reference scored
with the adapters disabled). Each child reports ru_maxrss (peak RSS since it started: loading +
the step) and the parameters it holds, taken when the step ends, before any checkpoint is
written (saving is skipped: it only adds disk traffic). fp32 on the CPU (ENV_NOTES: bf16 matmuls
are far slower here). Prints one JSON line per mode.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
from stepgrpo_fast.trainer import run as run_module
from stepgrpo_fast.trainer.config import StepGRPOConfig
from stepgrpo_fast.trainer.loop import run_stepgrpo

report = {}
def after_step(self, step, metrics):
    import gc
    gc.collect()
    params = {id(p): p for m in gc.get_objects() if isinstance(m, torch.nn.Module)
              for p in m.parameters(recurse=False)}
    report.update(
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        parameters_in_memory=sum(p.numel() for p in params.values()),
        trainable=sum(p.numel() for p in self.objective.parameters() if p.requires_grad),
        optimizer_state_mb=sum(t.numel() * t.element_size()
                               for s in self.optimizer.state.values() for t in s.values()
                               if torch.is_tensor(t)) / 2**20,
        step_time_s=metrics["step_time"], kl=metrics["kl"],
    )
run_module.Run.after_step = after_step
cfg = StepGRPOConfig(**json.loads(sys.argv[1]))
run_stepgrpo(cfg)
print("REPORT " + json.dumps(report))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/lora_memory")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--beta", type=float, default=0.04)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from stepgrpo_fast.synthetic.real_shapes import build_real_shaped_checkpoint
    from stepgrpo_fast.synthetic.task import write_dataset

    ckpt = out / f"qwen2_vl_2b_{args.layers}layers"
    if not (ckpt / "config.json").is_file():
        build_real_shaped_checkpoint(ckpt, "qwen2_vl", num_layers=args.layers, vision_depth=1)
    data = write_dataset(out / "data", seed=0, n_sft=4, n_rl=4, n_eval=2)
    common = dict(
        model_name_or_path=str(ckpt), train_data=str(data["rl"]), max_steps=1,
        per_device_batch_size=2, num_generations=2, max_new_tokens=16, beta=args.beta,
        dtype="float32", save_steps=0, sample_log_steps=0, progress_bar=False,
        learning_rate=1e-5,
    )
    for name, extra in (("full", {}), ("lora", {"use_peft": True})):
        cfg = {**common, **extra, "output_dir": str(out / f"run_{name}")}
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        line = next(x for x in done.stdout.splitlines() if x.startswith("REPORT "))
        print(json.dumps({"mode": name, **json.loads(line[len("REPORT "):])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
