// The decoder forward pass of the MoE architectures, written once against the backend interface: per layer
// RMSNorm -> attention (resident weights, KV cache, GQA, RoPE in the file's convention) -> RMSNorm -> router ->
// top-k experts, each reached ONLY through the expert cache (acquire = pin; a miss is loaded by the cache's
// loader and waited on) -> weighted sum in rank order -> residual.
//
// One code path serves decode (1 token) and prefill (a batch of up to n_batch tokens). Per layer: the attention
// projections (q, k, v with their biases and q/k norms, then the output projection) of all tokens of the batch are
// one batched product each (backend::matmul; they do not depend on other positions, so causality holds), with
// RoPE and the KV write token by token and one causal attention call for the batch (backend::attention_batch:
// token t sees positions up to its own) between them; then one router product for the batch,
// every token routed; then the experts the batch selected are visited, each pinned once and applied to the tokens
// that chose it at once (their normed inputs gathered, in token order, into a workspace: gate/up products, SwiGLU,
// down product), so a prompt loads an expert once per layer, not once per token, and at most top_k are pinned at a
// time. Each token's expert outputs are kept by rank and summed in rank order. Decode (1 token) runs the same
// steps with matvec. On the CPU a batched product gives each token the bits of a matvec, so a prompt's logits are
// bit-identical whether it is decoded token by token or prefilled in batches of any size; on CUDA they agree
// within fp32 rounding (cuBLAS sums in another order). Either way the batch an expert sees (its tokens, in token
// order) depends only on the routing, never on which experts were resident, so the logits are bit-identical at
// every expert budget for a given n_batch.
//
// Per-architecture differences are data, not code paths: rope style, q/k norms (per head: qwen3moe; whole
// projection: olmoe), gating and renormalisation come from the model description and the weights. Qwen2-MoE's
// qkv biases and sigmoid-gated shared expert (qwen2moe) are optional weights; gpt-oss biases/sinks and DeepSeek's
// MLA and dense lead layers are the next additions to attention_block / moe_step (check_forward_supported refuses
// them now).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "cache/expert_cache.h"
#include "prefetch/prefetcher.h"
#include "runtime/backend.h"
#include "runtime/backend_buffer.h"
#include "runtime/model.h"
#include "runtime/offloader.h"

namespace moe {

struct forward_config {
    int n_ctx = 256;   // KV cache positions of each sequence, allocated at construction
    int n_batch = 32;  // most tokens one eval() / eval_batch() call takes (workspaces are sized for it)
    int n_seq = 1;     // independent sequences (each its own KV cache) that eval_batch() can advance together
};

// One sequence's part of a multi-sequence step: its next tokens, evaluated at positions n_past(seq)...
struct seq_tokens {
    int seq = 0;
    std::span<const int> tokens;
};

// Counters of one forward pass object (for `moe run` and tests).
struct forward_stats {
    uint64_t n_tokens = 0;
    uint64_t n_expert_uses = 0;   // (token, expert) applications
    uint64_t n_acquires = 0;      // acquire() calls (one per expert per layer per batch)
    uint64_t n_expert_waits = 0;  // ... whose handle was not ready (a load had to be waited on)
    uint64_t n_prefetches = 0;    // prefetch() calls that started a load
};

// Told of every (token, MoE layer) routing decision right after the router ran: the token's position in the
// sequence, the MoE layer, and its top-k experts and weights in rank order (`moe run --trace` records these).
using routing_observer =
    std::function<void(int pos, int moe_layer, std::span<const int> experts, std::span<const float> weights)>;

// Benchmarks only: replaces the router's choice of experts. Asked for each (token, MoE layer) right after the router
// ran, with `experts` empty; it puts there 1..top_k distinct ids in [0, n_experts), in rank order (anything else is
// refused with moe::error). A row shorter than top_k is filled with the router's own picks not already in it, in
// the router's rank order. The weights are the router's probabilities of the chosen experts, post-processed as the
// router's own (renormalised when the model says so, scaled), so only which experts run changes, not how their
// outputs are weighted; the logits then no longer follow the model. The observer and the prefetcher see the
// replaced choice.
using routing_override = std::function<void(int pos, int moe_layer, std::vector<int>& experts)>;

class forward_pass {
public:
    // The model and the offloader must outlive this object; the offloader must stream this model's experts into
    // the tier the model's backend computes on. Allocates the KV cache and every workspace here (backend memory);
    // the weights are the model's, shared. The prefetcher, when the offloader has one, is told every routing and
    // asked for guesses during decode.
    forward_pass(const model& m, offloader& off, const forward_config& cfg);

    // Forgets every sequence (the KV cache is reused from position 0).
    void reset() { std::fill(_n_past.begin(), _n_past.end(), 0); }
    // Forgets one sequence.
    void reset(int seq) { _n_past.at(size_t(seq)) = 0; }
    int n_past(int seq = 0) const { return _n_past.at(size_t(seq)); }
    int n_ctx() const { return _cfg.n_ctx; }
    int n_batch() const { return _cfg.n_batch; }
    int n_seq() const { return _cfg.n_seq; }
    // Sequence 0: decodes `token` at position n_past() and returns the n_vocab logits (valid until the next call).
    // Throws moe::error for a token outside the vocabulary or a full context; an expert load failure
    // propagates as the cache's moe::error.
    const float* decode(int token) { return eval(std::span<const int>(&token, 1), nullptr); }
    // Evaluates up to n_batch tokens at positions n_past().. (prefill). Writes every position's logits to
    // all_logits (tokens.size(), n_vocab) when it is not null; returns the last token's logits (valid until the
    // next call). Errors as decode(); tokens are checked before anything is computed. Holds the model's compute
    // lock for the step.
    const float* eval(std::span<const int> tokens, float* all_logits);
    // Continuous batching: one step that advances several sequences at once (each at most once in `batch`, up to
    // n_batch tokens in all, e.g. one decode token of each of 8 conversations plus a chunk of a new prompt). Every
    // expert a layer selects is loaded once for the step and applied to all the rows, of any sequence, that chose
    // it. Returns (batch.size(), n_vocab) logits: entry i's last token's (valid until the next call). On the CPU
    // each sequence's logits are bit-identical to evaluating it alone (a batched product gives each row the bits
    // of a matvec); on CUDA they agree within fp32 rounding. Errors as eval(), checked before anything runs.
    const float* eval_batch(std::span<const seq_tokens> batch);

    // Bytes of the KV cache and the workspaces in backend memory (what this session adds to the compute memory).
    uint64_t workspace_bytes() const;
    const forward_stats& stats() const { return _stats; }
    // Optional; an empty function turns it off. Observing never changes what is computed.
    void set_routing_observer(routing_observer obs) { _observer = std::move(obs); }
    // Optional (see routing_override); an empty function restores the router's choice.
    void set_routing_override(routing_override ovr);

private:
    // Checks the batch and lays its rows out (_segs, _row_pos); returns the number of rows.
    int plan_rows(std::span<const seq_tokens> batch);
    // Embeds the planned rows and runs every layer; on an error drops the pins (the sequences are unchanged).
    void run_layers(std::span<const seq_tokens> batch, int n_tok);
    void output_rows(int n_rows);  // the planned segments' last rows' logits into _logits
    void attention_block(int il, int n_tok);
    void moe_step(int il, int n_tok);
    void override_routing(int moe_layer, int n_tok);
    void apply_group(int moe_layer, int n_pinned, int n_tok);
    void expert_ffn(int moe_layer, int expert, const void* slot, const float* X, float* Y, int n_rows);
    void shared_expert(const layer_tensors& T, int n_tok);
    void prefetch_ahead(int il);
    void output_head(int n_tok, float* all_logits);
    // Y = X W^T over n_tok rows: matvec for one token (decode), matmul for a batch.
    void product(const weight_matrix& W, const float* X, float* Y, int n_tok);
    void product(tensor_type t, const void* W, const float* X, float* Y, int64_t n_cols, int64_t n_rows, int n_tok);

    const model& _m;
    const model_desc& _d;
    const resident_weights& _rw;  // the model's, in backend memory
    backend& _be;
    offloader& _off;
    expert_cache& _cache;
    prefetcher* _prefetcher = nullptr;  // the offloader's; null with prefetch none
    forward_config _cfg;
    std::vector<int> _n_past;  // (n_seq) positions each sequence holds
    // The rows of the current step: segments of consecutive rows, one per sequence, in batch order.
    struct segment {
        int seq = 0, first = 0, n = 0;
    };
    std::vector<segment> _segs;  // (<= n_seq)
    std::vector<int> _row_pos;   // (n_batch) each row's position in its sequence
    forward_stats _stats;
    routing_observer _observer;
    routing_override _override;

    // In backend memory (device memory for CUDA):
    // KV cache: (n_layers, n_seq, n_ctx, n_head_kv, hd_k) and (n_layers, n_seq, n_ctx, n_head_kv, hd_v)
    backend_array<float> _k_cache, _v_cache;
    // Workspaces
    backend_array<float> _x;              // (n_batch, n_embd) residual stream
    backend_array<float> _xn;             // (n_batch, n_embd) normed input of the current block
    backend_array<float> _q;              // (n_batch, n_head * hd_k)
    backend_array<float> _att;            // (n_batch, n_head * hd_v) attention outputs
    backend_array<float> _tmp;            // (n_batch, n_embd) block outputs before the residual add
    backend_array<float> _scores;         // (n_head, n_ctx)
    backend_array<float> _router;         // (n_batch, n_experts) router logits
    backend_array<float> _probs;          // (n_experts)
    backend_array<int> _ids_dev;          // (n_batch, top_k) route's output, downloaded into _ids
    backend_array<float> _weights_dev;    // (n_batch, top_k) ... into _weights; weighted_sum reads these
    backend_array<float> _pf_logits_dev;  // (depth, n_experts) later layers' router logits (speculative gating)
    backend_array<float> _pf_xn;          // (n_embd) the residual normed as a later layer's FFN input
    // (n_batch, n_embd) the normed inputs of one expert's tokens, gathered in token order; after the routed
    // experts, the shared expert's outputs
    backend_array<float> _rows;
    backend_array<float> _gate, _up;  // (n_batch, max(n_ff_exp, n_ff_shexp))
    // (n_batch * top_k, n_embd) this layer's expert outputs, each expert's rows together, experts in id order;
    // _y_ptrs says which row is whose
    backend_array<float> _ys;
    backend_array<float> _sh_logit;    // (n_batch) shared expert gate logits
    backend_array<float> _logits_dev;  // (_head_rows, n_vocab)
    // Host memory:
    int _head_rows = 1;                   // positions whose logits one output-head product computes (all_logits)
    std::vector<int> _ids;                // (n_batch, top_k) selected experts, rank order
    std::vector<float> _weights;          // (n_batch, top_k)
    std::vector<float> _pf_logits;        // (depth, n_experts) ... downloaded for the prefetcher
    std::vector<int> _moe_layers;         // (n_moe_layers) decoder layer index of each MoE layer
    std::vector<const float*> _y_ptrs;    // (n_batch, top_k) each (token, rank)'s expert output row in _ys
    std::vector<int> _ys_first;           // (n_experts) expert e's first row in _ys (this layer's routing)
    std::vector<int> _gather_tok;         // (n_batch) the tokens of the expert being applied, in token order
    std::vector<int> _gather_slot;        // (n_batch) ... and the (token, rank) slot each fills
    std::vector<uint8_t> _used;           // (n_experts) selected by some token of the batch in this layer
    std::vector<int> _visit;              // (n_experts) this layer's selected experts, resident ones first
    std::vector<int> _group;              // (top_k) experts pinned together
    std::vector<expert_handle> _handles;  // (top_k) pins of the current group
    std::vector<float> _logits;           // (min(n_seq, n_batch), n_vocab) the last row of each segment
    // Only with a routing override:
    std::vector<float> _router_host;  // (n_batch, n_experts) router logits, downloaded for replaced rows
    std::vector<float> _probs_host;   // (n_experts)
    std::vector<int> _override_ids;   // (<= top_k) what the override gave one token, then filled to top_k
};

}  // namespace moe
