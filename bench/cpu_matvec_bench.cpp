// CPU matrix-vector throughput per tensor type and ISA (runtime/cpu_dot.h), on one thread, in GB/s of weight
// bytes read: the reference kernel against the AVX2 and AVX-512 kernels this CPU has, at two sizes -- weights
// that fit in L2 (~1 MiB: decode speed) and weights far beyond the last-level cache (~1 GiB: the DRAM-bound
// case of real expert matrices) -- with memcpy over the same bytes as the machine's copy ceiling.
// Rows of 4096 columns (Mixtral's hidden size). ISAs the CPU lacks are not registered. Rates are per CPU second
// (single-threaded work), so a busy machine distorts them less than wall time would.
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "runtime/cpu_dot.h"
#include "runtime/dequant.h"
#include "tests/runtime/dequant_random.h"

namespace {

using moe::cpu_isa;
using moe::tensor_type;

constexpr int64_t k_cols = 4096;
constexpr int64_t k_small_bytes = int64_t(1) << 20, k_large_bytes = int64_t(1) << 30;

const tensor_type k_types[] = {tensor_type::F32,  tensor_type::F16,  tensor_type::BF16, tensor_type::Q8_0,
                               tensor_type::Q4_0, tensor_type::Q4_K, tensor_type::Q5_K, tensor_type::Q6_K};

uint64_t row_bytes(tensor_type t) {
    const auto& ti = moe::type_info(t);
    return uint64_t(k_cols / ti.block_elems) * ti.block_bytes;
}

// About `bytes` of random weights (finite scales): 16 MiB of random rows replicated, so a 1 GiB matrix is
// quick to build; replication does not help the caches at this size.
std::vector<uint8_t> make_weights(tensor_type t, int64_t bytes, int64_t& rows) {
    rows = std::max<int64_t>(1, bytes / int64_t(row_bytes(t)));
    const int64_t unique_rows =
        std::min<int64_t>(rows, std::max<int64_t>(1, (int64_t(16) << 20) / int64_t(row_bytes(t))));
    std::mt19937_64 rng(1);
    const auto unique = moe::test::random_tensor(t, unique_rows * k_cols, rng);
    std::vector<uint8_t> w(size_t(rows) * row_bytes(t));
    for (size_t off = 0; off < w.size(); off += unique.size())
        std::memcpy(w.data() + off, unique.data(), std::min(unique.size(), w.size() - off));
    return w;
}

void matvec(benchmark::State& state, tensor_type t, cpu_isa isa, int64_t bytes) {
    int64_t rows = 0;
    const auto w = make_weights(t, bytes, rows);
    std::vector<float> x(static_cast<size_t>(k_cols)), y(static_cast<size_t>(rows));
    std::mt19937 rng(2);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto& v : x) v = normal(rng);
    const moe::dot_kernel dot = moe::cpu_dot_kernel(t, isa);
    const uint64_t rb = row_bytes(t);
    for (auto _ : state) {
        for (int64_t r = 0; r < rows; ++r) y[size_t(r)] = dot(w.data() + uint64_t(r) * rb, x.data(), k_cols);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(w.size()));
    state.counters["weights/s"] =
        benchmark::Counter(double(state.iterations()) * double(rows) * double(k_cols), benchmark::Counter::kIsRate);
}

// The copy ceiling: bytes copied per second (each byte read once and written once).
void copy(benchmark::State& state, int64_t bytes) {
    std::vector<uint8_t> src(size_t(bytes), 1), dst(size_t(bytes), 0);
    for (auto _ : state) {
        std::memcpy(dst.data(), src.data(), src.size());
        benchmark::DoNotOptimize(dst.data());
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(int64_t(state.iterations()) * bytes);
}

const bool registered = [] {
    for (int64_t bytes : {k_small_bytes, k_large_bytes}) {
        const std::string size = bytes == k_small_bytes ? "1MiB" : "1GiB";
        benchmark::RegisterBenchmark(("memcpy/" + size).c_str(), copy, bytes);
        for (tensor_type t : k_types)
            for (cpu_isa isa : {cpu_isa::REF, cpu_isa::AVX2, cpu_isa::AVX512}) {
                if (!moe::cpu_isa_available(isa)) continue;
                const std::string name =
                    "matvec/" + std::string(moe::type_name(t)) + "/" + std::string(moe::cpu_isa_name(isa)) + "/" + size;
                benchmark::RegisterBenchmark(name.c_str(), matvec, t, isa, bytes);
            }
    }
    return true;
}();

}  // namespace

BENCHMARK_MAIN();
