#!/usr/bin/env bash
# Check the package as a user gets it: a NON-editable `pip install .` into a fresh venv, used from
# a folder outside the checkout (so nothing of the source tree is importable).
#
# Usage: bash scripts/check_wheel_install.sh [VENV]        (default .ci/venv-wheel, recreated)
#
# Asserts, from an empty temporary directory:
#   - stepgrpo_fast (and its C++ extension _C) import from the venv's site-packages;
#   - the checkout's top-level `bench` and `tests` folders are not installed as packages;
#   - `stepgrpo bench --quick --groups rewards` exits 0, prints its table and writes its report;
#   - `stepgrpo gpu-check` exits 2 (gpu/check.py NO_CUDA_EXIT) with its no-CUDA message, on a
#     machine without CUDA (on a CUDA machine this step is skipped).
# The install is built from a copy of the files git tracks or would track (a fresh clone's view),
# not from the checkout itself: setuptools never deletes stale files from an existing build/lib,
# which would otherwise be shipped in the wheel, and the shared checkout is left untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${1:-.ci/venv-wheel}
case $VENV in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
export STEPGRPO_BUILD_EXT=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_ROOT_USER_ACTION=ignore PYTHONNOUSERSITE=1
unset PYTHONPATH
start=$(date +%s)
step() { echo "== check_wheel_install [$(( $(date +%s) - start )) s] $*"; }
fail() { echo "check_wheel_install: FAIL: $*" >&2; exit 1; }

git rev-parse --is-inside-work-tree >/dev/null 2>&1 || fail "$ROOT is not a git checkout (the files to install are git's)"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/src" "$WORK/run"

step "fresh venv $VENV"
rm -rf "$VENV"
python3 -m venv "$VENV"
PY="$VENV/bin/python"
# torch FIRST and pinned (the README's order): an unpinned requirement pulls a CUDA build.
"$PY" -m pip install -q torch==2.13.0

step "copy of the tracked + untracked-not-ignored files in $WORK/src"
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -xf - -C "$WORK/src"

step "pip install $WORK/src (non-editable, STEPGRPO_BUILD_EXT=1)"
"$PY" -m pip install -q "$WORK/src"

cd "$WORK/run"
step "imports from site-packages (cwd $PWD)"
"$PY" - <<'PY' || fail "import checks"
import importlib.util
import sys

import stepgrpo_fast
import stepgrpo_fast._C as C

for mod in (stepgrpo_fast, C):
    assert "site-packages" in mod.__file__, f"{mod.__name__} imported from {mod.__file__}"
for name in ("bench", "tests"):
    spec = importlib.util.find_spec(name)
    assert spec is None, f"top-level package {name!r} is importable from {spec.origin}"
print("stepgrpo_fast from", stepgrpo_fast.__file__, "| _C from", C.__file__)
PY

step "stepgrpo bench --quick --groups rewards"
set +e
"$VENV/bin/stepgrpo" bench --quick --groups rewards 2>&1 | tee "$WORK/bench.log"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" -eq 0 ] || fail "stepgrpo bench exited $rc"
grep -q '^== rewards' "$WORK/bench.log" || fail "bench printed no '== rewards' table"
grep -Eq 'rewards .*p50 .*completions/s' "$WORK/bench.log" || fail "bench printed no timing rows"
ls bench_results/*-quick-rewards.md >/dev/null 2>&1 || fail "no bench_results/*-quick-rewards.md"

if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    step "CUDA is available: skipping the no-CUDA gpu-check assertion"
else
    step "stepgrpo gpu-check (no CUDA: expect exit 2 and the no-CUDA message)"
    set +e
    "$VENV/bin/stepgrpo" gpu-check >"$WORK/gpu.log" 2>&1
    rc=$?
    set -e
    cat "$WORK/gpu.log"
    [ "$rc" -eq 2 ] || fail "stepgrpo gpu-check exited $rc, expected 2 (NO_CUDA_EXIT)"
    grep -q 'no CUDA device is present' "$WORK/gpu.log" || fail "gpu-check: no no-CUDA message"
    [ ! -e gpu_check ] || fail "gpu-check created ./gpu_check although nothing was run"
fi

step "passed in $(( $(date +%s) - start )) s"
