#!/usr/bin/env bash
# The one GPU script (see ../docs/gpu-results.md): on a machine with an NVIDIA GPU, build with CUDA for the
# local architecture, run the GPU tests verbosely (CUDA backend ops against the CPU backend, the forward pass on
# the GPU against transformers and across budgets), `moe run` on both backends, the rest of the suite, then the
# kernel benchmarks (and with IO=1 the streaming benchmarks, with BENCHES="dequant_bench ..." others), and write
# everything under $OUT (default ./gpu-out) in at most 7 files: summary.txt (read this first), build.log,
# ctest.log, ctest_gpu.log, kernels_bench.txt, benches.txt, bench_io.txt. Ordered by value, each step under a
# timeout, so a short lease still returns the GPU tests. Dependencies come from the system, or from a prefix of
# unpacked Debian packages in .deps/ (the lent GPU machines cannot reach a package registry).
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
    > "$OUT/build.log" 2>&1 || { log "configure FAILED"; tail -40 "$OUT/build.log" | tee -a "$OUT/summary.txt"; exit 1; }
cmake --build $BUILD -j "$(nproc)" >> "$OUT/build.log" 2>&1 ||
    { log "build FAILED"; grep -m20 -B2 -A8 -E "error" "$OUT/build.log" | tee -a "$OUT/summary.txt"; exit 1; }
log "build ok"
# The GPU tests first (CUDA backend ops against the CPU backend, the forward pass on the GPU against transformers
# and across budgets, tiers on the device), verbosely: they are what this machine is for.
timeout ${GPU_TEST_TIMEOUT:-240} ctest --test-dir $BUILD -L gpu -V --timeout 200 > "$OUT/ctest_gpu.log" 2>&1
log "gpu tests (rc $?): $(grep -E 'tests passed|tests failed' "$OUT/ctest_gpu.log")"
grep -E "^[0-9]+: \[  FAILED  \]" "$OUT/ctest_gpu.log" | sort -u | head -30 | tee -a "$OUT/summary.txt"
# The GPU tests' own figures: forward-pass errors against transformers / the CPU, and the first failure lines.
grep -E "\[ cuda     \]" "$OUT/ctest_gpu.log" | sed 's/^[0-9]*: //' | head -40 | tee -a "$OUT/summary.txt"
grep -E -A3 "Failure$" "$OUT/ctest_gpu.log" | head -40 | tee -a "$OUT/summary.txt"

# `moe run` end to end on the GPU: the same greedy tokens as the CPU backend, with a budget below the experts.
# --vram-budget is the whole compute memory (resident + KV + workspaces + slots), and the CUDA backend's
# workspaces are larger than the CPU's: each backend gets its own minimum (from the refusal of a 1-byte budget)
# plus 2 slots of 12 KiB, so 4 of the 8 experts fit.
M=tests/fixtures/ref/mixtral-f32.gguf
for be in cpu cuda; do
    min=$($BUILD/runtime/moe run -m $M --prompt-ids 1,17,42,99,5,77,3,120 -n 16 --vram-budget 1 --backend $be 2>&1 |
        grep -o 'at least [^(]*([0-9]* bytes)' | grep -o '[0-9]* bytes' | grep -o '[0-9]*')
    timeout 60 $BUILD/runtime/moe run -m $M --prompt-ids 1,17,42,99,5,77,3,120 -n 16 --vram-budget $((${min:-0} + 24576)) \
        --backend $be --prefetch both --stats-json /tmp/run_$be.json > /tmp/run_$be.txt 2>&1
    log "moe run --backend $be (rc $?): $(tr -d ' \n' < /tmp/run_$be.json | grep -o '"tokens":\[[^]]*\]')"
    grep -E "^(load|decode|hit rate|loaded|memory|link)" /tmp/run_$be.txt | tee -a "$OUT/summary.txt"
done

# Without --vram-budget the CUDA backend sizes the expert budget from free VRAM and says how.
timeout 60 $BUILD/runtime/moe run -m $M --prompt-ids 1,17,42 -n 4 > /tmp/run_auto.txt 2>&1
log "moe run, no budget (rc $?): $(grep -E 'no --vram-budget|backend' /tmp/run_auto.txt | tr '\n' ' ' | cut -c1-600)"

# Everything but the GPU tests (on this machine `moe run` defaults to the CUDA backend, so the run/api checks run
# there too).
timeout ${CTEST_TIMEOUT:-150} ctest --test-dir $BUILD --output-on-failure -j 12 -LE gpu > "$OUT/ctest.log" 2>&1
log "ctest (non-GPU, rc $?): $(grep -E 'tests passed|tests failed' "$OUT/ctest.log")"
grep -E "^\s+[0-9]+ - .*(Failed|Timeout|Exception)" "$OUT/ctest.log" | head -20 | tee -a "$OUT/summary.txt"

# CUDA backend operations (GB/s and fraction of the measured device-to-device copy rate).
timeout ${KERNELS_TIMEOUT:-150} $BUILD/bench/kernels_bench --benchmark_min_time=${MIN_TIME:-0.05} \
    --benchmark_format=console > "$OUT/kernels_bench.txt" 2>&1
log "kernels_bench (rc $?): $(grep -cE 'GB/s=' "$OUT/kernels_bench.txt") benchmarks"
grep -E "^(copy_d2d|matvec/(F32|F16|Q8_0|Q4_K|Q6_K)|matmul/(F32|Q4_K)|attention|route|rmsnorm|weighted_sum)" \
    "$OUT/kernels_bench.txt" | cut -c1-160 | tee -a "$OUT/summary.txt"

# Streaming benchmarks (IO=1) on a synthetic 2 GiB file of random bytes, experts of Qwen3-30B-A3B Q4_K size
# (~2.5 MiB) and 48 MiB, cold page cache; and other benchmarks (BENCHES="dequant_bench ...").
if [ "${IO:-0}" = 1 ]; then
    BENCH_FILE=${BENCH_FILE:-/tmp/moe-bench.bin}
    [ -f "$BENCH_FILE" ] || head -c 2G /dev/urandom > "$BENCH_FILE"
    for b in 2621440 50331648; do
        echo "== expert_bytes=$b" >> "$OUT/bench_io.txt"
        timeout 120 $BUILD/runtime/moe bench io --file "$BENCH_FILE" --expert-bytes $b --json > /tmp/bench_io.json 2>> "$OUT/bench_io.txt"
        cat /tmp/bench_io.json >> "$OUT/bench_io.txt"
        log "bench io expert_bytes=$b: $(head -c 1500 /tmp/bench_io.json)"
    done
fi
for n in ${BENCHES:-}; do
    [ -x "$BUILD/bench/$n" ] || continue
    echo "== $n" >> "$OUT/benches.txt"
    timeout 150 "$BUILD/bench/$n" --benchmark_min_time=0.2 --benchmark_format=console >> "$OUT/benches.txt" 2>&1
    log "$n (rc $?) done"
done
