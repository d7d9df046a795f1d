// RMSNorm on the GPU (the contract of backend::rmsnorm / rmsnorm_rows in runtime/backend.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace moe {

// For each of n_rows rows of n floats: y = x / sqrt(mean(x^2) + eps) * w (w == nullptr: no scale); x and y may
// alias. The sum of squares is in double, as in the CPU reference; one CTA per row. Asynchronous on `stream`.
void rmsnorm_cuda(const float* x, const float* w, float* y, int64_t n, int64_t n_rows, float eps, cudaStream_t stream);

}  // namespace moe
