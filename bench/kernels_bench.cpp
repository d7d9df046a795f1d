// Achieved bandwidth of every CUDA backend operation (runtime/backend_cuda.h), called through the backend
// interface exactly as the forward pass calls it: matvec and a 32-token matmul for every weight type, RMSNorm,
// RoPE, attention over 512 and 4096 cached positions, routing, SwiGLU, the weighted sum and add. Each figure is
// GB/s of the bytes the operation must move at least (weights + inputs + outputs; K and V for attention), with
// `of_peak`: that rate over the device-to-device copy rate measured first in the same run (copy_d2d, read +
// written bytes), the practical HBM ceiling. Timing: 20 back-to-back calls after a warm-up, then the backend's
// synchronize, host clock (so launch overhead counts, as it does in the token loop); random data, never zeros.
// Without a GPU it says so and measures nothing.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/gpu.h"
#include "runtime/backend_buffer.h"
#include "runtime/backend_cuda.h"
#include "tests/runtime/dequant_random.h"

namespace {

using moe::backend;
using moe::backend_array;
using moe::tensor_type;

const tensor_type k_types[] = {tensor_type::F32,  tensor_type::F16,    tensor_type::BF16,   tensor_type::Q4_0,
                               tensor_type::Q4_1, tensor_type::Q5_0,   tensor_type::Q5_1,   tensor_type::Q8_0,
                               tensor_type::Q2_K, tensor_type::Q3_K,   tensor_type::Q4_K,   tensor_type::Q5_K,
                               tensor_type::Q6_K, tensor_type::IQ4_NL, tensor_type::IQ4_XS, tensor_type::MXFP4};

// A Mixtral-8x7B expert matrix: 4096 columns x 14336 rows (30-235 MB by type, above the 50-60 MB L2).
constexpr int64_t k_cols = 4096, k_rows = 14336, k_reps = 8;

double g_peak_gbs = 0.0;  // copy_d2d's rate, once measured

// Made in main() and destroyed there before returning: a function-local static would be destroyed after the
// CUDA runtime has begun to unload, and destroying a cuBLAS handle then can crash.
backend* g_gpu = nullptr;
backend& gpu() {
    return *g_gpu;
}

backend_array<float> random_floats(size_t n, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> h(n);
    for (auto& v : h) v = nd(rng);
    backend_array<float> d(gpu(), n);
    gpu().upload(d.data(), h.data(), n * sizeof(float));
    return d;
}

// Times `op` (bytes moved per call) and reports GB/s and the fraction of the measured copy ceiling; returns the
// GB/s achieved.
template <typename F>
double time_op(benchmark::State& state, double bytes, F&& op) {
    op();
    op();
    gpu().synchronize();
    constexpr int per_iter = 20;
    double total_s = 0.0;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < per_iter; ++i) op();
        gpu().synchronize();
        const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
        state.SetIterationTime(dt.count() / per_iter);
        total_s += dt.count() / per_iter;
    }
    state.SetBytesProcessed(int64_t(double(state.iterations()) * bytes));
    state.counters["GB/s"] = benchmark::Counter(double(state.iterations()) * bytes / 1e9, benchmark::Counter::kIsRate);
    if (g_peak_gbs > 0)
        state.counters["of_peak"] =
            benchmark::Counter(double(state.iterations()) * bytes / 1e9 / g_peak_gbs, benchmark::Counter::kIsRate);
    return total_s > 0 ? double(state.iterations()) * bytes / 1e9 / total_s : 0.0;
}

constexpr size_t k_copy_floats = size_t(256) << 20;  // 1 GiB

// Device-to-device copy rate (bytes read + written), the practical HBM ceiling: 20 copies of 1 GiB after a warm-up.
double measure_copy_gbs() {
    backend_array<float> a(gpu(), k_copy_floats), b(gpu(), k_copy_floats);
    gpu().copy(b.data(), a.data(), k_copy_floats * 4);
    gpu().synchronize();
    constexpr int reps = 20;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) gpu().copy(b.data(), a.data(), k_copy_floats * 4);
    gpu().synchronize();
    const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    return 2.0 * double(k_copy_floats) * 4 * reps / 1e9 / dt.count();
}

void copy_d2d(benchmark::State& state) {
    backend_array<float> a(gpu(), k_copy_floats), b(gpu(), k_copy_floats);
    time_op(state, 2.0 * double(k_copy_floats) * 4, [&] { gpu().copy(b.data(), a.data(), k_copy_floats * 4); });
}

// Weights of type t, k_rows x k_cols: random host data for one k_reps-th, replicated on the device.
struct weights {
    backend_array<uint8_t> w;
    uint64_t bytes = 0;
    explicit weights(tensor_type t) {
        std::mt19937_64 rng(2);
        const auto part = moe::test::random_tensor(t, k_cols * k_rows / k_reps, rng);
        bytes = part.size() * k_reps;
        w = backend_array<uint8_t>(gpu(), bytes);
        for (int64_t r = 0; r < k_reps; ++r) gpu().upload(w.data() + r * part.size(), part.data(), part.size());
    }
};

void matvec(benchmark::State& state, tensor_type t) {
    weights W(t);
    auto x = random_floats(k_cols, 3);
    backend_array<float> y(gpu(), k_rows);
    time_op(state, double(W.bytes + 4 * (k_cols + k_rows)),
            [&] { gpu().matvec(t, W.w.data(), x.data(), y.data(), k_cols, k_rows); });
}

void matmul(benchmark::State& state, tensor_type t) {
    const int64_t n_tok = state.range(0);
    weights W(t);
    auto X = random_floats(size_t(k_cols * n_tok), 4);
    backend_array<float> Y(gpu(), size_t(k_rows * n_tok));
    time_op(state, double(W.bytes + 4 * n_tok * (k_cols + k_rows)),
            [&] { gpu().matmul(t, W.w.data(), X.data(), Y.data(), k_cols, k_rows, n_tok); });
    state.counters["GFLOP/s"] = benchmark::Counter(
        double(state.iterations()) * 2.0 * double(k_cols * k_rows * n_tok) / 1e9, benchmark::Counter::kIsRate);
}

void rmsnorm(benchmark::State& state) {
    const int64_t n = state.range(0), rows = state.range(1);
    auto x = random_floats(size_t(n * rows), 5), w = random_floats(size_t(n), 6);
    backend_array<float> y(gpu(), size_t(n * rows));
    time_op(state, double(4 * (2 * n * rows + n)), [&] {
        if (rows == 1)
            gpu().rmsnorm(x.data(), w.data(), y.data(), n, 1e-6f);
        else
            gpu().rmsnorm_rows(x.data(), w.data(), y.data(), n, rows, 1e-6f);
    });
}

void rope(benchmark::State& state) {
    const int heads = int(state.range(0)), hd = 128;
    auto x = random_floats(size_t(heads * hd), 7);
    time_op(state, double(2 * 4 * heads * hd),
            [&] { gpu().rope(x.data(), heads, hd, hd, 1234, 1e6f, moe::rope_style::NEOX); });
}

// Qwen3-30B-A3B's attention: 32 query heads, 4 KV heads, head dim 128.
void attention(benchmark::State& state) {
    const int n_kv = int(state.range(0)), H = 32, Hkv = 4, hd = 128;
    auto q = random_floats(size_t(H * hd), 8), k = random_floats(size_t(n_kv * Hkv * hd), 9),
         v = random_floats(size_t(n_kv * Hkv * hd), 10);
    backend_array<float> out(gpu(), size_t(H * hd)), scores(gpu(), size_t(H * n_kv));
    time_op(state, double(4 * (2 * n_kv * Hkv * hd + 2 * H * hd)), [&] {
        gpu().attention(q.data(), k.data(), v.data(), out.data(), scores.data(), H, Hkv, hd, hd, n_kv, 0.088f);
    });
}

void route(benchmark::State& state) {
    const int E = int(state.range(0)), K = int(state.range(1));
    auto logits = random_floats(size_t(E), 11);
    backend_array<float> probs(gpu(), size_t(E)), w(gpu(), size_t(K));
    backend_array<int> ids(gpu(), size_t(K));
    time_op(state, double(4 * (2 * E + 2 * K)), [&] {
        gpu().route(logits.data(), probs.data(), E, K, moe::gating_func::SOFTMAX, true, 1.0f, ids.data(), w.data());
    });
}

void swiglu(benchmark::State& state) {
    const int64_t n = state.range(0);
    auto g = random_floats(size_t(n), 12), u = random_floats(size_t(n), 13);
    backend_array<float> out(gpu(), size_t(n));
    time_op(state, double(3 * 4 * n), [&] { gpu().swiglu(g.data(), u.data(), out.data(), n); });
}

void weighted_sum(benchmark::State& state) {
    const int64_t n = state.range(0);
    const int k = int(state.range(1));
    std::vector<backend_array<float>> rows;
    std::vector<const float*> ptrs;
    for (int r = 0; r < k; ++r) rows.push_back(random_floats(size_t(n), 20 + uint64_t(r)));
    for (auto& r : rows) ptrs.push_back(r.data());
    auto w = random_floats(size_t(k), 14);
    backend_array<float> out(gpu(), size_t(n));
    time_op(state, double(4 * n * (k + 1)), [&] { gpu().weighted_sum(ptrs.data(), w.data(), k, out.data(), n); });
}

void add(benchmark::State& state) {
    const int64_t n = state.range(0);
    auto y = random_floats(size_t(n), 15), x = random_floats(size_t(n), 16);
    time_op(state, double(3 * 4 * n), [&] { gpu().add(y.data(), x.data(), n); });
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    if (!moe::cuda_backend_available()) {
        std::printf("kernels_bench: no GPU (%s): nothing to measure\n", moe::gpu_description().c_str());
        return 0;
    }
    std::setvbuf(stdout, nullptr, _IOLBF, 0);  // every line reaches a redirected file even if a later step dies
    std::printf("kernels_bench on %s\n", moe::gpu_description().c_str());
    std::unique_ptr<backend> be = moe::make_backend_cuda();
    g_gpu = be.get();
    // The ceiling is measured first, outside Google Benchmark, so every benchmark can report its fraction of it
    // (a second RunSpecifiedBenchmarks() after ClearRegisteredBenchmarks() crashes Debian's libbenchmark 1.7.1).
    g_peak_gbs = measure_copy_gbs();
    benchmark::RegisterBenchmark("copy_d2d", copy_d2d)->UseManualTime();
    for (tensor_type t : k_types) {
        const std::string name(moe::type_name(t));
        benchmark::RegisterBenchmark(("matvec/" + name).c_str(), [t](benchmark::State& s) {
            matvec(s, t);
        })->UseManualTime();
        benchmark::RegisterBenchmark(("matmul/" + name).c_str(), [t](benchmark::State& s) { matmul(s, t); })
            ->Arg(32)
            ->UseManualTime();
    }
    benchmark::RegisterBenchmark("rmsnorm", rmsnorm)->Args({4096, 1})->Args({128, 32})->UseManualTime();
    benchmark::RegisterBenchmark("rope", rope)->Arg(32)->UseManualTime();
    benchmark::RegisterBenchmark("attention", attention)->Arg(512)->Arg(4096)->UseManualTime();
    benchmark::RegisterBenchmark("route", route)->Args({128, 8})->Args({8, 2})->UseManualTime();
    benchmark::RegisterBenchmark("swiglu", swiglu)->Arg(14336)->Arg(1 << 22)->UseManualTime();
    benchmark::RegisterBenchmark("weighted_sum", weighted_sum)->Args({4096, 8})->Args({1 << 22, 8})->UseManualTime();
    benchmark::RegisterBenchmark("add", add)->Arg(4096)->Arg(1 << 22)->UseManualTime();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    be.reset();
    g_gpu = nullptr;
    return 0;
}
