#!/usr/bin/env bash
# The one GPU script (see ../docs/gpu-results.md): on a machine with an NVIDIA GPU, build with CUDA for the
# local architecture, run the whole test suite (GPU tests included), then the streaming benchmarks, and write
# everything under $OUT (default ./gpu-out). Dependencies come from the system, or from a prefix of unpacked
# Debian packages in .deps/ (the lent GPU machines cannot reach a package registry).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }

if [ -d .deps/usr ]; then
    export CMAKE_PREFIX_PATH=$PWD/.deps/usr
    export LD_LIBRARY_PATH=$PWD/.deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
    export CPATH=$PWD/.deps/usr/include:${CPATH:-}
fi
log "date: $(date -u +%Y-%m-%dT%H:%MZ)"
nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.current,pcie.link.width.current \
    --format=csv | tee -a "$OUT/summary.txt"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
BUILD=build-gpu
cmake -S . -B $BUILD "${gen[@]}" -DMOE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH:-90} -DMOE_FATAL_WARNINGS=OFF \
    > "$OUT/configure.log" 2>&1 || { log "configure FAILED"; tail -40 "$OUT/configure.log"; exit 1; }
cmake --build $BUILD -j "$(nproc)" > "$OUT/build.log" 2>&1 || { log "build FAILED"; grep -m20 -B2 -A8 -E "error" "$OUT/build.log"; exit 1; }
log "build ok"
ctest --test-dir $BUILD --output-on-failure -j 8 > "$OUT/ctest.log" 2>&1
log "ctest: $(grep -E 'tests passed|tests failed' "$OUT/ctest.log")"
grep -E "^\s+[0-9]+ - .*(Failed|Timeout|Exception)" "$OUT/ctest.log" | head -20
ctest --test-dir $BUILD -L gpu -V > "$OUT/ctest_gpu.log" 2>&1
log "gpu tests: $(grep -cE '\[  PASSED  \]|\[       OK \]' "$OUT/ctest_gpu.log") ok lines, $(grep -c 'SKIPPED' "$OUT/ctest_gpu.log") skipped lines"

# Streaming benchmarks on a synthetic 2 GiB file of random bytes, experts of Qwen3-30B-A3B Q4_K size (~2.5 MiB)
# and Mixtral Q4_K size (~99 MiB capped by the file), cold page cache.
BENCH_FILE=${BENCH_FILE:-/tmp/moe-bench.bin}
[ -f "$BENCH_FILE" ] || head -c 2G /dev/urandom > "$BENCH_FILE"
for b in 2621440 50331648; do
    timeout 120 $BUILD/runtime/moe bench io --file "$BENCH_FILE" --expert-bytes $b --json > "$OUT/bench_io_$b.json" 2> "$OUT/bench_io_$b.err"
    log "bench io expert_bytes=$b: $(head -c 1500 "$OUT/bench_io_$b.json")"
done
for b in $BUILD/bench/*_bench; do
    [ -x "$b" ] || continue
    n=$(basename "$b")
    timeout 150 "$b" --benchmark_min_time=0.2 --benchmark_format=console > "$OUT/$n.txt" 2>&1
    log "$n: $(grep -cE '^BM_' "$OUT/$n.txt") benchmarks"
done
tail -n +1 "$OUT/summary.txt" >/dev/null
