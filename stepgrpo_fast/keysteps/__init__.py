"""Key-step extraction for StepRAR: reference reasoning ("###" layout) -> key_steps, groups of
equivalent forms that the reward matcher (stepgrpo_fast.rewards.match_key_steps) can find.

    extract_key_steps(reasoning, max_groups=6)     rule-based, no model (rules.py)
    ModelExtractor(path).extract(reasonings)       a local checkpoint proposes, the reasoning verifies
    extract_file(IN.jsonl, OUT.jsonl, ...)         a whole file (`stepgrpo keysteps`)
    surface_forms(text, kind)                      equivalent spellings of one step
    score_extraction(extracted, true)              recall / precision against known key steps

Only model.py imports torch / transformers, and only when a ModelExtractor is built.
"""
from .forms import surface_forms
from .jsonl import Summary, extract_file
from .quality import Quality, same_fact, score_extraction
from .rules import DEFAULT_MAX_GROUPS, extract_key_steps

__all__ = [
    "DEFAULT_MAX_GROUPS",
    "ModelExtractor",
    "Quality",
    "Summary",
    "extract_file",
    "extract_key_steps",
    "same_fact",
    "score_extraction",
    "surface_forms",
]


def __getattr__(name: str):
    if name == "ModelExtractor":
        from .model import ModelExtractor

        return ModelExtractor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
