"""Loads the C++ extension ``stepgrpo_fast._C`` unless STEPGRPO_DISABLE_EXT=1.

``EXT`` is the module (or None) and ``BACKEND`` is "cpp" or "python". ``EXT_OFFICIAL`` is True when
the extension may also serve official mode: its Unicode tables (csrc/unicode_tables.inc, from
Python's own str behaviour) are of this interpreter's Unicode version; otherwise official mode
runs the Python twin (exact by construction) and a warning says so once. Nothing here imports
torch.
"""
from __future__ import annotations

import os
import unicodedata
import warnings
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


def _official_ok(ext: ModuleType | None) -> bool:
    if ext is None:
        return False
    version = getattr(ext, "UNICODE_VERSION", None)
    if version == unicodedata.unidata_version:
        return True
    warnings.warn(f"stepgrpo_fast._C has Unicode {version} tables but this Python uses Unicode "
                  f"{unicodedata.unidata_version}: official-mode rewards run in pure Python "
                  f"(rebuild after `python csrc/gen_unicode_tables.py` for the C++ speed)",
                  RuntimeWarning, stacklevel=2)
    return False


EXT_OFFICIAL: bool = _official_ok(EXT)
