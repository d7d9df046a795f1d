// LRU with per-layer quotas, as mixtral-offloading keeps a fixed cache per layer: the capacity N is split
// evenly (layer l holds floor(N/L) slots, one more for the first N%L layers) and the victim for an incoming
// expert is the least recently used evictable expert of the same layer.
#pragma once

#include <cstdint>
#include <vector>

#include "cache/policy_lru.h"

namespace moe {

class lru_layer_policy final : public eviction_policy {
public:
    lru_layer_policy(uint32_t n_layers, uint32_t n_experts, uint64_t capacity);

    std::string_view name() const override { return "lru-layer"; }
    void insert(expert_key k, const access_info& a) override;
    void touch(expert_key k, const access_info& a) override;
    void erase(expert_key k) override;
    std::optional<expert_key> victim(expert_key incoming, const victim_filter& filter) override;
    bool must_evict(expert_key incoming, uint64_t resident, uint64_t capacity) const override;

    uint64_t quota(uint32_t layer) const { return _quota[layer]; }
    uint64_t resident_in(uint32_t layer) const { return _lists.size(layer); }

private:
    uint32_t _n_layers, _n_experts;
    std::vector<uint64_t> _quota;  // (n_layers)
    recency_lists _lists;          // one list per layer
};

}  // namespace moe
