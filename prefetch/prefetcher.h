// The prefetcher: at each MoE layer of a decode step it guesses the experts of the next `depth` layers and asks
// the expert cache to start loading them, so their bytes are moving while this layer computes.
//  - Guesses (prefetch_mode): SPEC, speculative gating (the later layers' routers applied to this layer's hidden
//    state, computed by the forward pass and handed over as logits); HISTORY, the co-activation history predictor
//    (no hidden state needed; it also predicts past the last layer, into the next token's first layers); BOTH,
//    spec's guesses first, then history's that spec did not make.
//  - Scheduling: a guess for layer m of step s gets deadline s * n_layers + m; the streamer queues prefetches by
//    that value (nearer layers first; within a layer, better-ranked guesses first). Each guess is tried once, in
//    that order, and at most per_layer loads are started for one layer of one step (so BOTH is "spec first,
//    history fills": history's guesses start loads only where spec's were already resident or loading). A
//    prefetch is only issued while, with every load in flight still in flight and every prefetch that arrived
//    still waiting for its layer, the next layer's top_k can be pinned, so a wrong guess never makes a demand
//    fail; issuing happens after the current layer's experts are pinned, so it never evicts one of them (the
//    cache never evicts a pinned expert).
//  - Stale hints: when the forward pass reaches layer m, every prefetch this prefetcher issued for an earlier
//    layer, or for layer m and not selected there, is cancelled if it is still queued in the streamer (one at
//    the reader is left to finish). The cache frees its slot and counts it as cancelled, not failed.
// It is driven by one thread (the forward pass); the cache and streamer it calls are thread-safe.
// Definitions of the statistics: docs/prefetch.md.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "cache/expert_key.h"
#include "prefetch/history_predictor.h"

namespace moe {

class expert_cache;
class expert_loader;

enum class prefetch_mode : uint8_t { NONE, SPEC, HISTORY, BOTH };

std::string_view prefetch_mode_name(prefetch_mode m);  // "none", "spec", "history", "both"
// Parses those names; throws moe::error naming `what` (e.g. "--prefetch") otherwise.
prefetch_mode parse_prefetch_mode(std::string_view text, std::string_view what);

struct prefetch_config {
    prefetch_mode mode = prefetch_mode::NONE;
    int depth = 1;      // layers predicted ahead at each MoE layer: l+1 .. l+depth (more than n_layers: n_layers)
    int per_layer = 0;  // experts each predictor guesses per layer; 0 = the model's top_k (BOTH: up to twice it)
};

// What the prefetcher did for one MoE layer (the layer the guesses were FOR). The cache's layer_stats hold what
// became of the loads (prefetch_hits, prefetch_joins, prefetch_unused_evictions, cancelled_loads, wait_ns).
struct prefetcher_layer_stats {
    uint64_t needed = 0;            // experts selected at this layer in decode steps (when the prefetcher runs)
    uint64_t predicted_needed = 0;  // ...of which guessed for that very step: prediction recall's numerator
    uint64_t guesses = 0;           // distinct experts guessed (per step)
    uint64_t issued = 0;            // guesses whose prefetch started a load
    uint64_t already = 0;           // guesses already resident or loading: nothing to do
    uint64_t skipped = 0;           // guesses not issued: no slot could be spared, or per_layer loads started
    uint64_t cancelled = 0;         // issued prefetches cancelled as stale while still queued

    prefetcher_layer_stats& operator+=(const prefetcher_layer_stats& o);
    friend bool operator==(const prefetcher_layer_stats&, const prefetcher_layer_stats&) = default;
    // predicted_needed / needed: how often the guesses named the experts that were then selected, whether or
    // not a load was needed. 0 when nothing was needed.
    double prediction_recall() const;
};

class prefetcher {
public:
    // n_layers / n_experts: the cache's key space (MoE layers); top_k: experts per token; max_batch: most tokens
    // one forward step routes (the history's window). `queue` (optional) is the cache's loader (the streamer, or a
    // tiered loader that passes the hints down to it), which queues prefetches by priority and cancels them: without
    // it there are no priorities and no cancellation. Allocates everything here. Throws moe::error for depth < 1,
    // per_layer < 0 or > n_experts.
    prefetcher(const prefetch_config& cfg, uint32_t n_layers, uint32_t n_experts, uint32_t top_k, uint32_t max_batch,
               expert_cache& cache, expert_loader* queue);
    ~prefetcher();
    prefetcher(const prefetcher&) = delete;
    prefetcher& operator=(const prefetcher&) = delete;

    const prefetch_config& config() const { return _cfg; }
    // How many rows of router logits the forward pass should compute at `layer` for speculative gating: those of
    // MoE layers layer+1 .. layer+n (0 without SPEC/BOTH, and none past the last layer).
    int n_spec_layers(uint32_t layer) const;

    // A forward step routed its tokens at `layer`: ids (n_tok, row_len) in rank order, token i at first_pos + i.
    // row_len: experts per row, 1..top_k (0 = top_k; the C API's rows may hold fewer than top_k).
    // Feeds the history, counts needed/predicted (decode steps: n_tok == 1), and cancels stale prefetches.
    // Layers arrive in order within a step; a layer not after the previous one starts a new step.
    void routed(uint32_t layer, uint32_t first_pos, int n_tok, std::span<const int> ids, uint32_t row_len = 0);
    // Decode steps, once `layer`'s experts are pinned: guesses layers layer+1 .. layer+depth and issues the
    // prefetches. spec_logits: (n_spec_layers(layer), n_experts) router logits of those layers on this token's
    // FFN input, or empty for no spec guesses this time (the C API's moe_route without a hidden state); `time`:
    // the access time of this layer's acquires (the policy hears time + distance). Returns the loads started.
    uint32_t prefetch(uint32_t layer, uint64_t time, std::span<const float> spec_logits);

    const std::vector<prefetcher_layer_stats>& stats() const { return _stats; }
    void reset_stats();
    const history_predictor& history() const { return _history; }

private:
    static constexpr uint64_t k_never = ~uint64_t(0);
    bool uses_spec() const { return _cfg.mode == prefetch_mode::SPEC || _cfg.mode == prefetch_mode::BOTH; }
    bool uses_history() const { return _cfg.mode == prefetch_mode::HISTORY || _cfg.mode == prefetch_mode::BOTH; }
    uint32_t index(expert_key k) const { return k.layer * _n_experts + k.expert; }
    // Issues one guess for `key` needed at global layer time `deadline`; `order` ranks it within its layer.
    uint32_t issue(expert_key key, uint64_t deadline, uint32_t order, uint64_t time, uint32_t distance);
    void cancel_stale(uint64_t now);
    bool room_for_one_more() const;

    prefetch_config _cfg;
    uint32_t _n_layers, _n_experts, _top_k, _per_layer;
    expert_cache& _cache;
    expert_loader* _queue;
    history_predictor _history;

    uint64_t _step = 0;                     // forward steps seen (a layer not after the previous one starts the next)
    uint32_t _last_layer = ~0u;             // layer of the previous routed() call
    uint32_t _last_pos = 0;                 // position of the last token routed (the token prefetch() guesses for)
    std::vector<uint64_t> _deadline;        // (n_layers * n_experts) layer time an issued prefetch is for, or k_never
    std::vector<uint64_t> _guessed_at;      // (n_layers * n_experts) layer time of the latest guess of the key
    std::vector<uint32_t> _outstanding;     // key indices with a deadline (capacity: every key)
    std::vector<uint64_t> _layer_deadline;  // (n_layers) the deadline _layer_issued counts for
    std::vector<uint32_t> _layer_issued;    // (n_layers) loads started for that layer and deadline
    std::vector<uint8_t> _selected;         // (n_experts) scratch: selected at the current layer
    std::vector<int> _guess;                // (depth, 2 * per_layer) merged guesses per predicted layer
    std::vector<int> _n_guess;              // (depth)
    std::vector<int> _scratch_ids;          // (n_experts)
    std::vector<float> _scratch_scores;     // (n_experts)
    std::vector<prefetcher_layer_stats> _stats;  // (n_layers)
};

}  // namespace moe
