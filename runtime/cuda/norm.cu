// RMSNorm kernel (see norm.cuh): one CTA per row; the sum of squares in double, reduced in a fixed order.
#include "runtime/cuda/common.cuh"
#include "runtime/cuda/norm.cuh"

namespace moe {
namespace {

constexpr int norm_threads = 256;

static __global__ void rmsnorm_kernel(const float* x, const float* w, float* y, int64_t n, float eps) {
    __shared__ double scratch[32];
    const float* xr = x + int64_t(blockIdx.x) * n;
    float* yr = y + int64_t(blockIdx.x) * n;
    double ss = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss = __fma_rn(double(xr[i]), double(xr[i]), ss);
    ss = kern::block_sum(ss, scratch);
    const float inv = float(1.0 / sqrt(ss / double(n) + double(eps)));
    // The CPU computes x * inv * w left to right, each product rounded: no fused multiply-add here.
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        yr[i] = w ? __fmul_rn(__fmul_rn(xr[i], inv), w[i]) : __fmul_rn(xr[i], inv);
}

}  // namespace

void rmsnorm_cuda(const float* x, const float* w, float* y, int64_t n, int64_t n_rows, float eps, cudaStream_t stream) {
    MOE_KERNEL_CHECK(n > 0 && n_rows >= 0 && n_rows < (int64_t(1) << 31),
                     "rmsnorm of " + std::to_string(n_rows) + " rows of " + std::to_string(n));
    if (n_rows == 0) return;
    rmsnorm_kernel<<<unsigned(n_rows), norm_threads, 0, stream>>>(x, w, y, n, eps);
    MOE_KERNEL_LAUNCHED();
}

}  // namespace moe
