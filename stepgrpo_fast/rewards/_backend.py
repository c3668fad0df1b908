"""Loads the C++ extension ``stepgrpo_fast._C`` unless STEPGRPO_DISABLE_EXT=1.

``EXT`` is the module (or None) and ``BACKEND`` is "cpp" or "python". Nothing here imports torch.
"""
from __future__ import annotations

import os
from types import ModuleType

BACKEND_ENV = "STEPGRPO_DISABLE_EXT"


def _load() -> ModuleType | None:
    if os.environ.get(BACKEND_ENV, "0").strip() not in ("", "0"):
        return None
    try:
        from stepgrpo_fast import _C
    except ImportError:
        return None
    return _C


EXT: ModuleType | None = _load()
BACKEND: str = "cpp" if EXT is not None else "python"
