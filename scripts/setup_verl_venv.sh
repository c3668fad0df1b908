#!/usr/bin/env bash
# Create (or reuse) the isolated virtual environment in which the verl adapter tests run.
#
# verl pins its own transformers (<5.11) and pulls ray, so it cannot live next to the main
# environment (transformers 5.24, trl 1.16). The tests in tests/integrations/test_verl.py call
# this venv's python in a subprocess, with the repository on PYTHONPATH.
#
# Usage: bash scripts/setup_verl_venv.sh            (venv at $STEPGRPO_VERL_VENV or /work/venvs/verl)
# Idempotent: a venv in which `import verl, torch, math_verify` already works is left untouched.
set -euo pipefail

VENV="${STEPGRPO_VERL_VENV:-/work/venvs/verl}"
VERL_VERSION="${STEPGRPO_VERL_VERSION:-0.9.1}"
TORCH_VERSION="${STEPGRPO_VERL_TORCH:-2.13.0}"
PYTHON="${PYTHON:-python3}"

probe() {
    "$VENV/bin/python" - "$VERL_VERSION" <<'PY' >/dev/null 2>&1
import sys
import verl, torch, math_verify  # noqa: F401
sys.exit(0 if verl.__version__ == sys.argv[1] else 1)
PY
}

if [ -x "$VENV/bin/python" ] && probe; then
    echo "setup_verl_venv: $VENV already has verl $VERL_VERSION"
    exit 0
fi

start=$(date +%s)
"$PYTHON" -m venv "$VENV"
# torch FIRST and pinned: an unpinned torch requirement would pull a multi-GB CUDA build.
"$VENV/bin/pip" install -q "torch==$TORCH_VERSION"
# Base install + the math extra (math-verify, used by our rewards). No vllm/sglang/fsdp extras:
# they pin CUDA-only packages (flash-attn, cupy) and another torch.
"$VENV/bin/pip" install -q "verl[math]==$VERL_VERSION" pytest
if ! probe; then
    echo "setup_verl_venv: verl $VERL_VERSION does not import in $VENV" >&2
    "$VENV/bin/python" -c "import verl" >&2 || true
    exit 1
fi
echo "setup_verl_venv: created $VENV in $(( $(date +%s) - start )) s"
