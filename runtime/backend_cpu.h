// The CPU backend: plain reference implementations of every backend operation (one loop per formula, float
// math with double accumulation in the reductions). It is the oracle the CUDA kernels and later fast paths
// (SIMD) are tested against, and the compute of the "no GPU" product mode. Matrix-vector products split their rows
// over a thread pool; each row is still one sequential reduction, so results are bit-identical for any number
// of threads. Attention splits its (token, head) pairs, and for long contexts blocks of positions, over the same
// pool; how a (token, head) result is computed depends only on its position (see attention_batch), so it too is
// bit-identical for any number of threads and any batch split.
#pragma once

#include <memory>
#include <vector>

#include "runtime/backend.h"

namespace moe {

class thread_pool;

// The routing arithmetic of the CPU backend's route(), for host code that routes itself (a routing override):
// the selection scores of every expert from the router logits (probs: n_experts), and the weights of the chosen
// ids in rank order (softmax over the selected for SOFTMAX_WEIGHT, renormalisation, scale), as route() gives them.
void routing_scores(const float* logits, float* probs, int n_experts, gating_func gating);
void routing_weights(const float* probs, const int* ids, int k, gating_func gating, bool norm_topk, float weights_scale,
                     float* weights);

// Whether the CPU backend's products take weights of type t as stored.
bool backend_cpu_supports(tensor_type t);

class backend_cpu final : public backend {
public:
    // max_cols: the widest row a quantized/half matrix may have (one row per thread is decoded into a workspace
    // allocated here, so the token loop allocates nothing). n_threads: 1 = the calling thread only; 0 = one per
    // hardware thread. min_parallel_work: products with fewer multiply-adds stay on the calling thread (below
    // ~16K a hand-off costs more than it saves; tests set 1 to force the pool).
    explicit backend_cpu(int64_t max_cols = 0, int n_threads = 1, int64_t min_parallel_work = 1 << 14);
    ~backend_cpu() override;
    int n_threads() const;
    std::string_view name() const override { return "cpu"; }

    // Memory is plain host memory: alloc is an aligned zero-filled allocation, upload/download/copy are memcpy,
    // and every operation has finished when it returns.
    bool host_memory() const override { return true; }
    void* alloc(uint64_t bytes) override;
    void free(void* p) override;
    void upload(void* dst, const void* src, uint64_t bytes) override;
    void download(void* dst, const void* src, uint64_t bytes) override;
    void copy(void* dst, const void* src, uint64_t bytes) override;
    void synchronize() override {}

    bool supports(tensor_type t) const override;
    void get_row(tensor_type t, const void* W, int64_t row, int64_t n_cols, float* out) override;
    void matvec(tensor_type t, const void* W, const float* x, float* y, int64_t n_cols, int64_t n_rows) override;
    void matmul(tensor_type t, const void* W, const float* X, float* Y, int64_t n_cols, int64_t n_rows,
                int64_t n_tok) override;
    void rmsnorm(const float* x, const float* w, float* y, int64_t n, float eps) override;
    void rope(float* x, int n_heads, int head_dim, int n_rot, int pos, float freq_base, rope_style style) override;
    // attention() is attention_batch() of the one token at position n_kv - 1.
    void attention(const float* q, const float* k_cache, const float* v_cache, float* out, float* scores, int n_head,
                   int n_head_kv, int hd_k, int hd_v, int n_kv, float scale) override;
    // Each (token, head) reads its positions in fixed blocks of attention_block_positions ([0, B), [B, 2B), ..):
    // per block the scores q.k in double rounded to float, their max, exp(score - max) in double, their sum and
    // the exp-weighted sum of values in double, in position order; then the blocks are folded left to right
    // (online softmax: rescale by exp(old max - new max)) and out = sum / weight. With one block (n_kv <= B) that is
    // exactly the two-pass softmax. The blocks depend on the position alone, so neither the thread count nor the
    // batch changes a bit. Threads take (token, head) pairs; when there are too few pairs to share out (decode)
    // and the context spans blocks, they take (token, head, block) triples instead, whose partial results go to
    // `scores` and are folded in block order afterwards.
    void attention_batch(const float* q, const float* k_cache, const float* v_cache, float* out, float* scores,
                         int n_head, int n_head_kv, int hd_k, int hd_v, int pos0, int n_tok, float scale) override;
    static constexpr int attention_block_positions = 512;
    void route(const float* logits, float* probs, int n_experts, int k, gating_func gating, bool norm_topk,
               float weights_scale, int* ids, float* weights) override;
    void swiglu(const float* gate, const float* up, float* out, int64_t n) override;
    void weighted_sum(const float* const* ys, const float* w, int k, float* out, int64_t n) override;
    void add(float* y, const float* x, int64_t n) override;
    void add_gated(float* y, const float* x, const float* gate_logit, int64_t n) override;

private:
    void matvec_rows(tensor_type t, const void* W, const float* x, float* y, int64_t n_cols, int64_t r0, int64_t r1,
                     float* row);

    int64_t _max_cols = 0;
    int64_t _min_parallel_work = 0;
    std::vector<float> _row;  // (n_threads, max_cols) one decoded weight row per thread
    // Per thread: one block's weights and two value accumulators of hd_v doubles. Sized at construction for head
    // dims up to 256 and grown (before any thread starts) by the first call with wider heads.
    std::vector<double> _att_ws;
    int _att_hd_v = 0;  // the widest hd_v _att_ws holds
    std::unique_ptr<thread_pool> _pool;
};

}  // namespace moe
