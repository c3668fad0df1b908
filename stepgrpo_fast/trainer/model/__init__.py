"""The policy model: loading checkpoints (loading.py), LoRA adapters (lora.py), the fused policy
objective and freezing (objective.py), the model a run trains (policy_loading.py) and writing
weights out (export.py)."""
