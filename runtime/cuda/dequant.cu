// CUDA dequantization kernels (see dequant.cuh): a grid-stride kernel that writes every decoded element, and a
// matrix-vector product with one warp per row that decodes weights in registers and accumulates in fp32.
#include <string>

#include "runtime/cuda/dequant.cuh"
#include "runtime/cuda/dequant_block.cuh"

// common/error.h (via common/gpu.h) pulls in fmt, which nvcc 13 cannot compile; declare the abort helper here.
namespace moe {
[[noreturn]] void check_failed(const char* expr, const char* file, int line, const std::string& detail);
}
#define MOE_DQ_CHECK(cond, detail)                                                        \
    do {                                                                                  \
        if (!(cond)) ::moe::check_failed(#cond, __FILE__, __LINE__, std::string(detail)); \
    } while (0)
#define MOE_DQ_CUDA_CHECK(call)                                                                                    \
    do {                                                                                                           \
        cudaError_t _moe_err = (call);                                                                             \
        if (_moe_err != cudaSuccess) ::moe::check_failed(#call, __FILE__, __LINE__, cudaGetErrorString(_moe_err)); \
    } while (0)

namespace moe {
namespace {

constexpr int dequant_threads = 256;
constexpr int matvec_warps = 4;  // rows per CTA; small CTAs keep many rows in flight on 132 SMs

// One thread per decoder item; consecutive threads take consecutive items of a block, so neighbouring lanes
// read neighbouring bytes.
template <typename D>
static __global__ void dequantize_kernel(const uint8_t* __restrict__ src, float* __restrict__ dst, int64_t n_items) {
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n_items; i += stride) {
        const int64_t blk = i / D::items;
        const int item = int(i - blk * D::items);
        float v[D::outs];
        int idx[D::outs];
        D::decode(src + blk * D::block_bytes, item, v, idx);
        float* y = dst + blk * D::block_elems;
#pragma unroll
        for (int k = 0; k < D::outs; k++) y[idx[k]] = v[k];
    }
}

// PRECOND: blockDim.x == 32 * matvec_warps. Warp w of CTA c owns row c * matvec_warps + w; its lanes stride
// through the row's items: a warp covers 32 items (8 blocks of a 32-element type, 1-2 K-quant blocks) per step.
template <typename D>
static __global__ void matvec_kernel(const uint8_t* __restrict__ W, const float* __restrict__ x, float* __restrict__ y,
                                     int64_t n_cols, int64_t n_rows) {
    const int lane = threadIdx.x % 32;
    const int64_t row = int64_t(blockIdx.x) * matvec_warps + threadIdx.x / 32;
    if (row >= n_rows) return;  // whole warps leave together: no shuffle below runs with missing lanes
    const int64_t n_blocks = n_cols / D::block_elems;
    const uint8_t* w = W + row * n_blocks * D::block_bytes;
    const int64_t n_items = n_blocks * D::items;
    float acc = 0.0f;
    for (int64_t i = lane; i < n_items; i += 32) {
        const int64_t blk = i / D::items;
        float v[D::outs];
        int idx[D::outs];
        D::decode(w + blk * D::block_bytes, int(i - blk * D::items), v, idx);
        const float* xb = x + blk * D::block_elems;
#pragma unroll
        for (int k = 0; k < D::outs; k++) acc = fmaf(v[k], __ldg(xb + idx[k]), acc);
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xFFFFFFFFu, acc, off);
    if (lane == 0) y[row] = acc;
}

void check_args(tensor_type t, const void* src, int64_t n) {
    MOE_DQ_CHECK(dequantize_cuda_supported(t), "unsupported tensor type " + std::string(type_name(t)));
    const auto& info = type_info(t);
    MOE_DQ_CHECK(n >= 0 && n % info.block_elems == 0, std::to_string(n) + " elements of " + std::string(type_name(t)));
    const auto addr = reinterpret_cast<uintptr_t>(src);
    if (t == tensor_type::F32) MOE_DQ_CHECK(addr % 4 == 0, "F32 source must be 4-byte aligned");
    if (t == tensor_type::F16 || t == tensor_type::BF16) MOE_DQ_CHECK(addr % 2 == 0, "16-bit source must be aligned");
}

}  // namespace

bool dequantize_cuda_supported(tensor_type t) {
    return dq::dispatch(t, [](auto) {});
}

void dequantize_cuda(tensor_type t, const void* src_dev, float* dst_dev, int64_t n, cudaStream_t stream) {
    check_args(t, src_dev, n);
    if (n == 0) return;
    dq::dispatch(t, [&](auto d) {
        using D = decltype(d);
        const int64_t n_items = n / D::block_elems * D::items;
        const int64_t want = (n_items + dequant_threads - 1) / dequant_threads;
        const int blocks = int(want < 65536 ? want : 65536);  // grid-stride beyond that
        dequantize_kernel<D>
            <<<blocks, dequant_threads, 0, stream>>>(static_cast<const uint8_t*>(src_dev), dst_dev, n_items);
    });
    MOE_DQ_CUDA_CHECK(cudaGetLastError());
}

void dequant_matvec_cuda(tensor_type t, const void* W_dev, const float* x_dev, float* y_dev, int64_t n_cols,
                         int64_t n_rows, cudaStream_t stream) {
    check_args(t, W_dev, n_cols);
    MOE_DQ_CHECK(n_rows >= 0, std::to_string(n_rows) + " rows");
    if (n_rows == 0) return;
    const int64_t ctas = (n_rows + matvec_warps - 1) / matvec_warps;
    MOE_DQ_CHECK(ctas < (int64_t(1) << 31), std::to_string(n_rows) + " rows");
    dq::dispatch(t, [&](auto d) {
        using D = decltype(d);
        matvec_kernel<D><<<unsigned(ctas), 32 * matvec_warps, 0, stream>>>(static_cast<const uint8_t*>(W_dev), x_dev,
                                                                           y_dev, n_cols, n_rows);
    });
    MOE_DQ_CUDA_CHECK(cudaGetLastError());
}

}  // namespace moe
