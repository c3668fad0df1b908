"""Run one training stage (SFT or StepGRPO) in this process or on N local data-parallel processes.

    run_stage("sft" | "train", config, processes=1)  ->  OUTPUT_DIR/final_model

With ``processes > 1`` the stage runs as ``accelerate launch --num_processes N`` of the
``stepgrpo sft`` / ``stepgrpo train`` command (torch.distributed over gloo on the CPU; the config
YAML in ``accelerate/cpu_2proc.yaml`` with the process count overridden), one torch thread per
process. The config's ``per_device_batch_size`` is the GLOBAL batch divided by N, so the data
order, the rollout seeds and the update match the one-process run up to float rounding (the
trainer takes each global batch in slices by rank; see loop.py). On 2 cores this is what uses the
second core: the tiny demo model's step time is per-op overhead, which threads cannot split.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ACCELERATE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "cpu_2proc.yaml"
STAGES = {"sft": "run_sft", "train": "run_stepgrpo"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (for the rendezvous of the processes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def per_process_config(config: Any, processes: int) -> Any:
    """``config`` with per_device_batch_size = global batch / processes (must divide evenly)."""
    batch = config.per_device_batch_size
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    if batch % processes:
        raise ValueError(f"per_device_batch_size {batch} (the global batch when launched on one "
                         f"process) is not divisible by {processes} processes")
    return dataclasses.replace(config, per_device_batch_size=batch // processes)


def launch_command(stage: str, config_path: Path, processes: int, port: int) -> list[str]:
    """argv of ``accelerate launch`` running ``stepgrpo STAGE --config CONFIG`` on N processes."""
    return [sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(ACCELERATE_CONFIG), "--num_processes", str(processes),
            "--main_process_port", str(port),
            "-m", "stepgrpo_fast.cli", stage, "--config", str(config_path)]


def run_stage(stage: str, config: Any, *, processes: int = 1, threads: int = 1,
              config_path: Path | None = None) -> Path:
    """Train ``config`` to completion; returns its final_model directory.

    stage:       "sft" (SFTConfig) or "train" (StepGRPOConfig)
    processes:   1 runs in this process; N > 1 launches N local processes (see module doc)
    threads:     torch threads per launched process (OMP_NUM_THREADS); 0 leaves the default
    config_path: where the launched processes' YAML is written (default OUTPUT_DIR.yaml)
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {sorted(STAGES)}, got {stage!r}")
    if processes == 1:
        from stepgrpo_fast.trainer import loop

        return Path(getattr(loop, STAGES[stage])(config)["final_model"])
    launched = per_process_config(config, processes)
    path = Path(config_path or f"{Path(config.output_dir)}.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(launched.to_dict(), sort_keys=False))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = launch_command(stage, path, processes, free_port())
    done = subprocess.run(command, env=env, check=False)
    final = Path(config.output_dir) / "final_model"
    if done.returncode != 0 or not final.is_dir():
        raise RuntimeError(f"`stepgrpo {stage}` on {processes} processes failed (exit "
                           f"{done.returncode}; config {path}): {' '.join(command)}")
    return final
