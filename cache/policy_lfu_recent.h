// lfu-recent (this project's policy): decayed LFU whose most recent layer visit is protected.
//
// Why: an MoE decode step visits every layer once per token, so an expert's reuse is measured in tokens, and
// real routing shows two signals at once: a skewed, slowly drifting popularity per layer (frequency) and a
// strong chance that a layer picks again what it picked for the previous token (recency). LRU sees only the
// second, LFU only the first and evicts a cold expert the instant after it was loaded even when the next
// token is likely to want it again. lfu-recent keys each resident expert by
//   (used at its layer's latest visit?, decayed use count, last use)
// and evicts the smallest: experts the previous token of their layer used are kept (at most top_k per layer),
// the rest go in least-frequent order with counts halving every `half_life_factor * capacity` uses (history
// kept across evictions; 16 measured best across stationary and drifting traces), ties by recency. A victim
// request for layer l means l's new visit has begun, so l's previous-visit experts lose their protection
// then. The "latest visit" is the latest access_info::time seen for the layer, so no token boundaries are
// needed. docs/policies.md has the measurements behind the defaults.
#pragma once

#include <cstdint>
#include <vector>

#include "cache/policy_heap.h"
#include "cache/policy_lfu.h"

namespace moe {

class lfu_recent_policy final : public eviction_policy {
public:
    lfu_recent_policy(uint32_t n_layers, uint32_t n_experts, uint64_t capacity, double half_life_factor = 16.0);

    std::string_view name() const override { return "lfu-recent"; }
    void insert(expert_key k, const access_info& a) override;
    void touch(expert_key k, const access_info& a) override;
    void erase(expert_key k) override;
    std::optional<expert_key> victim(expert_key incoming, const victim_filter& filter) override;

private:
    void new_visit(uint32_t layer, uint64_t time);  // un-protects what the layer's previous visit used

    struct before {
        const lfu_recent_policy* p;
        bool operator()(uint32_t a, uint32_t b) const {
            if (p->_protected[a] != p->_protected[b]) return p->_protected[a] < p->_protected[b];
            // Among protected experts (only when the cache is smaller than one visit of every layer) the most
            // recently used goes first: layers are visited in a cycle, so the layer that ran last runs again
            // last (MRU is optimal on a loop larger than the cache, where LRU misses every time).
            if (p->_protected[a]) return p->_last[a] > p->_last[b];
            double sa = p->_counts.score(a), sb = p->_counts.score(b);
            return sa < sb || (sa == sb && p->_last[a] < p->_last[b]);
        }
    };
    uint32_t _n_layers, _n_experts;
    decayed_counters _counts;
    std::vector<uint64_t> _last;                 // (n_ids) policy-local use counter at last use
    std::vector<uint8_t> _protected;             // (n_ids) used at its layer's latest visit
    std::vector<uint64_t> _layer_time;           // (n_layers) time of the layer's latest visit
    std::vector<std::vector<uint32_t>> _recent;  // (n_layers) ids protected by that visit
    uint64_t _clock = 0;
    policy_heap<before> _heap;  // resident experts, first victim on top
};

}  // namespace moe
