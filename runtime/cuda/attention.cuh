// Attention of one query token over the KV cache on the GPU (the contract of backend::attention in
// runtime/backend.h: grouped-query, causal by construction since the cache holds only past positions).
#pragma once

#include <cuda_runtime.h>

namespace moe {

// q (n_head, hd_k); k_cache (n_kv, n_head_kv, hd_k); v_cache (n_kv, n_head_kv, hd_v); out (n_head, hd_v);
// scores: workspace (n_head, n_kv). One CTA per query head; dot products, softmax and the weighted sum of values
// in double, each reduced in a fixed order (deterministic). Asynchronous on `stream`.
// PRECOND: n_head_kv > 0, n_head % n_head_kv == 0, n_kv > 0.
void attention_cuda(const float* q, const float* k_cache, const float* v_cache, float* out, float* scores, int n_head,
                    int n_head_kv, int hd_k, int hd_v, int n_kv, float scale, cudaStream_t stream);

}  // namespace moe
