"""Adapters that plug stepgrpo_fast into other RL engines (imported lazily; optional extras).

    stepgrpo_fast.integrations.trl   -- TRL 1.16.*: reward functions (make_reward_funcs) and
                                        StepGRPOTrainer (GRPOTrainer with linear_logprobs as LM head)
    stepgrpo_fast.integrations.verl  -- verl 0.9.1: compute_score / compute_score_batch and the
                                        opt-in fused-kernel patch (patch_verl)

Nothing is imported here: ``import stepgrpo_fast.integrations.verl`` must not need TRL and the
reverse. See the README's "Scaling out" section for commands and config keys.
"""
