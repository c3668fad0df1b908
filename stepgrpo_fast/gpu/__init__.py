"""GPU readiness tooling: ahead-of-time compile checks of every Triton kernel configuration
(aot.py, kernel_table.py), the GPU numerics checks (numerics.py, shared by pytest and
gpu-check) and the one-command validation on a CUDA machine (check.py).

Nothing here is imported by the ops; the ops know nothing of this package.
"""
