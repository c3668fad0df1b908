"""The one guarded Triton import of the kernel modules: ``triton`` and ``tl`` are the modules,
or None on an install without Triton (the package must import without it; the kernels are
then not defined and the launchers raise utils.TritonMissingError)."""
try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only on installs without triton
    triton = None
    tl = None

__all__ = ["triton", "tl"]
