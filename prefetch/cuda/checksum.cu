// Device checksum kernel (see checksum.cuh): a grid-stride sum of mixed words, reduced per warp with shuffles
// and added to one global word with a 64-bit atomic (addition mod 2^64 is order-independent, so the result is
// exactly the CPU reference's).
#include <string>

#include "prefetch/checksum.h"
#include "prefetch/cuda/checksum.cuh"

// common/gpu.h's MOE_CUDA_CHECK pulls in common/error.h and with it fmt, whose headers nvcc 13 cannot compile
// in C++20 mode (constexpr errors in fmt v9's core.h); this file declares the same abort helper instead.
namespace moe {
[[noreturn]] void check_failed(const char* expr, const char* file, int line, const std::string& detail);
}
#define MOE_CU_CHECK(cond)                                               \
    do {                                                                 \
        if (!(cond)) ::moe::check_failed(#cond, __FILE__, __LINE__, ""); \
    } while (0)
#define MOE_CU_CUDA_CHECK(call)                                                                                    \
    do {                                                                                                           \
        cudaError_t _moe_err = (call);                                                                             \
        if (_moe_err != cudaSuccess) ::moe::check_failed(#call, __FILE__, __LINE__, cudaGetErrorString(_moe_err)); \
    } while (0)

namespace moe {

namespace {

__global__ void checksum64_kernel(const uint64_t* __restrict__ words, uint64_t n_words, const uint8_t* tail,
                                  uint32_t tail_bytes, unsigned long long* sum) {
    uint64_t acc = 0;
    const uint64_t stride = uint64_t(gridDim.x) * blockDim.x;
    for (uint64_t i = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n_words; i += stride)
        acc += checksum_word(words[i], i);
    if (tail_bytes && blockIdx.x == 0 && threadIdx.x == 0) {
        uint64_t w = 0;
        for (uint32_t b = 0; b < tail_bytes; b++) w |= uint64_t(tail[b]) << (8 * b);
        acc += checksum_word(w, n_words);
    }
    for (int off = 16; off > 0; off /= 2) acc += __shfl_down_sync(0xffffffffu, acc, off);
    if ((threadIdx.x & 31) == 0) atomicAdd(sum, static_cast<unsigned long long>(acc));
}

}  // namespace

void checksum64_accumulate(const void* d_data, uint64_t bytes, unsigned long long* d_sum, cudaStream_t stream) {
    MOE_CU_CHECK(reinterpret_cast<uintptr_t>(d_data) % 8 == 0);
    const uint64_t n_words = bytes / 8;
    const int threads = 256;
    const uint64_t want_blocks = (n_words + threads - 1) / threads;
    const int blocks = int(want_blocks < 1 ? 1 : (want_blocks > 4096 ? 4096 : want_blocks));
    checksum64_kernel<<<blocks, threads, 0, stream>>>(static_cast<const uint64_t*>(d_data), n_words,
                                                      static_cast<const uint8_t*>(d_data) + n_words * 8,
                                                      uint32_t(bytes % 8), d_sum);
    MOE_CU_CUDA_CHECK(cudaGetLastError());
}

uint64_t checksum64_device(const void* d_data, uint64_t bytes, cudaStream_t stream) {
    unsigned long long* d_sum = nullptr;
    MOE_CU_CUDA_CHECK(cudaMalloc(&d_sum, sizeof(*d_sum)));
    MOE_CU_CUDA_CHECK(cudaMemsetAsync(d_sum, 0, sizeof(*d_sum), stream));
    checksum64_accumulate(d_data, bytes, d_sum, stream);
    unsigned long long h = 0;
    MOE_CU_CUDA_CHECK(cudaMemcpyAsync(&h, d_sum, sizeof(h), cudaMemcpyDeviceToHost, stream));
    MOE_CU_CUDA_CHECK(cudaStreamSynchronize(stream));
    MOE_CU_CUDA_CHECK(cudaFree(d_sum));
    return uint64_t(h) + bytes * checksum_len_mult;
}

}  // namespace moe
