import os

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
