// CUDA dequantization and the fused dequantize-and-multiply matrix-vector product, for every type the CPU
// reference (runtime/dequant.h) handles. The launchers are plain C++ declarations, callable from any .cpp.
// The per-block decoders the kernels use live in runtime/cuda/dequant_block.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/tensor_types.h"

namespace moe {

// Whether the launchers below handle t (the same set as dequant_supported in runtime/dequant.h).
bool dequantize_cuda_supported(tensor_type t);

// dst_dev[0, n) = the n elements stored in type t at src_dev, decoded to float32; asynchronous on `stream`.
// Bit-identical to moe::dequantize_row.
// PRECOND: dequantize_cuda_supported(t); n a multiple of type_info(t).block_elems; F32 sources 4-byte and
// F16/BF16 sources 2-byte aligned (block types may start at any address).
void dequantize_cuda(tensor_type t, const void* src_dev, float* dst_dev, int64_t n, cudaStream_t stream);

// y_dev[r] = sum_i W[r][i] * x_dev[i] for a row-major matrix of n_rows rows of n_cols elements each (ggml ne0 =
// n_cols, ne1 = n_rows), rows packed back to back in type t. One warp per row, fp32 accumulation: weights are
// decoded in registers and never written out. Asynchronous on `stream`.
// PRECOND: as dequantize_cuda with n = n_cols; x_dev has n_cols floats and y_dev n_rows floats.
void dequant_matvec_cuda(tensor_type t, const void* W_dev, const float* x_dev, float* y_dev, int64_t n_cols,
                         int64_t n_rows, cudaStream_t stream);

}  // namespace moe
