"""verl adapter, checked against a real verl (0.9.1) installed in its own venv.

verl pins transformers < 5.11, so it lives in an isolated venv (scripts/setup_verl_venv.sh,
default /work/venvs/verl, override with STEPGRPO_VERL_VENV). One subprocess runs
verl_checks.py with that venv's python and reports what verl's own code produced; the tests
below compare it with the reward functions and numbers computed here. Without the venv these
tests are skipped with the command that creates it. The pure-Python parts of the adapter
(argument handling) are tested in this environment directly.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest

from stepgrpo_fast import rewards
from stepgrpo_fast.integrations import verl as adapter

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
VERL_VENV = pathlib.Path(os.environ.get("STEPGRPO_VERL_VENV", "/work/venvs/verl"))
VERL_PYTHON = VERL_VENV / "bin" / "python"


@pytest.fixture(scope="module")
def verl_results(reward_batch, tmp_path_factory):
    if not VERL_PYTHON.exists():
        pytest.skip(
            f"verl venv not found at {VERL_VENV}: run `bash scripts/setup_verl_venv.sh` "
            "(or set STEPGRPO_VERL_VENV) to run the verl tests"
        )
    completions, solutions, key_steps = reward_batch
    work = tmp_path_factory.mktemp("verl")
    (work / "in.json").write_text(
        json.dumps({"completions": completions, "solutions": solutions, "key_steps": key_steps})
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        VERL_USE_EXTERNAL_PLUGINS="none",
        RAY_DISABLE_IMPORT_WARNING="1",
    )
    env.pop("STEPGRPO_VERL_FUSED_LOGPROBS", None)
    proc = subprocess.run(
        [
            str(VERL_PYTHON),
            str(REPO_ROOT / "tests/integrations/verl_checks.py"),
            str(work / "in.json"),
            str(work / "out.json"),
        ],
        env=env,
        cwd=str(work),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, (
        f"verl_checks.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    return json.loads((work / "out.json").read_text())


def expected_components(reward_batch, mode):
    completions, solutions, key_steps = reward_batch
    accuracy = rewards.step_accuracy_reward(completions, solutions, key_steps, mode=mode)
    validity = rewards.step_validity_reward(completions, mode=mode)
    fraction = rewards.match_key_steps(completions, key_steps, mode=mode)
    return accuracy, validity, fraction


@pytest.mark.slow
def test_module_loads_through_verl_import_mechanisms(verl_results):
    loading = verl_results["loading"]
    assert loading["verl_version"] == adapter.TESTED_VERL
    assert (
        loading["pkg_loader_module"] == "stepgrpo_fast.integrations.verl"
    )  # pkg:// custom_reward_function
    # verl's HFModelConfig (built in every worker) imports model.external_lib: alone that changes
    # nothing; with STEPGRPO_VERL_FUSED_LOGPROBS=1 it patches the fused-kernel function
    assert loading["model_config_class"] == "HFModelConfig"
    assert loading["ray_env_value"] == ["1", "str"]  # Ray needs string env values
    assert loading["patched_without_opt_in"] is False
    assert loading["patched_with_opt_in"] is True
    assert loading["restored"] is True
    # get_custom_reward_fn merged reward_kwargs={"mode": "official"}: the bare final-answer line is
    # judged correct and the official validity check fails (no headers)
    assert loading["custom_reward_fn_official"] == {
        "score": 1.0,
        "accuracy": 1.0,
        "validity": 0.0,
        "key_step_fraction": 0.0,
    }
    assert verl_results["rewards"]["decoded_equals_input"] == [True] * 5


def test_docs_give_the_overrides_verl_accepted():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "verl_checks", REPO_ROOT / "tests/integrations/verl_checks.py"
    )
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    doc = (REPO_ROOT / "docs" / "scaling.md").read_text()  # its verl section
    for override in checks.REWARD_OVERRIDES + checks.FUSED_OVERRIDES:
        assert override in doc, override
    assert adapter.PATCH_ENV in doc


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["paper", "official"])
def test_batch_reward_manager_scores_equal_reward_functions(verl_results, reward_batch, mode):
    accuracy, validity, fraction = expected_components(reward_batch, mode)
    got = verl_results["rewards"][f"batch_{mode}"]
    total = [a + v for a, v in zip(accuracy, validity)]
    assert got["extra"]["score"] == pytest.approx(total)
    assert got["extra"]["accuracy"] == pytest.approx(accuracy)
    assert got["extra"]["validity"] == pytest.approx(validity)
    assert got["extra"]["key_step_fraction"] == pytest.approx(fraction)
    # verl put each score on the last response token (fp32 tensor), nothing elsewhere
    assert got["token_level_scores"] == pytest.approx(total, abs=1e-6)
    assert got["nonzero_per_row"] == [1 if t != 0 else 0 for t in total]
    assert len(set(total)) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["paper", "official"])
def test_naive_reward_manager_scores_equal_reward_functions(verl_results, reward_batch, mode):
    accuracy, validity, fraction = expected_components(reward_batch, mode)
    got = verl_results["rewards"][f"naive_{mode}"]
    assert [g["score"] for g in got] == pytest.approx([a + v for a, v in zip(accuracy, validity)])
    assert [g["accuracy"] for g in got] == pytest.approx(accuracy)
    assert [g["validity"] for g in got] == pytest.approx(validity)
    assert [g["key_step_fraction"] for g in got] == pytest.approx(fraction)


@pytest.mark.slow
def test_patched_logprobs_match_verl_torch_implementation(verl_results):
    lp = verl_results["logprobs"]
    assert lp["patched"] is True
    assert lp["shape_ours"] == [14] and lp["shape_verl_torch"] == [
        2,
        7,
    ]  # flat, like verl's Triton function
    assert lp["logp_dtype"] == "torch.float32"
    assert lp["max_abs_diff_logp"] < 1e-5 and lp["max_abs_diff_entropy"] < 1e-5
    assert lp["max_abs_diff_grad_hidden"] < 1e-4 and lp["max_abs_diff_grad_weight"] < 1e-4
    assert lp["sum_diff"] < 1e-3 and lp["mean_diff"] < 1e-5
    assert "reduction must be one of" in lp["bad_reduction_error"]
    # verl's own fused-kernel model forward, triton backend (now ours) vs its torch backend
    assert lp["model_forward_logp_diff"] < 1e-5 and lp["model_forward_entropy_diff"] < 1e-5


# ---------------------------------------------------------------------------------------------
# argument handling, in this environment (no verl needed)
# ---------------------------------------------------------------------------------------------
def test_compute_score_matches_reward_functions_here(reward_batch):
    completions, solutions, key_steps = reward_batch
    accuracy, validity, fraction = expected_components(reward_batch, "paper")
    for i, text in enumerate(completions):
        got = adapter.compute_score(
            "src", text, solutions[i], {"key_steps": key_steps[i]}, reward_router_address=None
        )
        assert got == pytest.approx(
            {
                "score": accuracy[i] + validity[i],
                "accuracy": accuracy[i],
                "validity": validity[i],
                "key_step_fraction": fraction[i],
            }
        )
    # key steps may also ride in a dict ground truth
    both = adapter.compute_score(
        "src", completions[0], {"solution": "3", "key_steps": key_steps[0]}
    )
    assert both["key_step_fraction"] == pytest.approx(fraction[0])


def test_compute_score_batch_accepts_numpy_rows(reward_batch):
    np = pytest.importorskip("numpy")
    completions, solutions, key_steps = reward_batch
    extra = [
        {"key_steps": np.array([np.array(g, dtype=object) for g in ks], dtype=object)}
        if isinstance(ks, list)
        else {"key_steps": ks}
        for ks in key_steps
    ]
    got = adapter.compute_score_batch(
        np.array(["s"] * 5, dtype=object), completions, solutions, extra
    )
    want = adapter.compute_score_batch(
        ["s"] * 5, completions, solutions, [{"key_steps": ks} for ks in key_steps]
    )
    assert got == want and len(got) == 5


def test_verl_adapter_errors_are_clear(reward_batch):
    completions, solutions, _ = reward_batch
    with pytest.raises(ValueError, match="3 ground_truths"):
        adapter.compute_score_batch(["s"] * 5, completions, solutions[:3], [{}] * 5)
    with pytest.raises(TypeError, match=r"solution_strs\[1\]"):
        adapter.compute_score_batch(["s"] * 2, ["a", 7], ["3", "3"], [{}, {}])
    with pytest.raises(TypeError, match=r"row 0: extra_info\['key_steps'\]"):
        adapter.compute_score("s", "text", "3", {"key_steps": "AD is a median"})
    with pytest.raises(ValueError, match="no 'solution' key"):
        adapter.compute_score("s", "text", {"answer": "3"})
    with pytest.raises(ValueError, match="mode"):
        adapter.compute_score("s", "text", "3", mode="strict")


def test_linear_cross_entropy_validates_like_a_drop_in():
    import torch

    hidden, weight = torch.randn(2, 3, 8), torch.randn(11, 8)
    labels = torch.randint(0, 11, (2, 3))
    logp, entropy = adapter.linear_cross_entropy(hidden, weight, labels, 0.5, "none")
    assert logp.shape == entropy.shape == (6,) and logp.dtype == torch.float32
    with pytest.raises(ValueError, match="labels shape"):
        adapter.linear_cross_entropy(hidden, weight, labels[:, :2])
    with pytest.raises(TypeError, match="temperature"):
        adapter.linear_cross_entropy(hidden, weight, labels, "hot")
