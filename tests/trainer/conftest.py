"""Trainer tests run the tiny model on one torch thread: on a 2-core machine the default thread
count makes a tiny RL step ~10x slower (thread contention), and results do not depend on it.
``tiny_rl_config`` (tests/conftest.py) builds the tiny RL config from configs/stepgrpo_tiny.yaml."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
