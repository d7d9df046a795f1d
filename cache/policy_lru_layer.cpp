// Per-layer LRU: one recency list per layer, victims only from the incoming expert's layer.
#include "cache/policy_lru_layer.h"

namespace moe {

lru_layer_policy::lru_layer_policy(uint32_t n_layers, uint32_t n_experts, uint64_t capacity)
    : _n_layers(n_layers), _n_experts(n_experts), _quota(n_layers), _lists(size_t(n_layers) * n_experts, n_layers) {
    MOE_CHECK(n_layers > 0 && n_experts > 0);
    if (capacity < n_layers)
        fail("policy lru-layer: capacity {} gives some of the {} layers no slot (needs capacity >= n_layers)", capacity,
             n_layers);
    for (uint32_t l = 0; l < n_layers; ++l) _quota[l] = capacity / n_layers + (l < capacity % n_layers ? 1 : 0);
}

void lru_layer_policy::insert(expert_key k, const access_info&) {
    uint32_t id = dense_id(k, _n_layers, _n_experts);
    MOE_CHECK(!_lists.linked(id));
    _lists.push_front(k.layer, id);
}

void lru_layer_policy::touch(expert_key k, const access_info&) {
    uint32_t id = dense_id(k, _n_layers, _n_experts);
    MOE_CHECK(_lists.linked(id));
    _lists.move_to_front(id);
}

void lru_layer_policy::erase(expert_key k) {
    uint32_t id = dense_id(k, _n_layers, _n_experts);
    if (_lists.linked(id)) _lists.unlink(id);
}

std::optional<expert_key> lru_layer_policy::victim(expert_key incoming, const victim_filter& filter) {
    MOE_CHECK(incoming.layer < _n_layers);
    for (uint32_t id = _lists.back(incoming.layer); id != recency_lists::NIL; id = _lists.towards_front(id)) {
        expert_key k{id / _n_experts, id % _n_experts};
        if (filter.evictable(k)) return k;
    }
    return std::nullopt;
}

bool lru_layer_policy::must_evict(expert_key incoming, uint64_t resident, uint64_t capacity) const {
    MOE_CHECK(incoming.layer < _n_layers);
    return resident >= capacity || _lists.size(incoming.layer) >= _quota[incoming.layer];
}

}  // namespace moe
