// Attention kernel (see attention.cuh). Layout of the work inside a head's CTA of 8 warps:
//  1. scores: warp w takes positions t = w, w + 8, ...; its lanes split the head dimension, a butterfly sums them;
//  2. max and softmax denominator over the scores, strided partials reduced warps-in-order;
//  3. values: 32 output dims at a time, one per lane (coalesced reads of a V row), warp w summing positions
//     t = w, w + 8, ...; the 8 warp partials are then added in warp order.
// Everything accumulates in double like the CPU reference, so the result differs from it only by the order of
// the additions.
#include "runtime/cuda/attention.cuh"
#include "runtime/cuda/common.cuh"

namespace moe {
namespace {

constexpr int att_warps = 8;

static __global__ void __launch_bounds__(32 * att_warps)
    attention_kernel(const float* __restrict__ q, const float* __restrict__ k_cache, const float* __restrict__ v_cache,
                     float* __restrict__ out, float* __restrict__ scores, int n_head_kv, int group, int hd_k, int hd_v,
                     int n_kv, float scale) {
    __shared__ double scratch[32];
    __shared__ double part[att_warps][32];
    const int h = blockIdx.x, kh = h / group;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const float* qh = q + int64_t(h) * hd_k;
    float* sc = scores + int64_t(h) * n_kv;

    for (int t = warp; t < n_kv; t += att_warps) {
        const float* k = k_cache + (int64_t(t) * n_head_kv + kh) * hd_k;
        double dot = 0.0;
        for (int i = lane; i < hd_k; i += 32) dot = __fma_rn(double(qh[i]), double(k[i]), dot);
        dot = kern::warp_sum(dot);
        if (lane == 0) sc[t] = float(dot * double(scale));
    }
    __syncthreads();  // the scores (global memory) are visible to the whole CTA after the barrier

    double mx = -INFINITY;
    for (int t = threadIdx.x; t < n_kv; t += blockDim.x) mx = max(mx, double(sc[t]));
    mx = kern::block_max(mx, scratch);
    double sum = 0.0;
    for (int t = threadIdx.x; t < n_kv; t += blockDim.x) sum += exp(double(sc[t]) - mx);
    sum = kern::block_sum(sum, scratch);

    float* o = out + int64_t(h) * hd_v;
    for (int i0 = 0; i0 < hd_v; i0 += 32) {
        const int i = i0 + lane;
        double acc = 0.0;
        if (i < hd_v)
            for (int t = warp; t < n_kv; t += att_warps)
                acc = __fma_rn(exp(double(sc[t]) - mx), double(v_cache[(int64_t(t) * n_head_kv + kh) * hd_v + i]), acc);
        part[warp][lane] = acc;
        __syncthreads();
        if (warp == 0 && i < hd_v) {
            double total = 0.0;
            for (int w = 0; w < att_warps; ++w) total += part[w][lane];
            o[i] = float(total / sum);
        }
        __syncthreads();
    }
}

}  // namespace

void attention_cuda(const float* q, const float* k_cache, const float* v_cache, float* out, float* scores, int n_head,
                    int n_head_kv, int hd_k, int hd_v, int n_kv, float scale, cudaStream_t stream) {
    MOE_KERNEL_CHECK(n_head_kv > 0 && n_head > 0 && n_head % n_head_kv == 0 && n_kv > 0 && hd_k > 0 && hd_v > 0,
                     "attention: n_head " + std::to_string(n_head) + ", n_head_kv " + std::to_string(n_head_kv) +
                         ", n_kv " + std::to_string(n_kv));
    attention_kernel<<<unsigned(n_head), 32 * att_warps, 0, stream>>>(q, k_cache, v_cache, out, scores, n_head_kv,
                                                                      n_head / n_head_kv, hd_k, hd_v, n_kv, scale);
    MOE_KERNEL_LAUNCHED();
}

}  // namespace moe
