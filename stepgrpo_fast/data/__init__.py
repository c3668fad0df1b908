"""Real training and evaluation data in (docs/data.md): sources (JSON/JSONL, Parquet,
save_to_disk, hub id: sources.py), layouts and column_map (layouts.py), the one image loader
(images.py), records and their checks (records.py, checks.py, `stepgrpo data check`: cli.py),
chat prompts and tensor encoding (prompts.py)."""
