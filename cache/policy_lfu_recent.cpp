// lfu-recent: see the header for the rationale. Protection flips only when a layer starts a new visit,
// touching at most the previous visit's experts, so the cost per use stays O(log n).
#include "cache/policy_lfu_recent.h"

#include <algorithm>

namespace moe {

lfu_recent_policy::lfu_recent_policy(uint32_t n_layers, uint32_t n_experts, uint64_t capacity, double half_life_factor)
    : _n_layers(n_layers),
      _n_experts(n_experts),
      _counts(size_t(n_layers) * n_experts, half_life_factor * double(std::max<uint64_t>(capacity, 1))),
      _last(size_t(n_layers) * n_experts, 0),
      _protected(size_t(n_layers) * n_experts, 0),
      _layer_time(n_layers, ~uint64_t(0)),
      _recent(n_layers),
      _heap(size_t(n_layers) * n_experts, before{this}) {
    MOE_CHECK(n_layers > 0 && n_experts > 0 && half_life_factor > 0);
}

void lfu_recent_policy::new_visit(uint32_t layer, uint64_t time) {
    if (_layer_time[layer] == time) return;
    _layer_time[layer] = time;
    for (uint32_t id : _recent[layer]) {
        _protected[id] = 0;
        if (_heap.contains(id)) _heap.update(id);
    }
    _recent[layer].clear();
}

void lfu_recent_policy::insert(expert_key k, const access_info& a) {
    uint32_t id = dense_id(k, _n_layers, _n_experts);
    MOE_CHECK(!_heap.contains(id));
    new_visit(k.layer, a.time);
    if (!_protected[id]) {
        _protected[id] = 1;
        _recent[k.layer].push_back(id);
    }
    _last[id] = ++_clock;
    _heap.push(id);
}

void lfu_recent_policy::touch(expert_key k, const access_info& a) {
    uint32_t id = dense_id(k, _n_layers, _n_experts);
    MOE_CHECK(_heap.contains(id));
    new_visit(k.layer, a.time);
    if (!_protected[id]) {
        _protected[id] = 1;
        _recent[k.layer].push_back(id);
    }
    _last[id] = ++_clock;
    if (_counts.add(id))
        _heap.rebuild();
    else
        _heap.update(id);
}

void lfu_recent_policy::erase(expert_key k) {
    uint32_t id = dense_id(k, _n_layers, _n_experts);
    if (_heap.contains(id)) _heap.remove(id);
    // It stays in _recent (and protected) until its layer's next visit, which is harmless: it is not resident.
}

std::optional<expert_key> lfu_recent_policy::victim(expert_key incoming, const victim_filter& filter) {
    // A victim is needed because `incoming`'s layer is being visited again: what its previous visit used is
    // no longer "latest" (the current row's experts are kept by the filter and re-protected by their touch).
    MOE_CHECK(incoming.layer < _n_layers);
    for (uint32_t id : _recent[incoming.layer]) {
        _protected[id] = 0;
        if (_heap.contains(id)) _heap.update(id);
    }
    _recent[incoming.layer].clear();
    uint32_t n_e = _n_experts;
    uint32_t id = _heap.best([&](uint32_t i) { return filter.evictable(expert_key{i / n_e, i % n_e}); });
    if (id == policy_heap<before>::NIL) return std::nullopt;
    return expert_key{id / n_e, id % n_e};
}

}  // namespace moe
