import dataclasses
import os
from pathlib import Path

# Must be set before any Triton kernel is defined (i.e. before stepgrpo_fast.ops is imported).
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:   # the marker, not the tests/gpu folder
            item.add_marker(skip_gpu)


# Tiny offline checkpoints and a small synthetic dataset, built once per session (a few
# seconds); treat the directories as read-only.
#   tiny_ckpt      path to a tiny Qwen2-VL checkpoint dir (build_tiny_checkpoint, seed 0)
#   tiny_ckpt_25   the same for Qwen2.5-VL
#   synthetic_data {"dir": Path, "sft": Path, "rl": Path, "eval": Path}
#                  (write_dataset(seed=0, n_sft=16, n_rl=8, n_eval=8))


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    from stepgrpo_fast.synthetic.tiny_model import build_tiny_checkpoint

    return build_tiny_checkpoint(
        tmp_path_factory.mktemp("tiny_qwen2_vl"), family="qwen2_vl", seed=0
    )


@pytest.fixture(scope="session")
def tiny_ckpt_25(tmp_path_factory):
    from stepgrpo_fast.synthetic.tiny_model import build_tiny_checkpoint

    return build_tiny_checkpoint(
        tmp_path_factory.mktemp("tiny_qwen2_5_vl"), family="qwen2_5_vl", seed=0
    )


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    from stepgrpo_fast.synthetic.task import write_dataset

    out = tmp_path_factory.mktemp("synthetic_data")
    paths = write_dataset(out, seed=0, n_sft=16, n_rl=8, n_eval=8)
    return {"dir": out, **paths}


# The tiny RL config: stepgrpo_fast/configs/stepgrpo_tiny.yaml (what a user runs on the tiny
# model) pointed at the session's tiny checkpoint and synthetic RL data and sized for a test.
#   tiny_rl_config(output_dir, **overrides) -> StepGRPOConfig
# Test scale (each override wins): 1 step of 2 prompts x 2 samples, 16 new tokens, seed 0, no
# checkpoints, samples, eval or progress bar. Everything else is the YAML's (fp32, sdpa,
# freeze_vision, lr 1e-4, ...); a test that needs the library default of a field says so.
TINY_RL_YAML = Path(__file__).resolve().parents[1] / "stepgrpo_fast" / "configs" / "stepgrpo_tiny.yaml"
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
