// The CUDA backend: every backend operation (runtime/backend.h) on device memory, on one stream of its own.
// Matrix products: F32 through cuBLAS (Sgemv / Sgemm, FP32 math, no TF32); F16, BF16 and every ggml block type
// the dequantizer knows through the fused dequant-matvec kernel (runtime/cuda/dequant.cuh) for one token and,
// for batches of at least matmul_min_tokens, dequantized in row chunks into a workspace and multiplied by Sgemm.
// The other operations are the kernels in runtime/cuda/ (norm, rope, attention, route, elementwise). Nothing
// sums in arrival order (no atomics), so the same inputs give the same bits on every run: the forward pass keeps
// its invariant (the same logits at every expert budget) on the GPU.
//
// Against the CPU reference: the elementwise operations and the weighted sum are bit-identical; RMSNorm, RoPE,
// attention and routing compute in double like the reference and differ only by the order of additions and the
// last bit of CUDA's double exp/pow/sin/cos; matrix products accumulate in fp32 (relative error ~1e-6 of
// sum |w x|). tests/runtime/backend_cuda_gpu_test.cpp states each tolerance.
#pragma once

#include <cstdint>
#include <memory>

#include "runtime/backend.h"

namespace moe {

struct backend_cuda_config {
    int device = 0;  // CUDA device index
    // Batched products with at least this many tokens use cuBLAS (after dequantizing a row chunk for non-F32
    // weights); smaller batches run the matrix-vector kernel once per token.
    int64_t matmul_min_tokens = 4;
    // Device workspace for dequantized row chunks of batched products (the chunk is as many rows as fit).
    uint64_t matmul_workspace_bytes = 32ull << 20;
    uint64_t cublas_workspace_bytes = 32ull << 20;  // handed to cuBLAS, so it never allocates in the token loop
};

// Whether this build and machine can run the CUDA backend (a CUDA build and at least one GPU).
bool cuda_backend_available();
// Whether the CUDA backend's products take weights of type t as stored (false in a build without CUDA).
bool cuda_backend_supports(tensor_type t);

// Creates the CUDA backend. Throws moe::error when the build has no CUDA, no GPU is present, the device index
// does not exist, cuBLAS cannot be loaded (it is opened on the first call, not linked), or its memory cannot be had
// (each named).
std::unique_ptr<backend> make_backend_cuda(const backend_cuda_config& cfg = {});

// Opens cuBLAS now, as the first make_backend_cuda does, and looks up every function the backend calls; throws
// moe::error naming what is missing (or that the build has no CUDA). Needs no GPU, so a machine with only the
// toolkit can check the library a GPU run would load.
void load_cuda_blas();

}  // namespace moe
