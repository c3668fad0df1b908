"""Real training and evaluation data in: records and their checks (records.py), chat prompts and
tensor encoding (prompts.py)."""
