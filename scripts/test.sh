#!/usr/bin/env bash
# The test command (README, CI): set-up if needed, configure, build, run every test with ctest.
# Environment: BUILD_DIR (default build), MOE_CMAKE_ARGS (extra configure flags), JOBS.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
args=(-DMOE_FATAL_WARNINGS=ON)
# One CUDA architecture keeps the build fast: the local GPU's where there is one, sm_90 elsewhere.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    args+=(-DCMAKE_CUDA_ARCHITECTURES=native)
fi
# shellcheck disable=SC2086
cmake -S . -B "$BUILD_DIR" "${args[@]}" ${MOE_CMAKE_ARGS:-}
cmake --build "$BUILD_DIR" -j "$JOBS"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS"
