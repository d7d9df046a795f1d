// MoE routing of one token on the GPU (the contract of backend::route in runtime/backend.h).
#pragma once

#include <cuda_runtime.h>

namespace moe {

// How the router logits become selection scores (the values of moe::gating_func, kept apart so this header
// needs no C++20 runtime headers).
enum class route_gating : int { SOFTMAX = 0, SIGMOID = 1, SOFTMAX_WEIGHT = 2 };

// logits (n_experts) -> probs (n_experts, workspace), ids (k) and weights (k), all device memory: top-k by
// selection score in rank order, ties to the lower id, a NaN never chosen over a number; then softmax over the
// selected (SOFTMAX_WEIGHT), renormalisation (norm_topk) and the scale, exactly as the CPU reference orders them.
// One warp; asynchronous on `stream`. PRECOND: 0 < k <= n_experts.
void route_cuda(const float* logits, float* probs, int n_experts, int k, route_gating gating, bool norm_topk,
                float weights_scale, int* ids, float* weights, cudaStream_t stream);

}  // namespace moe
