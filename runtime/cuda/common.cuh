// Shared pieces of the compute kernels (norm.cu, rope.cu, attention.cu, route.cu, elementwise.cu): the launch
// check and deterministic reductions. Every reduction here adds in one fixed order (lane-strided partials, then
// a butterfly over the warp, then the warps in index order), never in arrival order, so a kernel gives the same
// bits on every run and the forward pass keeps invariant 2 of docs/invariants.md (the same logits at any expert
// budget) on the GPU.
#pragma once

#include <cuda_runtime.h>

#include <string>

// common/error.h pulls in fmt, which nvcc 13 cannot compile; declare the abort helper it defines instead.
namespace moe {
[[noreturn]] void check_failed(const char* expr, const char* file, int line, const std::string& detail);
}
#define MOE_KERNEL_CHECK(cond, detail)                                                    \
    do {                                                                                  \
        if (!(cond)) ::moe::check_failed(#cond, __FILE__, __LINE__, std::string(detail)); \
    } while (0)
// After every launch: a bad configuration is a bug, reported where it happened.
#define MOE_KERNEL_LAUNCHED()                                                                       \
    do {                                                                                            \
        cudaError_t _moe_err = cudaGetLastError();                                                  \
        if (_moe_err != cudaSuccess)                                                                \
            ::moe::check_failed("kernel launch", __FILE__, __LINE__, cudaGetErrorString(_moe_err)); \
    } while (0)

namespace moe::kern {

constexpr int max_block = 1024;

// Butterfly sum over the warp: every lane ends with the same value, in the same order on every run.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xFFFFFFFFu, v, off);
    return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
    for (int off = 16; off > 0; off /= 2) v = max(v, __shfl_xor_sync(0xFFFFFFFFu, v, off));
    return v;
}

// Sum over the CTA (blockDim.x a multiple of 32, at most 1024); every thread gets the result. `scratch` holds
// 32 values; the call ends with a barrier, so scratch may be reused right after.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    T total = 0;
    for (int w = 0; w < n_warps; ++w) total += scratch[w];  // every thread, warps in index order
    __syncthreads();
    return total;
}

template <typename T>
__device__ __forceinline__ T block_max(T v, T* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    v = warp_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    T m = scratch[0];
    for (int w = 1; w < n_warps; ++w) m = max(m, scratch[w]);
    __syncthreads();
    return m;
}

}  // namespace moe::kern
