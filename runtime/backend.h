// The compute backend interface: the handful of operations the MoE forward pass is made of. The forward pass
// (runtime/forward.h) is written once against this; the CPU reference (runtime/backend_cpu.h) implements every
// operation plainly, the CUDA backend (runtime/backend_cuda.h) implements the same contract on device memory. A
// backend knows nothing of eviction or streaming: it is handed pointers to weights (resident, or an expert slot
// the cache pinned).
//
// Memory: every pointer an operation takes is in the backend's memory (host memory for the CPU backend, device
// memory for CUDA) unless its comment says "host". The forward pass allocates its KV cache and workspaces with
// alloc() at start-up, uploads inputs and downloads what the host must see (routing decisions, logits).
// Operations may run asynchronously (CUDA: in order on the backend's stream); download() and synchronize()
// return once everything issued before them has finished, so a host that reads results or frees memory the
// backend might still read (an unpinned expert slot) calls one of them first.
#pragma once

#include <cstdint>
#include <string_view>

#include "runtime/model_desc.h"
#include "runtime/tensor_types.h"

namespace moe {

class backend {
public:
    virtual ~backend() = default;
    virtual std::string_view name() const = 0;

    // --- Memory ---
    // true when backend memory is ordinary host memory: host data may then be handed to operations directly
    // (the CPU backend computes on the loaded weights without a copy).
    virtual bool host_memory() const = 0;
    // `bytes` of backend memory, zero-filled, aligned to at least 256 bytes. Throws moe::error when it cannot be
    // had (naming the size). Start-up only: the token loop never allocates.
    virtual void* alloc(uint64_t bytes) = 0;
    virtual void free(void* p) = 0;  // p from alloc(); nullptr is ignored
    // Host -> backend memory; returns once `src` may be reused.
    virtual void upload(void* dst, const void* src, uint64_t bytes) = 0;
    // Backend -> host memory; returns once every earlier operation has finished and `dst` holds the bytes.
    virtual void download(void* dst, const void* src, uint64_t bytes) = 0;
    // Within backend memory, ordered with the operations.
    virtual void copy(void* dst, const void* src, uint64_t bytes) = 0;
    // Returns once every operation issued so far has finished.
    virtual void synchronize() = 0;

    // --- Operations ---

    // Whether matvec, matmul and get_row take weights of type t (F32 always).
    virtual bool supports(tensor_type t) const = 0;
    // out = row `row` of W (n_rows x n_cols elements of type t) decoded to F32: the token embedding lookup.
    virtual void get_row(tensor_type t, const void* W, int64_t row, int64_t n_cols, float* out) = 0;

    // y = W x. W is row-major: n_rows rows of n_cols elements in type t (ggml ne0 = n_cols, ne1 = n_rows).
    // PRECOND: n_cols is a multiple of t's block size; n_cols <= the backend's max_cols for non-F32 types.
    virtual void matvec(tensor_type t, const void* W, const float* x, float* y, int64_t n_cols, int64_t n_rows) = 0;
    // Y = X W^T for n_tok tokens: X (n_tok, n_cols), Y (n_tok, n_rows). CPU: the same bits per token as matvec;
    // CUDA: the same within fp32 rounding (a batched product sums in another order).
    virtual void matmul(tensor_type t, const void* W, const float* X, float* Y, int64_t n_cols, int64_t n_rows,
                        int64_t n_tok) = 0;

    // y = x / sqrt(mean(x^2) + eps) * w   (x and y may alias). w == nullptr: no scale.
    virtual void rmsnorm(const float* x, const float* w, float* y, int64_t n, float eps) = 0;
    // rmsnorm of each of n_rows rows of n contiguous floats, all with the same w (per-head q/k norms).
    virtual void rmsnorm_rows(const float* x, const float* w, float* y, int64_t n, int64_t n_rows, float eps) {
        for (int64_t r = 0; r < n_rows; ++r) rmsnorm(x + r * n, w, y + r * n, n, eps);
    }

    // Rotates the first n_rot dims of each of n_heads heads (head_dim apart) for position pos, in place.
    // NORM: adjacent pairs (x[2i], x[2i+1]); NEOX: halves (x[i], x[i + n_rot/2]). theta_i = pos * base^(-2i/n_rot).
    virtual void rope(float* x, int n_heads, int head_dim, int n_rot, int pos, float freq_base, rope_style style) = 0;

    // Causal attention of one query token over n_kv cached positions, grouped-query: query head h reads kv head
    // h / (n_head / n_head_kv). q (n_head, hd_k); k_cache (n_kv, n_head_kv, hd_k); v_cache (n_kv, n_head_kv, hd_v);
    // out (n_head, hd_v); scores: workspace of n_head * n_kv floats (the backend may use it as it likes).
    // scale multiplies q.k (usually 1/sqrt(hd_k)).
    virtual void attention(const float* q, const float* k_cache, const float* v_cache, float* out, float* scores,
                           int n_head, int n_head_kv, int hd_k, int hd_v, int n_kv, float scale) = 0;
    // Causal attention of n_tok consecutive query tokens at once (a prefill chunk): token t is at position
    // pos0 + t and attends over cached positions 0 .. pos0 + t, i.e. it is attention() with n_kv = pos0 + t + 1.
    // q (n_tok, n_head, hd_k); out (n_tok, n_head, hd_v); the caches hold every position up to pos0 + n_tok - 1;
    // scores: workspace of n_head * (pos0 + n_tok) floats. Each token's output is what attention() gives it: the
    // same bits on the CPU; on CUDA the default below, one attention() per token in order.
    virtual void attention_batch(const float* q, const float* k_cache, const float* v_cache, float* out, float* scores,
                                 int n_head, int n_head_kv, int hd_k, int hd_v, int pos0, int n_tok, float scale) {
        for (int t = 0; t < n_tok; ++t)
            attention(q + int64_t(t) * n_head * hd_k, k_cache, v_cache, out + int64_t(t) * n_head * hd_v, scores,
                      n_head, n_head_kv, hd_k, hd_v, pos0 + t + 1, scale);
    }

    // Routing of one token: from the router logits (n_experts) to the top-k expert ids (in rank order: highest
    // selection score first, ties to the lower id) and their weights, per gating (softmax over all / sigmoid /
    // softmax over the selected), optional renormalisation of the selected weights and a scale.
    // probs: workspace of n_experts floats. ids and weights are backend memory too (download them to read them).
    virtual void route(const float* logits, float* probs, int n_experts, int k, gating_func gating, bool norm_topk,
                       float weights_scale, int* ids, float* weights) = 0;

    // out = silu(gate) * up, elementwise (out may alias gate or up).
    virtual void swiglu(const float* gate, const float* up, float* out, int64_t n) = 0;

    // out = sum_{r=0}^{k-1} w[r] * ys[r], accumulated in rank order r = 0, 1, ..., so the result never depends on
    // the order in which expert weights arrived. ys is a HOST array of k pointers into backend memory; w is backend
    // memory (route's weights). PRECOND: k <= max_weighted_k.
    static constexpr int max_weighted_k = 64;
    virtual void weighted_sum(const float* const* ys, const float* w, int k, float* out, int64_t n) = 0;

    // y += x
    virtual void add(float* y, const float* x, int64_t n) = 0;

    // y += sigmoid(gate_logit[0]) * x, the sigmoid in double rounded to float (Qwen2-MoE's shared expert gate).
    virtual void add_gated(float* y, const float* x, const float* gate_logit, int64_t n) = 0;
};

}  // namespace moe
