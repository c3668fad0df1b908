#!/usr/bin/env bash
# One validation run of the LM-head ops on one H100, at most 8 minutes:
#   numerics (gpu-check list: bf16 / fp16 / fp32 / TF32 vs float64), bit-identical gradients,
#   forward and backward times of linear_logprobs and linear_grpo_loss at three shapes against
#   the bare GEMMs, naive torch, Liger and CCE (when installed), peak memory, the performance
#   model's prediction; report: $OUT/validate.json + $OUT/validate.md.
#
#   scripts/gpu_validate.sh [--out DIR] [--budget-s 480] [--dry-run] [...]
#   --dry-run   print the plan only (runs on a CPU; CI runs it)
# Extra arguments go to python -m stepgrpo_fast.gpu.validate (see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
export TRITON_DEFAULT_FP_FUSION="${TRITON_DEFAULT_FP_FUSION:-1}"
for arg in "$@"; do
  if [ "$arg" = "--dry-run" ]; then
    exec "$PYTHON" -m stepgrpo_fast.gpu.validate "$@"
  fi
done
unset TRITON_INTERPRET            # compiled kernels, never the interpreter
exec timeout 540 "$PYTHON" -m stepgrpo_fast.gpu.validate "$@"
