#!/usr/bin/env bash
# Download into .whl/ the wheels that `stepgrpo gpu-check` needs on a lent GPU machine
# (python 3.12, torch 2.11+cu130, triton; no network there) but that its image lacks.
#
#   bash scripts/fetch_gpu_wheels.sh [DEST]      # DEST defaults to .whl
#
# What gpu-check imports there: torch, triton, numpy, pytest (all in the image, see
# /work/.library/device/KINDS.md "Python packages already there"), this repository (on
# PYTHONPATH, no build: the rewards fall back to Python without the C++ extension), and
# liger-kernel for the Liger baselines -- the one package missing. liger-kernel's own
# requirements (Requires-Dist without an extra) are torch and triton, both in the image; never
# carry torch or triton (the image's CUDA builds must stay).
# Follows the device README's recipe: binary wheels only, no dependencies, CPython 3.12,
# manylinux x86-64. The versions match this project's environment (setup.py / ENV notes).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PACKAGES=("liger-kernel==0.8.5")

rm -rf "$DEST"
mkdir -p "$DEST"
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$DEST" "${PACKAGES[@]}"

echo "== wheels in $DEST"
ls -l "$DEST"
echo "== their requirements (without extras); each must already be on the GPU image"
for wheel in "$DEST"/*.whl; do
    python3 - "$wheel" <<'EOF'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as wheel:
    meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    needs = [line.split(":", 1)[1].strip() for line in wheel.read(meta).decode().splitlines()
             if line.startswith("Requires-Dist:") and "extra ==" not in line]
print(f"{sys.argv[1]}: {', '.join(needs) or 'nothing'}")
EOF
done
if ! grep -qxF "/.whl/" .gitignore 2>/dev/null && ! grep -qxF ".whl/" .gitignore 2>/dev/null; then
    echo "note: .whl/ is not in .gitignore; add the line '/.whl/' so the wheels are never committed"
fi
