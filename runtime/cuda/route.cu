// Routing kernel (see route.cuh): one warp. Scores in double as the CPU reference (the softmax denominator summed
// lane-strided, then a butterfly: a fixed order), top-k by k rounds of a warp arg-max whose comparison is the
// CPU's scan order written as a total order, then the post-processing of the k weights on lane 0, sequentially,
// in the CPU's order.
#include "runtime/cuda/common.cuh"
#include "runtime/cuda/route.cuh"

namespace moe {
namespace {

// Does candidate (a, ia) win over (b, ib)? The CPU's scan keeps the first maximum and lets a number replace a
// NaN: numbers before NaNs, larger first, ties (and NaN against NaN) to the lower id. ib < 0: no candidate yet.
__device__ __forceinline__ bool beats(float a, int ia, float b, int ib) {
    if (ia < 0) return false;
    if (ib < 0) return true;
    const bool na = isnan(a), nb = isnan(b);
    if (na != nb) return nb;
    if (!na && a != b) return a > b;
    return ia < ib;
}

static __global__ void route_kernel(const float* logits, float* probs, int n_experts, int k, int gating, bool norm_topk,
                                    float weights_scale, int* ids, float* weights) {
    extern __shared__ unsigned char taken[];  // (n_experts)
    const int lane = threadIdx.x;
    if (gating == int(route_gating::SOFTMAX)) {
        double mx = -INFINITY;
        for (int e = lane; e < n_experts; e += 32) mx = max(mx, double(logits[e]));
        mx = kern::warp_max(mx);
        double sum = 0.0;
        for (int e = lane; e < n_experts; e += 32) sum += exp(double(logits[e]) - mx);
        sum = kern::warp_sum(sum);
        for (int e = lane; e < n_experts; e += 32) probs[e] = float(exp(double(logits[e]) - mx) / sum);
    } else if (gating == int(route_gating::SIGMOID)) {
        for (int e = lane; e < n_experts; e += 32) probs[e] = float(1.0 / (1.0 + exp(-double(logits[e]))));
    } else {
        for (int e = lane; e < n_experts; e += 32) probs[e] = logits[e];
    }
    for (int e = lane; e < n_experts; e += 32) taken[e] = 0;
    __syncwarp();
    for (int r = 0; r < k; ++r) {
        float best = 0.0f;
        int best_id = -1;
        for (int e = lane; e < n_experts; e += 32)
            if (!taken[e] && beats(probs[e], e, best, best_id)) best = probs[e], best_id = e;
#pragma unroll
        for (int off = 16; off > 0; off /= 2) {
            const float ob = __shfl_xor_sync(0xFFFFFFFFu, best, off);
            const int oid = __shfl_xor_sync(0xFFFFFFFFu, best_id, off);
            if (beats(ob, oid, best, best_id)) best = ob, best_id = oid;
        }
        if (lane == 0) {
            ids[r] = best_id;
            weights[r] = best;
            taken[best_id] = 1;
        }
        __syncwarp();
    }
    if (lane != 0) return;
    if (gating == int(route_gating::SOFTMAX_WEIGHT)) {
        double mx = -INFINITY, sum = 0.0;
        for (int r = 0; r < k; ++r) mx = max(mx, double(weights[r]));
        for (int r = 0; r < k; ++r) sum += exp(double(weights[r]) - mx);
        for (int r = 0; r < k; ++r) weights[r] = float(exp(double(weights[r]) - mx) / sum);
    }
    if (norm_topk) {
        double sum = 0.0;
        for (int r = 0; r < k; ++r) sum += weights[r];
        sum = max(sum, 6.103515625e-5);  // llama.cpp's floor, as the CPU reference
        for (int r = 0; r < k; ++r) weights[r] = float(weights[r] / sum);
    }
    if (weights_scale != 0.0f && weights_scale != 1.0f)
        for (int r = 0; r < k; ++r) weights[r] = __fmul_rn(weights[r], weights_scale);
}

}  // namespace

void route_cuda(const float* logits, float* probs, int n_experts, int k, route_gating gating, bool norm_topk,
                float weights_scale, int* ids, float* weights, cudaStream_t stream) {
    MOE_KERNEL_CHECK(k > 0 && k <= n_experts && n_experts <= 48 * 1024,
                     "route: top-" + std::to_string(k) + " of " + std::to_string(n_experts) + " experts");
    route_kernel<<<1, 32, size_t(n_experts), stream>>>(logits, probs, n_experts, k, int(gating), norm_topk,
                                                       weights_scale, ids, weights);
    MOE_KERNEL_LAUNCHED();
}

}  // namespace moe
