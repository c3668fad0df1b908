"""StepGRPOTrainer with TRL's peft_config: LoRA adapters train, no reference copy is built
(TRL scores the reference with the adapters disabled), and our fused head gives TRL's log-probs
for both the adapted policy and the adapter-disabled reference (lm_head in modules_to_save)."""

from __future__ import annotations

import math

import pytest
import torch
from test_trl_trainer import _zero_reward, grpo_args, text_dataset

peft = pytest.importorskip("peft")


@pytest.mark.slow
def test_step_grpo_trainer_with_peft_config(text_checkpoint, samples, tmp_path):
    from trl import GRPOTrainer

    from stepgrpo_fast.integrations.trl import StepGRPOTrainer

    def lora():
        return peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                               target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"],
                               task_type="CAUSAL_LM")

    kwargs = dict(model=str(text_checkpoint), reward_funcs=[_zero_reward],
                  train_dataset=text_dataset(samples))
    theirs = GRPOTrainer(args=grpo_args(tmp_path / "a", max_steps=1), peft_config=lora(), **kwargs)
    ours = StepGRPOTrainer(args=grpo_args(tmp_path / "b"), peft_config=lora(), **kwargs)
    assert ours.ref_model is None  # beta 0.04: the reference is the adapter-disabled model

    # move the adapters and the head copy so that policy and reference differ
    torch.manual_seed(0)
    with torch.no_grad():
        for (name, p), (_, q) in zip(ours.model.named_parameters(), theirs.model.named_parameters()):
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
                q.copy_(p)
    input_ids = torch.randint(1, ours.model.config.vocab_size, (3, 16))
    mask = torch.ones_like(input_ids)
    results = []
    for disabled in (False, True):
        per_trainer = []
        for trainer in (theirs, ours):
            ctx = trainer.model.disable_adapter() if disabled else torch.enable_grad()
            with ctx, torch.no_grad():
                logp, _, _ = trainer._get_per_token_logps_and_entropies(
                    trainer.model, input_ids, mask, 6
                )
            per_trainer.append(logp)
        torch.testing.assert_close(per_trainer[1], per_trainer[0], atol=1e-5, rtol=0)
        results.append(per_trainer[1])
    assert (results[0] - results[1]).abs().max() > 1e-3  # adapters on vs off really differ

    b_before = {n: p.detach().clone() for n, p in ours.model.named_parameters() if ".lora_B." in n}
    frozen = {n: p.detach().clone() for n, p in ours.model.named_parameters()
              if not p.requires_grad}
    ours.train()
    steps = [h for h in ours.state.log_history if "loss" in h]
    assert len(steps) == 2 and all(math.isfinite(h["kl"]) for h in steps)
    params = dict(ours.model.named_parameters())
    assert any(not torch.equal(v, params[n]) for n, v in b_before.items())
    assert all(torch.equal(v, params[n]) for n, v in frozen.items())  # the base never moves
