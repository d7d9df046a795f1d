// Elementwise kernels (see elementwise.cuh): grid-stride loops, one element per thread per step.
#include "runtime/cuda/common.cuh"
#include "runtime/cuda/elementwise.cuh"

namespace moe {
namespace {

constexpr int ew_threads = 256;

unsigned ew_blocks(int64_t n) {
    const int64_t want = (n + ew_threads - 1) / ew_threads;
    return unsigned(want < 65536 ? want : 65536);
}

struct expert_rows {
    const float* p[weighted_sum_max_k];
};

static __global__ void swiglu_kernel(const float* gate, const float* up, float* out, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const double g = gate[i];
        out[i] = __fmul_rn(float(__ddiv_rn(g, __dadd_rn(1.0, exp(-g)))), up[i]);
    }
}

static __global__ void weighted_sum_kernel(expert_rows ys, const float* w, int k, float* out, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        float acc = 0.0f;
        for (int r = 0; r < k; ++r) acc = __fadd_rn(acc, __fmul_rn(w[r], ys.p[r][i]));
        out[i] = acc;
    }
}

static __global__ void add_kernel(float* y, const float* x, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        y[i] = __fadd_rn(y[i], x[i]);
}

static __global__ void add_gated_kernel(float* y, const float* x, const float* gate_logit, int64_t n) {
    const float s = float(1.0 / (1.0 + exp(-double(gate_logit[0]))));
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        y[i] = __fadd_rn(y[i], __fmul_rn(s, x[i]));
}

}  // namespace

void swiglu_cuda(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream) {
    if (n <= 0) return;
    swiglu_kernel<<<ew_blocks(n), ew_threads, 0, stream>>>(gate, up, out, n);
    MOE_KERNEL_LAUNCHED();
}

void weighted_sum_cuda(const float* const* ys, const float* w, int k, float* out, int64_t n, cudaStream_t stream) {
    MOE_KERNEL_CHECK(k >= 0 && k <= weighted_sum_max_k, "weighted_sum of " + std::to_string(k) + " rows");
    if (n <= 0) return;
    expert_rows rows{};
    for (int r = 0; r < k; ++r) rows.p[r] = ys[r];
    weighted_sum_kernel<<<ew_blocks(n), ew_threads, 0, stream>>>(rows, w, k, out, n);
    MOE_KERNEL_LAUNCHED();
}

void add_cuda(float* y, const float* x, int64_t n, cudaStream_t stream) {
    if (n <= 0) return;
    add_kernel<<<ew_blocks(n), ew_threads, 0, stream>>>(y, x, n);
    MOE_KERNEL_LAUNCHED();
}

void add_gated_cuda(float* y, const float* x, const float* gate_logit, int64_t n, cudaStream_t stream) {
    if (n <= 0) return;
    add_gated_kernel<<<ew_blocks(n), ew_threads, 0, stream>>>(y, x, gate_logit, n);
    MOE_KERNEL_LAUNCHED();
}

}  // namespace moe
