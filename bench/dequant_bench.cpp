// Dequantization throughput per tensor type, in GB/s of weight bytes read: the CPU reference (dequantize_row)
// always; with a GPU also the CUDA dequant kernel, the fused dequant-matvec, and a device-to-device copy as the
// measured HBM ceiling to compare against. GPU figures use CUDA events around 10 back-to-back launches after a
// warm-up, on random weights (finite scales) spread over more bytes than the L2 holds. Without a GPU the GPU
// benchmarks are simply not registered.
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "common/gpu.h"
#include "runtime/dequant.h"
#include "tests/runtime/dequant_random.h"

#ifdef MOE_HAVE_CUDA
#include <cuda_runtime.h>

#include "runtime/cuda/dequant.cuh"
#endif

namespace {

using moe::tensor_type;

const tensor_type k_types[] = {tensor_type::F32,  tensor_type::F16,    tensor_type::BF16,   tensor_type::Q4_0,
                               tensor_type::Q4_1, tensor_type::Q5_0,   tensor_type::Q5_1,   tensor_type::Q8_0,
                               tensor_type::Q2_K, tensor_type::Q3_K,   tensor_type::Q4_K,   tensor_type::Q5_K,
                               tensor_type::Q6_K, tensor_type::IQ4_NL, tensor_type::IQ4_XS, tensor_type::MXFP4};

// CPU: one 1 Mi-element row (fits in L2/L3 with its output, so this is decode speed, not DRAM speed).
void cpu_dequant(benchmark::State& state, tensor_type t) {
    const int64_t n = int64_t(1) << 20;
    std::mt19937_64 rng(1);
    const auto raw = moe::test::random_tensor(t, n, rng);
    std::vector<float> out(static_cast<size_t>(n));
    for (auto _ : state) {
        moe::dequantize_row(t, raw.data(), out.data(), n);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(int64_t(state.iterations() * raw.size()));
    state.counters["elems/s"] = benchmark::Counter(double(state.iterations()) * double(n), benchmark::Counter::kIsRate);
}

#ifdef MOE_HAVE_CUDA
#define BENCH_CUDA(call)                                                                       \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != cudaSuccess) {                                                               \
            state.SkipWithError((std::string(#call) + ": " + cudaGetErrorString(e_)).c_str()); \
            return;                                                                            \
        }                                                                                      \
    } while (0)

// A matrix shaped like Mixtral's experts stacked: 4096 columns x 32768 rows = 128 Mi weights (68-512 MiB of
// weights, above H100's 50 MiB L2). Random host data for one eighth, replicated on the device.
constexpr int64_t gpu_cols = 4096, gpu_rows = 32768, gpu_reps = 8;

struct gpu_matrix {
    void* w = nullptr;
    uint64_t bytes = 0;
    bool ok = false;
    explicit gpu_matrix(tensor_type t) {
        std::mt19937_64 rng(2);
        const auto part = moe::test::random_tensor(t, gpu_cols * gpu_rows / gpu_reps, rng);
        bytes = part.size() * gpu_reps;
        if (cudaMalloc(&w, bytes) != cudaSuccess) return;
        for (int64_t r = 0; r < gpu_reps; r++)
            if (cudaMemcpy(static_cast<uint8_t*>(w) + r * part.size(), part.data(), part.size(),
                           cudaMemcpyHostToDevice) != cudaSuccess)
                return;
        ok = true;
    }
    ~gpu_matrix() { cudaFree(w); }
};

// Times `launch` (10 launches per timed iteration) with CUDA events; the first call is a warm-up.
template <typename F>
void time_launches(benchmark::State& state, cudaStream_t stream, F&& launch) {
    cudaEvent_t start, stop;
    BENCH_CUDA(cudaEventCreate(&start));
    BENCH_CUDA(cudaEventCreate(&stop));
    launch();
    launch();
    BENCH_CUDA(cudaStreamSynchronize(stream));
    constexpr int per_iter = 10;
    for (auto _ : state) {
        BENCH_CUDA(cudaEventRecord(start, stream));
        for (int i = 0; i < per_iter; i++) launch();
        BENCH_CUDA(cudaEventRecord(stop, stream));
        BENCH_CUDA(cudaEventSynchronize(stop));
        float ms = 0;
        BENCH_CUDA(cudaEventElapsedTime(&ms, start, stop));
        state.SetIterationTime(double(ms) / 1e3 / per_iter);
    }
    BENCH_CUDA(cudaGetLastError());
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
}

void gpu_dequant(benchmark::State& state, tensor_type t) {
    gpu_matrix m(t);
    const int64_t n = gpu_cols * gpu_rows;
    float* out = nullptr;
    if (!m.ok || cudaMalloc(&out, size_t(n) * 4) != cudaSuccess) return state.SkipWithError("cudaMalloc failed");
    cudaStream_t stream;
    BENCH_CUDA(cudaStreamCreate(&stream));
    time_launches(state, stream, [&] { moe::dequantize_cuda(t, m.w, out, n, stream); });
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(m.bytes));  // weight bytes read
    state.counters["traffic_GB/s"] = benchmark::Counter(double(state.iterations()) * double(m.bytes + 4 * n) / 1e9,
                                                        benchmark::Counter::kIsRate);  // + floats written
    cudaStreamDestroy(stream);
    cudaFree(out);
}

void gpu_matvec(benchmark::State& state, tensor_type t) {
    gpu_matrix m(t);
    float *x = nullptr, *y = nullptr;
    if (!m.ok || cudaMalloc(&x, gpu_cols * 4) != cudaSuccess || cudaMalloc(&y, gpu_rows * 4) != cudaSuccess)
        return state.SkipWithError("cudaMalloc failed");
    std::vector<float> hx(gpu_cols);
    std::mt19937 rng(3);
    std::normal_distribution<float> nd;
    for (auto& v : hx) v = nd(rng);
    BENCH_CUDA(cudaMemcpy(x, hx.data(), gpu_cols * 4, cudaMemcpyHostToDevice));
    cudaStream_t stream;
    BENCH_CUDA(cudaStreamCreate(&stream));
    time_launches(state, stream, [&] { moe::dequant_matvec_cuda(t, m.w, x, y, gpu_cols, gpu_rows, stream); });
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(m.bytes));  // weight bytes read
    cudaStreamDestroy(stream);
    cudaFree(x);
    cudaFree(y);
}

// The ceiling: a 512 MiB device-to-device copy; bytes_per_second counts read + written bytes.
void gpu_copy_d2d(benchmark::State& state) {
    const size_t bytes = size_t(512) << 20;
    void *a = nullptr, *b = nullptr;
    if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess)
        return state.SkipWithError("cudaMalloc failed");
    BENCH_CUDA(cudaMemset(a, 1, bytes));
    cudaStream_t stream;
    BENCH_CUDA(cudaStreamCreate(&stream));
    time_launches(state, stream, [&] { cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream); });
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(2 * bytes));
    cudaStreamDestroy(stream);
    cudaFree(a);
    cudaFree(b);
}
#endif

}  // namespace

int main(int argc, char** argv) {
    for (tensor_type t : k_types) {
        benchmark::RegisterBenchmark(("cpu_dequant/" + std::string(moe::type_name(t))).c_str(),
                                     [t](benchmark::State& s) { cpu_dequant(s, t); });
    }
#ifdef MOE_HAVE_CUDA
    if (moe::gpu_count() > 0) {
        benchmark::RegisterBenchmark("gpu_copy_d2d", gpu_copy_d2d)->UseManualTime();
        for (tensor_type t : k_types) {
            const std::string name(moe::type_name(t));
            benchmark::RegisterBenchmark(("gpu_dequant/" + name).c_str(), [t](benchmark::State& s) {
                gpu_dequant(s, t);
            })->UseManualTime();
            benchmark::RegisterBenchmark(("gpu_matvec/" + name).c_str(), [t](benchmark::State& s) {
                gpu_matvec(s, t);
            })->UseManualTime();
        }
    }
#endif
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
