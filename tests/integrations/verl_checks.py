"""Checks run INSIDE the isolated verl venv (scripts/setup_verl_venv.sh) by test_verl.py.

Usage: <verl-venv>/bin/python verl_checks.py IN.json OUT.json   (repository root on PYTHONPATH)
IN.json: {"completions": [...], "solutions": [...], "key_steps": [...]}.
OUT.json: what verl's own machinery produced, for test_verl.py to compare with the reward
functions and the op as seen from the main environment. Every check goes through verl's real
code paths: its import mechanisms, its reward managers, its fused-kernel model forward.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import numpy as np
import torch

# The overrides the README's "Scaling out" section gives to verl users (test_verl.py checks the doc lists them).
REWARD_OVERRIDES = [
    "reward.custom_reward_function.path=pkg://stepgrpo_fast.integrations.verl",
    "reward.custom_reward_function.name=compute_score",
    "+reward.custom_reward_function.reward_kwargs.mode=official",
]
FUSED_OVERRIDES = [
    "actor_rollout_ref.model.external_lib=stepgrpo_fast.integrations.verl",
    "actor_rollout_ref.model.use_fused_kernels=True",
    "actor_rollout_ref.model.fused_kernel_options.impl_backend=triton",
    '+ray_kwargs.ray_init.runtime_env.env_vars.STEPGRPO_VERL_FUSED_LOGPROBS="1"',
]


def tiny_checkpoint(out_dir: str) -> str:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer(["what is the area of the triangle"] * 4)
    tokenizer.save_pretrained(out_dir)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    Qwen2ForCausalLM(config).save_pretrained(out_dir)
    return out_dir


def loading_checks(work_dir: str) -> dict:
    """verl's own config composition and loaders, with the documented overrides."""
    import importlib

    import verl
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.utils.config import omega_conf_to_dataclass
    from verl.utils.import_utils import load_extern_object

    out = {"verl_version": verl.__version__, "torch_version": torch.__version__}
    fn = load_extern_object("pkg://stepgrpo_fast.integrations.verl", "compute_score")
    out["pkg_loader_module"] = fn.__module__

    model_dir = tiny_checkpoint(os.path.join(work_dir, "tiny_qwen2"))
    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        config = compose(
            "ppo_trainer",
            overrides=REWARD_OVERRIDES
            + FUSED_OVERRIDES
            + [f"actor_rollout_ref.model.path={model_dir}"],
        )
    ray_env = config.ray_kwargs.ray_init.runtime_env.env_vars
    out["ray_env_value"] = [
        ray_env.STEPGRPO_VERL_FUSED_LOGPROBS,
        type(ray_env.STEPGRPO_VERL_FUSED_LOGPROBS).__name__,
    ]
    wrapped = get_custom_reward_fn(config)  # reward_kwargs {"mode": "official"} merged by verl
    out["custom_reward_fn_official"] = wrapped(
        data_source="synthetic",
        solution_str="### The final answer is:\n3",
        ground_truth="3",
        extra_info={"key_steps": [["7"]]},
    )

    # the model config each verl worker builds imports external_lib; only the opt-in variable patches
    kernel = importlib.import_module("verl.utils.kernel.linear_cross_entropy")
    original = kernel.linear_cross_entropy
    os.environ.pop("STEPGRPO_VERL_FUSED_LOGPROBS", None)
    sys.modules.pop("stepgrpo_fast.integrations.verl", None)
    model_config = omega_conf_to_dataclass(config.actor_rollout_ref.model)
    out["model_config_class"] = type(model_config).__name__
    out["patched_without_opt_in"] = kernel.linear_cross_entropy is not original
    os.environ["STEPGRPO_VERL_FUSED_LOGPROBS"] = "1"
    sys.modules.pop("stepgrpo_fast.integrations.verl", None)
    omega_conf_to_dataclass(config.actor_rollout_ref.model)
    adapter = sys.modules["stepgrpo_fast.integrations.verl"]
    out["patched_with_opt_in"] = kernel.linear_cross_entropy is adapter.linear_cross_entropy
    adapter.unpatch_verl()
    out["restored"] = kernel.linear_cross_entropy is original
    os.environ.pop("STEPGRPO_VERL_FUSED_LOGPROBS", None)
    return out


def build_tokenizer(texts):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<pad>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")


def make_batch(tokenizer, completions, solutions, key_steps):
    """A verl DataProto as the rollout produces it: left-padded prompts, right-padded responses."""
    from verl import DataProto

    prompts = [tokenizer.encode(f"question {i}") for i in range(len(completions))]
    responses = [tokenizer.encode(c) or [tokenizer.pad_token_id] for c in completions]
    p_len, r_len = max(map(len, prompts)), max(map(len, responses))
    pad = tokenizer.pad_token_id
    prompt_ids = torch.tensor([[pad] * (p_len - len(p)) + p for p in prompts])
    response_ids = torch.tensor([r + [pad] * (r_len - len(r)) for r in responses])
    mask = torch.tensor(
        [
            [0] * (p_len - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (r_len - len(r))
            for p, r in zip(prompts, responses)
        ]
    )
    rows = len(completions)
    return DataProto.from_dict(
        tensors={
            "prompts": prompt_ids,
            "responses": response_ids,
            "attention_mask": mask,
            "input_ids": torch.cat([prompt_ids, response_ids], 1),
        },
        non_tensors={
            "data_source": np.array(["stepgrpo_synthetic"] * rows, dtype=object),
            "reward_model": np.array(
                [{"ground_truth": s, "style": "rule"} for s in solutions], dtype=object
            ),
            # key steps as numpy arrays: what a parquet round trip hands verl
            "extra_info": np.array(
                [
                    {
                        "key_steps": np.array([np.array(g, dtype=object) for g in ks], dtype=object)
                        if isinstance(ks, list)
                        else ks,
                        "index": i,
                    }
                    for i, ks in enumerate(key_steps)
                ],
                dtype=object,
            ),
        },
    )


def reward_checks(data: dict) -> dict:
    from omegaconf import OmegaConf
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager
    from verl.workers.reward_manager.batch import BatchRewardManager

    from stepgrpo_fast.integrations import verl as adapter

    completions, solutions, key_steps = data["completions"], data["solutions"], data["key_steps"]
    tokenizer = build_tokenizer(completions)
    batch = make_batch(tokenizer, completions, solutions, key_steps)
    out = {}
    for mode in ("paper", "official"):
        # batched: verl's BatchRewardManager calls compute_score_batch(data_sources=..., solution_strs=..., ...)
        manager = BatchRewardManager(
            tokenizer,
            num_examine=0,
            compute_score=adapter.compute_score_batch,
            mode=mode,
            num_threads=2,
        )
        result = manager(batch, return_dict=True)
        lengths = batch.batch["attention_mask"][:, batch.batch["prompts"].shape[1] :].sum(-1)
        tensor = result["reward_tensor"]
        out[f"batch_{mode}"] = {
            "token_level_scores": [
                float(tensor[i, int(lengths[i]) - 1]) for i in range(len(completions))
            ],
            "nonzero_per_row": [int((tensor[i] != 0).sum()) for i in range(len(completions))],
            "extra": {k: [float(x) for x in v] for k, v in result["reward_extra_info"].items()},
        }
        # per sample: verl's reward-loop NaiveRewardManager.run_single -> compute_score(...)
        config = OmegaConf.create(
            {
                "reward": {
                    "custom_reward_function": {
                        "path": "pkg://stepgrpo_fast.integrations.verl",
                        "name": "compute_score",
                        "reward_kwargs": {"mode": mode},
                    }
                }
            }
        )
        from verl.trainer.ppo.reward import get_custom_reward_fn

        naive = NaiveRewardManager(config, tokenizer, get_custom_reward_fn(config))
        singles = [
            asyncio.get_event_loop().run_until_complete(naive.run_single(batch[i : i + 1]))
            for i in range(len(completions))
        ]
        out[f"naive_{mode}"] = [
            {
                "score": float(s["reward_score"]),
                **{
                    k: float(v)
                    for k, v in s["reward_extra_info"].items()
                    if isinstance(v, (int, float))
                },
            }
            for s in singles
        ]
    out["decoded_equals_input"] = [
        tokenizer.decode(tokenizer.encode(c), skip_special_tokens=True) == c for c in completions
    ]
    return out


def logprob_checks() -> dict:
    from verl.utils.experimental.torch_functional import FusedLinearForPPO

    from stepgrpo_fast.integrations import verl as adapter

    adapter.patch_verl()
    from verl.utils.kernel.linear_cross_entropy import (
        linear_cross_entropy,  # resolved at call time, as verl does
    )

    out = {"patched": linear_cross_entropy is adapter.linear_cross_entropy}
    torch.manual_seed(0)
    b, t, h, v, temperature = (
        2,
        7,
        24,
        61,
        0.7,
    )  # h not a multiple of 128: verl's Triton kernel would refuse
    hidden = torch.randn(b, t, h, dtype=torch.float32) * 2
    weight = torch.randn(v, h, dtype=torch.float32) * 0.5
    labels = torch.randint(0, v, (b, t))
    g_logp, g_ent = torch.randn(b * t), torch.randn(b * t)

    def run(fn, reshape):
        hd = hidden.clone().requires_grad_()
        wt = weight.clone().requires_grad_()
        logp, ent = fn(hd, wt)
        logp, ent = reshape(logp), reshape(ent)
        ((logp * g_logp).sum() + (ent * g_ent).sum()).backward()
        return logp.detach(), ent.detach(), hd.grad, wt.grad, tuple(fn(hidden, weight)[0].shape)

    ours = run(
        lambda hd, wt: linear_cross_entropy(hd, wt, labels, temperature, "none"), lambda x: x
    )
    theirs = run(
        lambda hd, wt: FusedLinearForPPO(chunk_size=4).forward(hd, wt, labels, temperature),
        lambda x: x.reshape(-1),
    )
    out["shape_ours"], out["shape_verl_torch"] = list(ours[4]), list(theirs[4])
    for name, i in (("logp", 0), ("entropy", 1), ("grad_hidden", 2), ("grad_weight", 3)):
        out[f"max_abs_diff_{name}"] = float((ours[i] - theirs[i]).abs().max())
    out["logp_dtype"] = str(ours[0].dtype)
    logp_sum, _ = linear_cross_entropy(hidden, weight, labels, temperature, "sum")
    logp_mean, _ = linear_cross_entropy(hidden, weight, labels, temperature, "mean")
    out["sum_diff"] = float((logp_sum - theirs[0].sum()).abs())
    out["mean_diff"] = float((logp_mean - theirs[0].mean()).abs())
    try:
        linear_cross_entropy(hidden, weight, labels, temperature, "max")
        out["bad_reduction_error"] = None
    except ValueError as exc:
        out["bad_reduction_error"] = str(exc)

    # end to end: verl's fused-kernel model forward (triton backend -> our function) vs its torch backend
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from verl.models.transformers.monkey_patch import patch_forward_with_backends

    config = Qwen2Config(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    model = Qwen2ForCausalLM(config).eval()
    input_ids = torch.randint(0, 97, (2, 9))
    patch_forward_with_backends(model, use_fused_kernels=True, fused_kernels_backend="triton")
    fused = model(input_ids=input_ids, temperature=temperature, return_dict=True)
    patch_forward_with_backends(model, use_fused_kernels=True, fused_kernels_backend="torch")
    reference = model(input_ids=input_ids, temperature=temperature, return_dict=True)
    out["model_forward_logp_diff"] = float(
        (fused.log_probs.reshape(-1) - reference.log_probs.reshape(-1)).abs().max()
    )
    out["model_forward_entropy_diff"] = float(
        (fused.entropy.reshape(-1) - reference.entropy.reshape(-1)).abs().max()
    )
    return out


def main(argv):
    with open(argv[1]) as f:
        data = json.load(f)
    work_dir = os.path.dirname(os.path.abspath(argv[2]))
    results = {
        "loading": loading_checks(work_dir),
        "rewards": reward_checks(data),
        "logprobs": logprob_checks(),
    }
    with open(argv[2], "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
