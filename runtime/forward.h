// The decoder forward pass of the MoE architectures, written once against the backend interface: per layer
// RMSNorm -> attention (resident weights, KV cache, GQA, RoPE in the file's convention) -> RMSNorm -> router ->
// top-k experts, each reached ONLY through the expert cache (acquire = pin; a miss is loaded by the cache's
// loader and waited on) -> weighted sum in rank order -> residual.
//
// One code path serves decode (1 token) and prefill (a batch of up to n_batch tokens): per layer every token's
// attention runs in order (causal, writing the KV cache), then every token is routed, then the experts the batch
// selected are visited in expert-id order, each pinned once and applied to all of its tokens (so a prompt loads
// an expert once per layer, not once per token), at most top_k pinned at a time. Each token's expert outputs are
// kept by rank and summed in rank order, and every per-token computation is the same whatever the batch, so a
// prompt's logits are bit-identical whether it is decoded token by token or prefilled in batches of any size.
//
// Per-architecture differences are data, not code paths: rope style, q/k norms (per head: qwen3moe; whole
// projection: olmoe), gating and renormalisation come from the model description and the weights. Qwen2-MoE's
// qkv biases and sigmoid-gated shared expert (qwen2moe) are optional weights; gpt-oss biases/sinks and DeepSeek's
// MLA and dense lead layers are the next additions to attention_step / moe_step (check_forward_supported refuses
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
#include "runtime/model_desc.h"
#include "runtime/model_weights.h"
#include "runtime/resident_weights.h"

namespace moe {

class streamer;

struct forward_config {
    int n_ctx = 256;   // KV cache positions, allocated at construction
    int n_batch = 32;  // most tokens one eval() call takes (workspaces are sized for it)
    // Prefetch during decode steps (prefetch/prefetcher.h): none, spec (the next `depth` MoE layers' routers on
    // the current FFN input), history (co-activation), both. Never changes what is computed.
    prefetch_config prefetch;
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

class forward_pass {
public:
    // Everything passed in must outlive this object. `loader_streamer` (optional) is told to promote a queued
    // prefetch that a demand acquire joined. Allocates the KV cache and every workspace here.
    forward_pass(const model_desc& desc, const model_weights& weights, backend& be, expert_cache& cache,
                 const forward_config& cfg, streamer* loader_streamer = nullptr);

    // Forgets the sequence (the KV cache is reused from position 0).
    void reset() { _n_past = 0; }
    int n_past() const { return _n_past; }
    int n_ctx() const { return _cfg.n_ctx; }
    // Decodes `token` at position n_past() and returns the n_vocab logits (valid until the next call).
    // Throws moe::error for a token outside the vocabulary or a full context; an expert load failure
    // propagates as the cache's moe::error.
    const float* decode(int token) { return eval(std::span<const int>(&token, 1), nullptr); }
    // Evaluates up to n_batch tokens at positions n_past().. (prefill). Writes every position's logits to
    // all_logits (tokens.size(), n_vocab) when it is not null; returns the last token's logits (valid until the
    // next call). Errors as decode(); tokens are checked before anything is computed.
    const float* eval(std::span<const int> tokens, float* all_logits);

    // Bytes of the KV cache and the workspaces (what the engine counts against the compute memory).
    uint64_t workspace_bytes() const;
    // Bytes of resident weights copied into backend memory (0 for a backend that computes on host memory).
    uint64_t resident_backend_bytes() const { return _rw.backend_bytes(); }
    const forward_stats& stats() const { return _stats; }
    // Per MoE layer what the prefetcher guessed and issued (empty with prefetch none).
    std::span<const prefetcher_layer_stats> prefetch_stats() const {
        return _prefetcher ? std::span<const prefetcher_layer_stats>(_prefetcher->stats())
                           : std::span<const prefetcher_layer_stats>();
    }
    // Optional; an empty function turns it off. Observing never changes what is computed.
    void set_routing_observer(routing_observer obs) { _observer = std::move(obs); }

private:
    void attention_step(int il, int t);
    void moe_step(int il, int n_tok);
    void apply_group(int moe_layer, int n_pinned, int n_tok);
    void expert_ffn(int moe_layer, int expert, const void* slot, const float* xn, float* y);
    void shared_expert(const layer_tensors& T, const float* xn, float* out);
    void prefetch_ahead(int il);

    const model_desc& _d;
    const model_weights& _w;
    backend& _be;
    expert_cache& _cache;
    forward_config _cfg;
    streamer* _streamer = nullptr;
    resident_weights _rw;  // the weights in backend memory (views of _w on the CPU)
    int _n_past = 0;
    uint64_t _clock = 0;  // access time for the eviction policy: one tick per (eval call, MoE layer)
    forward_stats _stats;
    routing_observer _observer;

    // In backend memory (device memory for CUDA):
    // KV cache: (n_layers, n_ctx, n_head_kv, hd_k) and (n_layers, n_ctx, n_head_kv, hd_v)
    backend_array<float> _k_cache, _v_cache;
    // Workspaces
    backend_array<float> _x;           // (n_batch, n_embd) residual stream
    backend_array<float> _xn;          // (n_batch, n_embd) normed input of the current block
    backend_array<float> _q;           // (n_head * hd_k)
    backend_array<float> _att;         // (n_head * hd_v)
    backend_array<float> _tmp;         // (n_embd)
    backend_array<float> _scores;      // (n_head, n_ctx)
    backend_array<float> _router;      // (n_experts) router logits
    backend_array<float> _probs;       // (n_experts)
    backend_array<int> _ids_dev;       // (n_batch, top_k) route's output, downloaded into _ids
    backend_array<float> _weights_dev;  // (n_batch, top_k) ... into _weights; weighted_sum reads these
    backend_array<float> _pf_logits_dev;  // (depth, n_experts) later layers' router logits (speculative gating)
    backend_array<float> _pf_xn;          // (n_embd) the residual normed as a later layer's FFN input
    backend_array<float> _gate, _up;   // (max(n_ff_exp, n_ff_shexp))
    backend_array<float> _ys;          // (n_batch, top_k, n_embd) expert outputs by token and rank
    backend_array<float> _sh_logit;    // (1) shared expert gate logit
    backend_array<float> _logits_dev;  // (n_vocab)
    // Host memory:
    std::vector<int> _ids;        // (n_batch, top_k) selected experts, rank order
    std::vector<float> _weights;  // (n_batch, top_k)
    std::vector<float> _pf_logits;  // (depth, n_experts) ... downloaded for the prefetcher
    std::vector<int> _moe_layers;   // (n_moe_layers) decoder layer index of each MoE layer
    std::unique_ptr<prefetcher> _prefetcher;  // null with prefetch none
    std::vector<const float*> _y_ptrs;    // (n_batch, top_k) into _ys
    std::vector<uint8_t> _used;           // (n_experts) selected by some token of the batch in this layer
    std::vector<int> _visit;  // (n_experts) this layer's selected experts, resident ones first
    std::vector<int> _group;              // (top_k) experts pinned together
    std::vector<expert_handle> _handles;  // (top_k) pins of the current group
    std::vector<float> _logits;           // (n_vocab)
};

}  // namespace moe
