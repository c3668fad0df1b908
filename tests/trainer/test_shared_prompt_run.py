"""StepGRPO runs with share_prompt true vs false on the tiny Qwen2-VL checkpoint: the same
completions, per-step kl within 1e-4 relative, the same update direction (cosine >= 0.9999 over
every trained tensor), and the per-phase seconds in metrics.jsonl every step."""

import json

import torch
from safetensors.torch import load_file

from stepgrpo_fast.trainer.logging import read_metrics
from stepgrpo_fast.trainer.loop import run_stepgrpo
from stepgrpo_fast.trainer.rl.grpo_loop import PHASE_KEYS

from episode_samples import digit_share  # noqa: F401 - the extra reward below

# the random tiny model rarely writes the response layout: without a reward with spread the
# advantages are 0 and AdamW would step along rounding noise (different in every layout)
DIGIT_REWARD = f"{__name__}:digit_share"


def test_shared_and_repeated_runs_agree(tiny_rl_config, tiny_ckpt, tmp_path):
    runs = {}
    for share in (True, False):
        config = tiny_rl_config(
            tmp_path / f"share_{share}", share_prompt=share, max_steps=3, num_generations=3,
            sample_log_steps=1, extra_reward_funcs=[DIGIT_REWARD], extra_reward_weights=[1.0],
        )  # fmt: skip
        summary = run_stepgrpo(config)
        out = tmp_path / f"share_{share}"
        samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        weights = load_file(f"{summary['final_model']}/model.safetensors")
        runs[share] = (read_metrics(out), samples, weights)
    (m_s, samples_s, w_s), (m_r, samples_r, w_r) = runs[True], runs[False]
    assert len(m_s) == len(m_r) == 3 and all(row["kl"] > 0 for row in m_r[1:])
    for row_s, row_r in zip(m_s, m_r):
        for key in PHASE_KEYS:
            assert row_s[key] > 0 and row_r[key] > 0, key
        assert row_s["time_update"] < row_s["step_time"]
        for key in ("reward", "completion_length", "completion_length_max"):
            assert row_s[key] == row_r[key], key
        assert abs(row_s["kl"] - row_r["kl"]) <= 1e-4 * abs(row_r["kl"]) + 1e-9
    assert [s["completion"] for s in samples_s] == [s["completion"] for s in samples_r]
    before = load_file(tiny_ckpt / "model.safetensors")
    d_s = torch.cat([(w_s[k] - before[k]).flatten() for k in sorted(before)])
    d_r = torch.cat([(w_r[k] - before[k]).flatten() for k in sorted(before)])
    assert d_r.norm() > 0
    assert torch.nn.functional.cosine_similarity(d_s, d_r, dim=0) >= 0.9999
