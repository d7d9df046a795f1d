// The replay loop. Everything it touches per access is a dense array indexed layer * n_experts + expert;
// membership of the current row is a stamp array, so the victim filter is one load and compare.
#include "cache/simulator.h"

#include <algorithm>
#include <cmath>

#include "cache/policies.h"
#include "common/error.h"

namespace moe {

namespace {

// Evictable = resident and not needed by the current row (stamp != current row + 1).
struct row_filter final : victim_filter {
    const uint64_t* stamp = nullptr;
    uint64_t current = 0;
    uint32_t n_experts = 0;
    bool evictable(expert_key k) const override { return stamp[size_t(k.layer) * n_experts + k.expert] != current; }
};

}  // namespace

sim_result simulate(const routing_trace& t, eviction_policy& policy, uint64_t capacity,
                    const std::vector<uint64_t>* expert_bytes) {
    // The replay's arrays are n_layers * n_experts long: a trace built in memory gets the reader's limits too.
    check_trace_shape(t.n_layers, t.n_experts, t.top_k, "simulate: trace:");
    if (capacity < t.top_k)
        fail("capacity {} is smaller than top_k={}: one token's experts for one layer must fit", capacity, t.top_k);
    const uint32_t n_e = t.n_experts;
    const size_t n_ids = size_t(t.n_layers) * n_e;
    if (expert_bytes && expert_bytes->size() != n_ids)
        fail("expert sizes cover {} experts, the trace has {} layers x {} experts", expert_bytes->size(), t.n_layers,
             n_e);

    sim_result res;
    res.policy = std::string(policy.name());
    res.capacity = capacity;
    res.per_layer.resize(t.n_layers);
    std::vector<uint8_t> resident(n_ids, 0);
    std::vector<uint64_t> stamp(n_ids, 0);
    row_filter filter;
    filter.stamp = stamp.data();
    filter.n_experts = n_e;
    uint64_t n_resident = 0, bytes = 0;

    for (size_t r = 0; r < t.rows.size(); ++r) {
        const trace_row& row = t.rows[r];
        const uint32_t layer = row.layer;
        const size_t n = row.experts.size();
        MOE_CHECK(layer < t.n_layers);
        filter.current = r + 1;
        uint64_t hits = 0;
        for (uint32_t e : row.experts) {
            size_t id = size_t(layer) * n_e + e;
            stamp[id] = r + 1;
            hits += resident[id];
        }
        layer_stats& ls = res.per_layer[layer];
        ls.accesses += n;
        ls.hits += hits;
        res.accesses += n;
        res.hits += hits;
        for (size_t j = 0; j < n; ++j) {
            size_t id = size_t(layer) * n_e + row.experts[j];
            if (resident[id]) continue;
            expert_key k{layer, row.experts[j]};
            if (policy.must_evict(k, n_resident, capacity)) {
                std::optional<expert_key> v = policy.victim(k, filter);
                if (!v)
                    fail(
                        "policy {} with capacity {}: no evictable expert to make room for layer {} expert {} at "
                        "row {} (a per-layer quota smaller than a row's experts?)",
                        policy.name(), capacity, layer, k.expert, r);
                size_t vid = size_t(v->layer) * n_e + v->expert;
                MOE_CHECK(v->layer < t.n_layers && v->expert < n_e && resident[vid] && stamp[vid] != r + 1);
                policy.erase(*v);
                resident[vid] = 0;
                --n_resident;
                ++res.evictions;
            }
            access_info a{r, uint32_t(j), row.weights.empty() ? 0.0f : row.weights[j]};
            policy.insert(k, a);
            resident[id] = 1;
            ++n_resident;
            ++res.misses;
            if (expert_bytes) bytes += (*expert_bytes)[id];
        }
        MOE_CHECK(n_resident <= capacity);
        res.max_resident = std::max(res.max_resident, n_resident);
        for (size_t j = n; j-- > 0;) {
            access_info a{r, uint32_t(j), row.weights.empty() ? 0.0f : row.weights[j]};
            policy.touch(expert_key{layer, row.experts[j]}, a);
        }
    }
    res.tokens = t.n_tokens();
    if (expert_bytes) res.bytes_moved = bytes;
    return res;
}

sim_result simulate(const routing_trace& t, std::string_view policy, uint64_t capacity,
                    const std::vector<uint64_t>* expert_bytes) {
    check_trace_shape(t.n_layers, t.n_experts, t.top_k, "simulate: trace:");  // before the policy sizes its arrays
    if (capacity < t.top_k)
        fail("capacity {} is smaller than top_k={}: one token's experts for one layer must fit", capacity, t.top_k);
    policy_params p;
    p.n_layers = t.n_layers;
    p.n_experts = t.n_experts;
    p.capacity = capacity;
    p.future = &t;
    auto pol = make_policy(policy, p);
    return simulate(t, *pol, capacity, expert_bytes);
}

std::vector<uint64_t> sweep_capacities(const routing_trace& t) {
    uint64_t total = uint64_t(t.n_layers) * t.n_experts;
    std::vector<uint64_t> caps{t.top_k};
    for (int pct = 5; pct <= 100; pct += 5)
        caps.push_back(std::max<uint64_t>(t.top_k, uint64_t(std::llround(total * pct / 100.0))));
    std::sort(caps.begin(), caps.end());
    caps.erase(std::unique(caps.begin(), caps.end()), caps.end());
    return caps;
}

}  // namespace moe
