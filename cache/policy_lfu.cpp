// LFU with exponential aging (half-life = capacity uses), history kept for non-resident experts, recency
// tie-break. Rescaling the counters rescales every key by the same factor, so the heap order stays valid.
#include "cache/policy_lfu.h"

#include <algorithm>

namespace moe {

lfu_policy::lfu_policy(uint32_t n_layers, uint32_t n_experts, uint64_t capacity)
    : _n_layers(n_layers),
      _n_experts(n_experts),
      _counts(size_t(n_layers) * n_experts, double(std::max<uint64_t>(capacity, 1))),
      _last(size_t(n_layers) * n_experts, 0),
      _heap(size_t(n_layers) * n_experts, before{this}) {
    MOE_CHECK(n_layers > 0 && n_experts > 0);
}

void lfu_policy::insert(expert_key k, const access_info&) {
    uint32_t id = dense_id(k, _n_layers, _n_experts);
    MOE_CHECK(!_heap.contains(id));
    _last[id] = ++_clock;
    _heap.push(id);
}

void lfu_policy::touch(expert_key k, const access_info&) {
    uint32_t id = dense_id(k, _n_layers, _n_experts);
    MOE_CHECK(_heap.contains(id));
    _last[id] = ++_clock;
    if (_counts.add(id))
        _heap.rebuild();  // rescaled: rounding may have merged keys
    else
        _heap.update(id);
}

void lfu_policy::erase(expert_key k) {
    uint32_t id = dense_id(k, _n_layers, _n_experts);
    if (_heap.contains(id)) _heap.remove(id);
}

std::optional<expert_key> lfu_policy::victim(expert_key, const victim_filter& filter) {
    uint32_t n_e = _n_experts;
    uint32_t id = _heap.best([&](uint32_t i) { return filter.evictable(expert_key{i / n_e, i % n_e}); });
    if (id == policy_heap<before>::NIL) return std::nullopt;
    return expert_key{id / n_e, id % n_e};
}

}  // namespace moe
