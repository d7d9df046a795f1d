// Rotary position embedding on the GPU (the contract of backend::rope in runtime/backend.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace moe {

// Rotates the first n_rot dims of each of n_heads heads (head_dim apart) of x for position pos, in place. Angles,
// sines and cosines in double, as the CPU reference. neox: pairs (x[i], x[i + n_rot/2]) (rope_style::NEOX), else
// adjacent pairs (x[2i], x[2i+1]). Asynchronous on `stream`.
// PRECOND: n_rot even, n_rot <= head_dim.
void rope_cuda(float* x, int n_heads, int head_dim, int n_rot, int pos, float freq_base, bool neox,
               cudaStream_t stream);

}  // namespace moe
