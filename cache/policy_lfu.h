// LFU with aging. Every use adds 1 to the expert's count and all counts decay exponentially with a half-life
// of `capacity` uses (a count halves after `capacity` further uses anywhere in the cache), so yesterday's hot
// expert cannot squat forever. Counts are kept for every expert, resident or not ("LFU with history"), so an
// expert that was popular, evicted and re-loaded is not treated as brand new. Ties (equal decayed counts) are
// broken by recency: the least recently used goes first.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "cache/policy_heap.h"
#include "cache/policy_lru.h"

namespace moe {

// Exponentially decayed counters without touching every counter per tick: instead of multiplying all counts
// by 2^(-1/H) per use, the increment grows by 2^(1/H) per use; ordering is the same. When the increment gets
// large every counter is divided by it (order preserved) to stay in double range.
class decayed_counters {
public:
    decayed_counters(size_t n_ids, double half_life) : _score(n_ids, 0.0), _growth(std::exp2(1.0 / half_life)) {}

    double score(uint32_t id) const { return _score[id]; }
    // Adds one (scaled) use to `id`; returns true when all scores were rescaled.
    bool add(uint32_t id, double amount = 1.0) {
        _score[id] += _inc * amount;
        _inc *= _growth;
        if (_inc < 1e150) return false;
        for (double& s : _score) s /= _inc;
        _inc = 1.0;
        return true;
    }

private:
    std::vector<double> _score;  // (n_ids) decayed use count, in units of the current increment
    double _inc = 1.0;
    double _growth;
};

class lfu_policy final : public eviction_policy {
public:
    lfu_policy(uint32_t n_layers, uint32_t n_experts, uint64_t capacity);

    std::string_view name() const override { return "lfu"; }
    void insert(expert_key k, const access_info& a) override;
    void touch(expert_key k, const access_info& a) override;
    void erase(expert_key k) override;
    std::optional<expert_key> victim(expert_key incoming, const victim_filter& filter) override;

private:
    struct before {
        const lfu_policy* p;
        bool operator()(uint32_t a, uint32_t b) const {
            double sa = p->_counts.score(a), sb = p->_counts.score(b);
            return sa < sb || (sa == sb && p->_last[a] < p->_last[b]);
        }
    };
    uint32_t _n_layers, _n_experts;
    decayed_counters _counts;
    std::vector<uint64_t> _last;  // (n_ids) policy-local use counter at the last use, for tie-breaks
    uint64_t _clock = 0;
    policy_heap<before> _heap;  // resident experts, least frequent first
};

}  // namespace moe
