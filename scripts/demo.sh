#!/usr/bin/env bash
# The README's demo: build `moe` if needed, then describe a tiny Mixtral-shaped Q8_0 model and plan its experts
# into a VRAM budget that holds the resident weights plus two expert slots and a host budget with room for two
# more, so half of the experts would stream from the file. Environment: BUILD_DIR (default build).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}
if [ ! -x "$BUILD_DIR/runtime/moe" ]; then
    scripts/setup.sh
    cmake -S . -B "$BUILD_DIR"
    cmake --build "$BUILD_DIR" -j "$(nproc)" --target moe
fi
model=tests/fixtures/mixtral-tiny-q8_0.gguf
echo "\$ moe inspect $model --vram-budget 180K --host-budget 14K"
"$BUILD_DIR/runtime/moe" inspect "$model" --vram-budget 180K --host-budget 14K
