"""Call TRL 1.16's own GRPOTrainer._compute_loss on given per-token log-probs / entropies.

A stand-in ``self`` carries exactly the attributes _compute_loss reads (the config values, a
one-process accelerator) and returns the given tensors from _get_per_token_logps_and_entropies,
so the test runs TRL's code path itself -- masks, ratios, clipping, KL, reductions, entropy
bonus -- on materialised logits, not a transcription of it.
"""
from __future__ import annotations

import types

import torch


class _OneProcess:
    num_processes = 1
    sync_gradients = True

    def pad_across_processes(self, x, dim=0, pad_index=0):
        return x

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x


def trl_compute_loss(logp, entropy, mask, advantages, *, old_logp=None, ref_logp=None, beta=0.0,
                     epsilon_low=0.2, epsilon_high=0.2, loss_type="grpo", max_completion_length=None,
                     num_items_in_batch=None, importance_sampling_level="token", delta=None,
                     use_bias_correction_kl=True, entropy_coef=0.0, top_entropy_quantile=1.0,
                     off_policy_mask_threshold=None, sampling_logp=None, importance_sampling_ratio=None,
                     sapo_temperature_pos=1.0, sapo_temperature_neg=1.05):
    """TRL's loss for one micro-batch with gradient_accumulation_steps = steps_per_generation = 1
    (so its dapo / cispo normaliser is num_items_in_batch itself)."""
    from trl import GRPOTrainer

    b, t = logp.shape
    args = types.SimpleNamespace(use_bias_correction_kl=use_bias_correction_kl, delta=delta,
                                 sapo_temperature_pos=sapo_temperature_pos,
                                 sapo_temperature_neg=sapo_temperature_neg, steps_per_generation=1)
    fake = types.SimpleNamespace(
        args=args, beta=beta, loss_type=loss_type, epsilon_low=epsilon_low, epsilon_high=epsilon_high,
        importance_sampling_level=importance_sampling_level, top_entropy_quantile=top_entropy_quantile,
        off_policy_mask_threshold=off_policy_mask_threshold, max_completion_length=max_completion_length or t,
        use_vllm=importance_sampling_ratio is not None, vllm_importance_sampling_correction=True,
        model=types.SimpleNamespace(training=True), current_gradient_accumulation_steps=1,
        accelerator=_OneProcess(), _entropy_bonus_enabled=entropy_coef != 0.0, use_adaptive_entropy=False,
        entropy_coef=entropy_coef, aux_loss_enabled=False,
        _metrics={"train": __import__("collections").defaultdict(list)})
    fake.get_high_entropy_mask = types.MethodType(GRPOTrainer.get_high_entropy_mask, fake)
    fake.get_off_policy_mask = GRPOTrainer.get_off_policy_mask
    ent = entropy if entropy is not None else torch.zeros_like(logp)
    fake._get_per_token_logps_and_entropies = lambda *a, **k: (logp, ent, None)
    inputs = {"prompt_ids": torch.zeros(b, 1, dtype=torch.long), "prompt_mask": torch.ones(b, 1),
              "completion_ids": torch.zeros(b, t, dtype=torch.long), "completion_mask": mask,
              "advantages": advantages}
    if old_logp is not None:
        inputs["old_per_token_logps"] = old_logp
    if ref_logp is not None:
        inputs["ref_per_token_logps"] = ref_logp
    if sampling_logp is not None:
        inputs["sampling_per_token_logps"] = sampling_logp
    if importance_sampling_ratio is not None:
        inputs["importance_sampling_ratio"] = importance_sampling_ratio
    nib = mask.sum() if num_items_in_batch is None else torch.as_tensor(float(num_items_in_batch))
    inputs["num_items_in_batch"] = nib
    loss = GRPOTrainer._compute_loss(fake, None, inputs)
    return loss, fake._metrics["train"]
