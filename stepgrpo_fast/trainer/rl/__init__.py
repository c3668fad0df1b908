"""StepGRPO online RL: rollouts (rollout.py), rewards and advantages (episodes.py), DAPO dynamic
sampling (dynamic_sampling.py) and the training step that strings them together (grpo_loop.py)."""
