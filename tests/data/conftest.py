"""Shared fixtures for data tests (same as tests/trainer/conftest.py): tiny offline checkpoints and a small synthetic dataset.

tiny_ckpt      session-scoped path to a tiny Qwen2-VL checkpoint dir (build_tiny_checkpoint, seed 0)
tiny_ckpt_25   the same for Qwen2.5-VL
synthetic_data session-scoped dict: {"dir": Path, "sft": Path, "rl": Path, "eval": Path}
               (write_dataset(seed=0, n_sft=16, n_rl=8, n_eval=8))
Each is built once per test session (a few seconds); treat the directories as read-only.
"""

import pytest


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    from stepgrpo_fast.data.tiny_model import build_tiny_checkpoint

    return build_tiny_checkpoint(
        tmp_path_factory.mktemp("tiny_qwen2_vl"), family="qwen2_vl", seed=0
    )


@pytest.fixture(scope="session")
def tiny_ckpt_25(tmp_path_factory):
    from stepgrpo_fast.data.tiny_model import build_tiny_checkpoint

    return build_tiny_checkpoint(
        tmp_path_factory.mktemp("tiny_qwen2_5_vl"), family="qwen2_5_vl", seed=0
    )


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    from stepgrpo_fast.data.synthetic import write_dataset

    out = tmp_path_factory.mktemp("synthetic_data")
    paths = write_dataset(out, seed=0, n_sft=16, n_rl=8, n_eval=8)
    return {"dir": out, **paths}
