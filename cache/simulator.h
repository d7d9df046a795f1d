// Trace replay: feeds a routing trace through an eviction policy with a fixed number of expert slots and
// counts hits and misses, overall and per layer. The replay rule (docs/policies.md):
//   rows in file order; each row is one (token, layer) with its expert set S; accesses += |S|,
//   hits += |S ∩ resident|; each missing expert of S is inserted in rank order, evicting first (when the
//   policy says room is needed) a victim the policy picks among residents not in S; then every expert of S is
//   touched in reverse rank order so the top-ranked one is the most recently used.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache/eviction_policy.h"
#include "cache/trace.h"

namespace moe {

struct layer_stats {
    uint64_t accesses = 0;
    uint64_t hits = 0;
    double hit_rate() const { return accesses ? double(hits) / double(accesses) : 0.0; }
};

struct sim_result {
    std::string policy;
    uint64_t capacity = 0;
    uint64_t accesses = 0;
    uint64_t hits = 0;
    uint64_t misses = 0;
    uint64_t evictions = 0;
    uint64_t tokens = 0;                  // distinct (seq, token)
    uint64_t max_resident = 0;            // high-water mark, never above capacity
    std::optional<uint64_t> bytes_moved;  // sum of the missed experts' sizes, when sizes were given
    std::vector<layer_stats> per_layer;   // (n_layers)

    double hit_rate() const { return accesses ? double(hits) / double(accesses) : 0.0; }
    double misses_per_token() const { return tokens ? double(misses) / double(tokens) : 0.0; }
};

// Replays `t` through `policy` (fresh, empty) with `capacity` slots. expert_bytes, when non-null, holds the
// size of every expert, indexed layer * n_experts + expert. Throws moe::error when the trace's shape is beyond
// the reader's limits (cache/trace.h), when capacity < top_k or when the policy cannot make room (e.g. a
// per-layer quota smaller than a row).
sim_result simulate(const routing_trace& t, eviction_policy& policy, uint64_t capacity,
                    const std::vector<uint64_t>* expert_bytes = nullptr);
// Same, building the policy by name (make_policy, with the trace as Belady's future).
sim_result simulate(const routing_trace& t, std::string_view policy, uint64_t capacity,
                    const std::vector<uint64_t>* expert_bytes = nullptr);

// Capacities for a hit-rate curve: top_k, then 5%, 10%, ..., 100% of all experts (rounded, deduplicated,
// never below top_k).
std::vector<uint64_t> sweep_capacities(const routing_trace& t);

}  // namespace moe
