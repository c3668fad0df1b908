"""Trainer tests run the tiny model on one torch thread: on a 2-core machine the default thread
count makes a tiny RL step ~10x slower (thread contention), and results do not depend on it.
``tiny_rl_config`` builds the tiny RL config from configs/stepgrpo_tiny.yaml (see below)."""
import dataclasses
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# The tiny RL config: stepgrpo_fast/configs/stepgrpo_tiny.yaml (what a user runs on the tiny
# model) pointed at the session's tiny checkpoint and synthetic RL data and sized for a test.
#   tiny_rl_config(output_dir, **overrides) -> StepGRPOConfig
# Test scale (each override wins): 1 step of 2 prompts x 2 samples, 16 new tokens, seed 0, no
# checkpoints, samples, eval or progress bar. Everything else is the YAML's (fp32, sdpa,
# freeze_vision, lr 1e-4, ...); a test that needs the library default of a field says so.
TINY_RL_YAML = Path(__file__).resolve().parents[2] / "stepgrpo_fast" / "configs" / "stepgrpo_tiny.yaml"
TINY_RL_TEST_SCALE = {
    "num_generations": 2,
    "max_new_tokens": 16,
    "per_device_batch_size": 2,
    "max_steps": 1,
    "save_steps": 0,
    "sample_log_steps": 0,
    "eval_data": None,
    "eval_at_end": False,
    "progress_bar": False,
    "seed": 0,
}


@pytest.fixture(scope="session")
def tiny_rl_config(tiny_ckpt, synthetic_data):
    from stepgrpo_fast.trainer.config import StepGRPOConfig

    base = StepGRPOConfig.from_yaml(TINY_RL_YAML)

    def make(output_dir, **overrides) -> StepGRPOConfig:
        values = dict(TINY_RL_TEST_SCALE, model_name_or_path=str(tiny_ckpt),
                      train_data=str(synthetic_data["rl"]), output_dir=str(output_dir))
        return dataclasses.replace(base, **{**values, **overrides})

    return make
