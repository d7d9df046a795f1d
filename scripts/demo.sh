#!/usr/bin/env bash
# The README's demo: build `moe` (incrementally), describe a tiny Mixtral-shaped Q8_0 model and plan its experts
# into a VRAM budget that holds the resident weights, the KV cache and workspaces plus two expert slots, and a host
# budget with room for two more, then replay a synthetic routing trace of the same shape through the cache
# policies to show what such a cache would hit and move. Then generate with `moe run` on the tiny Mixtral that
# carries a tokenizer, with a budget that leaves 4 expert slots for its 8 experts after the resident weights, KV
# cache and workspaces (so experts are evicted and streamed back from the file; the summary's `memory` line shows
# the breakdown, its `link` line what the file reads achieved, its `prefetch` line what the prefetcher guessed
# and brought), record the routing as a trace and replay that trace through the policies. Environment: BUILD_DIR (default build).
# --vram-budget is the whole compute memory; `--backend cpu` makes it RAM, also on a machine with a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${BUILD_DIR:-build}
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    scripts/setup.sh
    cmake -S . -B "$BUILD_DIR" >/dev/null
fi
cmake --build "$BUILD_DIR" -j "$(nproc)" --target moe >/dev/null
moe="$BUILD_DIR/runtime/moe"
model=tests/fixtures/mixtral-tiny-q8_0.gguf
trace=$(mktemp /tmp/moe-demo-XXXXXX.trace)
run_trace=$(mktemp /tmp/moe-demo-run-XXXXXX.trace)
trap 'rm -f "$trace" "$run_trace"' EXIT

echo "\$ moe inspect $model --vram-budget 308K --ctx 64 --backend cpu --host-budget 16K"
"$moe" inspect "$model" --vram-budget 308K --ctx 64 --backend cpu --host-budget 16K
echo
echo "\$ moe trace --synthetic --layers 2 --experts 4 --top-k 2 --tokens 2000 -o demo.trace   # synthetic routing"
"$moe" trace --synthetic --layers 2 --experts 4 --top-k 2 --tokens 2000 --skew 1.0 --reuse 0.5 -o "$trace"
echo "\$ moe sim --trace demo.trace --capacity 4 --model $model   # 2 VRAM + 2 host slots above, as one cache"
"$moe" sim --trace "$trace" --capacity 4 --model "$model"
echo
gen_model=tests/fixtures/mixtral-tiny-f32.gguf
echo "\$ moe run -m $gen_model -p \"Hello world\" -n 24 --vram-budget 380K --backend cpu --prefetch both --trace run.trace   # 4 slots of 24 KiB for 8 experts"
"$moe" run -m "$gen_model" -p "Hello world" -n 24 --vram-budget 380K --backend cpu --prefetch both --trace "$run_trace" 2>&1
echo "\$ moe sim --trace run.trace --capacity 4 --model $gen_model   # the same routing, replayed offline"
"$moe" sim --trace "$run_trace" --capacity 4 --model "$gen_model"
