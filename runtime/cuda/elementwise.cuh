// Elementwise operations of the forward pass on the GPU (backend::swiglu, weighted_sum, add, add_gated in
// runtime/backend.h). Each rounds exactly as the CPU reference does (products and sums rounded one by one, no
// fused multiply-add), so their results are bit-identical to it; swiglu and add_gated also match it up to the
// last bit of CUDA's double exp.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace moe {

// out = silu(gate) * up (out may alias gate or up).
void swiglu_cuda(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream);

// out = sum_{r<k} w[r] * ys[r], accumulated in rank order. ys: a HOST array of k device pointers (passed to the
// kernel by value); w: device memory. PRECOND: k <= weighted_sum_max_k.
constexpr int weighted_sum_max_k = 64;
void weighted_sum_cuda(const float* const* ys, const float* w, int k, float* out, int64_t n, cudaStream_t stream);

// y += x
void add_cuda(float* y, const float* x, int64_t n, cudaStream_t stream);

// y += sigmoid(gate_logit[0]) * x (gate_logit: device memory)
void add_gated_cuda(float* y, const float* x, const float* gate_logit, int64_t n, cudaStream_t stream);

}  // namespace moe
