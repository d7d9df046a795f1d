#!/usr/bin/env bash
# Builds the libFuzzer targets (GGUF and safetensors readers, the routing-trace reader, the command line's size
# parser) with clang in build-fuzz/ and runs each for a bounded time on a corpus seeded from tests/fixtures and
# fuzz/corpus/. Any crash leaves a reproducer in build-fuzz/artifacts/.
# Environment: FUZZ_SECONDS (per target, default 60), FUZZ_BUILD_DIR (default build-fuzz), FUZZ_JOBS (1),
# FUZZ_TARGETS (default "gguf_fuzz safetensors_fuzz trace_fuzz size_fuzz").
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
TARGETS=${FUZZ_TARGETS:-"gguf_fuzz safetensors_fuzz trace_fuzz size_fuzz"}
export CC=${CC:-clang} CXX=${CXX:-clang++}

cmake -S . -B "$BUILD_DIR" -DMOE_BUILD_FUZZ=ON -DMOE_BUILD_TESTS=OFF -DMOE_BUILD_BENCH=OFF -DMOE_CUDA=OFF \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
# shellcheck disable=SC2086
cmake --build "$BUILD_DIR" -j "${FUZZ_JOBS:-2}" --target $TARGETS

artifacts="$BUILD_DIR/artifacts"
mkdir -p "$artifacts"
status=0
for target in $TARGETS; do
    case "$target" in
        gguf_fuzz) pattern='*.gguf' ;;
        safetensors_fuzz) pattern='*.safetensors' ;;
        trace_fuzz) pattern='*.trace' ;;
        *) pattern='' ;;  # seeds from fuzz/corpus/ only
    esac
    # Seeds: the small fixtures (and broken ones) copied into a scratch corpus, plus what earlier runs kept.
    corpus="$BUILD_DIR/corpus/$target"
    mkdir -p "$corpus"
    if [ -n "$pattern" ]; then
        find tests/fixtures -name "$pattern" -size -1024k -exec cp -f {} "$corpus/" \; 2>/dev/null || true
    fi
    if [ -d "fuzz/corpus/$target" ]; then cp -f fuzz/corpus/"$target"/* "$corpus/" 2>/dev/null || true; fi
    echo "== $target: ${SECONDS_PER_TARGET}s, corpus $(find "$corpus" -type f | wc -l) files"
    log="$BUILD_DIR/$target.log"
    if ! "$BUILD_DIR/fuzz/$target" "$corpus" -max_total_time="$SECONDS_PER_TARGET" -max_len=1048576 \
            -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix="$artifacts/$target-" \
            >"$log" 2>&1; then
        echo "!! $target found a problem: see $log and $artifacts/"
        status=1
    fi
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|^Done|ERROR" "$log" || tail -5 "$log"
done
exit $status
