"""Small shared helpers: input checks and Triton availability. Imports nothing from the package."""
from __future__ import annotations

import os
from functools import lru_cache

import torch


def triton_interpret() -> bool:
    """True when Triton kernels run in the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


TRITON_INSTALL_HINT = "pip install 'stepgrpo_fast[triton]'  (or: pip install triton)"


class TritonMissingError(ModuleNotFoundError, RuntimeError):
    """Raised where Triton is needed but not installed (a RuntimeError too, as it always was)."""


def require_triton(what: str = "the Triton kernels") -> None:
    """Raise TritonMissingError (name="triton", with the install command) unless triton imports."""
    if not triton_installed():
        raise TritonMissingError(f"{what} need the triton package: {TRITON_INSTALL_HINT}",
                                 name="triton")


@lru_cache(maxsize=None)
def triton_installed() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return False
    return True


def resolve_impl(impl: str, *tensors: torch.Tensor) -> str:
    """Pick "torch" or "triton" for ``impl`` in {"auto", "torch", "triton"}.

    auto: Triton for CUDA tensors when Triton is installed, torch otherwise.
    triton on CPU tensors is allowed only under TRITON_INTERPRET=1.
    """
    if impl not in ("auto", "torch", "triton"):
        raise ValueError(f"impl must be 'auto', 'torch' or 'triton', got {impl!r}")
    on_cuda = any(t is not None and t.is_cuda for t in tensors)
    if impl == "auto":
        return "triton" if (on_cuda and triton_installed()) else "torch"
    if impl == "triton":
        require_triton("impl='triton'")
        if not on_cuda and not triton_interpret():
            raise ValueError(
                "impl='triton' on CPU tensors runs only in the Triton interpreter: set "
                "TRITON_INTERPRET=1 before importing stepgrpo_fast, or use impl='torch'/'auto'"
            )
    return impl


def describe(name: str, t: torch.Tensor) -> str:
    """'name[shape] dtype device' for error messages."""
    return f"{name}{list(t.shape)} {str(t.dtype).replace('torch.', '')} on {t.device}"


def check_same_device(**tensors: torch.Tensor | None) -> None:
    present = {k: v for k, v in tensors.items() if v is not None}
    devices = {v.device for v in present.values()}
    if len(devices) > 1:
        raise ValueError("all tensors must be on one device, got "
                         + ", ".join(describe(k, v) for k, v in present.items()))
