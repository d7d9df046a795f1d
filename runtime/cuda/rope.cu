// RoPE kernel (see rope.cuh): one thread per rotated pair.
#include "runtime/cuda/common.cuh"
#include "runtime/cuda/rope.cuh"

namespace moe {
namespace {

constexpr int rope_threads = 128;

static __global__ void rope_kernel(float* x, int n_heads, int head_dim, int n_rot, int pos, float freq_base,
                                   bool neox) {
    const int half = n_rot / 2;
    const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= int64_t(n_heads) * half) return;
    const int h = int(idx / half), i = int(idx % half);
    float* v = x + int64_t(h) * head_dim;
    const double theta = double(pos) * pow(double(freq_base), -2.0 * i / double(n_rot));
    double s, c;
    sincos(theta, &s, &c);
    float* a = neox ? v + i : v + 2 * i;
    float* b = neox ? v + i + half : v + 2 * i + 1;
    const double x0 = *a, x1 = *b;
    // Products and sums rounded one by one, as the CPU computes them (no contraction into fused multiply-adds).
    *a = float(__dsub_rn(__dmul_rn(x0, c), __dmul_rn(x1, s)));
    *b = float(__dadd_rn(__dmul_rn(x0, s), __dmul_rn(x1, c)));
}

}  // namespace

void rope_cuda(float* x, int n_heads, int head_dim, int n_rot, int pos, float freq_base, bool neox,
               cudaStream_t stream) {
    MOE_KERNEL_CHECK(n_rot % 2 == 0 && n_rot <= head_dim && n_heads >= 0,
                     "rope: n_rot " + std::to_string(n_rot) + ", head_dim " + std::to_string(head_dim));
    const int64_t n = int64_t(n_heads) * (n_rot / 2);
    if (n == 0) return;
    rope_kernel<<<unsigned((n + rope_threads - 1) / rope_threads), rope_threads, 0, stream>>>(
        x, n_heads, head_dim, n_rot, pos, freq_base, neox);
    MOE_KERNEL_LAUNCHED();
}

}  // namespace moe
