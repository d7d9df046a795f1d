// Global LRU: insert and touch move the expert to the front; the victim is the first evictable expert from
// the back. Inserting counts as a use so that a freshly loaded expert is not the next victim before the row
// that needed it has run.
#include "cache/policy_lru.h"

namespace moe {

lru_policy::lru_policy(uint32_t n_layers, uint32_t n_experts)
    : _n_layers(n_layers), _n_experts(n_experts), _lists(size_t(n_layers) * n_experts, 1) {
    MOE_CHECK(n_layers > 0 && n_experts > 0);
}

void lru_policy::insert(expert_key k, const access_info&) {
    uint32_t id = dense_id(k, _n_layers, _n_experts);
    MOE_CHECK(!_lists.linked(id));
    _lists.push_front(0, id);
}

void lru_policy::touch(expert_key k, const access_info&) {
    uint32_t id = dense_id(k, _n_layers, _n_experts);
    MOE_CHECK(_lists.linked(id));
    _lists.move_to_front(id);
}

void lru_policy::erase(expert_key k) {
    uint32_t id = dense_id(k, _n_layers, _n_experts);
    if (_lists.linked(id)) _lists.unlink(id);  // erasing a non-resident expert is a no-op
}

std::optional<expert_key> lru_policy::victim(expert_key, const victim_filter& filter) {
    for (uint32_t id = _lists.back(0); id != recency_lists::NIL; id = _lists.towards_front(id)) {
        expert_key k{id / _n_experts, id % _n_experts};
        if (filter.evictable(k)) return k;
    }
    return std::nullopt;
}

}  // namespace moe
