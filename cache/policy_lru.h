// Global LRU over every (layer, expert) slot: the victim is the least recently used resident expert the
// filter allows. The recency list is intrusive over dense ids (layer * n_experts + expert) so an access is a
// few array writes, never a map lookup or an allocation.
#pragma once

#include <cstdint>
#include <vector>

#include "cache/eviction_policy.h"
#include "common/error.h"

namespace moe {

// Several doubly linked recency lists sharing one node array: node `id` is in at most one list. Front = most
// recently used, back = least recently used.
class recency_lists {
public:
    static constexpr uint32_t NIL = 0xffffffffu;

    recency_lists(size_t n_ids, size_t n_lists)
        : _prev(n_ids, NIL),
          _next(n_ids, NIL),
          _owner(n_ids, NIL),
          _head(n_lists, NIL),
          _tail(n_lists, NIL),
          _size(n_lists, 0) {}

    bool linked(uint32_t id) const { return _owner[id] != NIL; }
    uint32_t owner(uint32_t id) const { return _owner[id]; }
    size_t size(uint32_t list) const { return _size[list]; }
    uint32_t back(uint32_t list) const { return _tail[list]; }  // least recently used, NIL when empty
    uint32_t towards_front(uint32_t id) const { return _prev[id]; }

    void push_front(uint32_t list, uint32_t id) {
        _owner[id] = list;
        _prev[id] = NIL;
        _next[id] = _head[list];
        if (_head[list] != NIL)
            _prev[_head[list]] = id;
        else
            _tail[list] = id;
        _head[list] = id;
        ++_size[list];
    }
    void unlink(uint32_t id) {
        uint32_t list = _owner[id];
        if (_prev[id] != NIL)
            _next[_prev[id]] = _next[id];
        else
            _head[list] = _next[id];
        if (_next[id] != NIL)
            _prev[_next[id]] = _prev[id];
        else
            _tail[list] = _prev[id];
        _prev[id] = _next[id] = _owner[id] = NIL;
        --_size[list];
    }
    void move_to_front(uint32_t id) {
        uint32_t list = _owner[id];
        if (_head[list] == id) return;
        unlink(id);
        push_front(list, id);
    }

private:
    std::vector<uint32_t> _prev, _next, _owner;  // (n_ids)
    std::vector<uint32_t> _head, _tail;          // (n_lists)
    std::vector<size_t> _size;                   // (n_lists)
};

// Dense id of an expert key; a key outside the policy's shape is a caller bug.
inline uint32_t dense_id(expert_key k, uint32_t n_layers, uint32_t n_experts) {
    MOE_CHECK(k.layer < n_layers && k.expert < n_experts);
    return k.layer * n_experts + k.expert;
}

class lru_policy final : public eviction_policy {
public:
    lru_policy(uint32_t n_layers, uint32_t n_experts);

    std::string_view name() const override { return "lru"; }
    void insert(expert_key k, const access_info& a) override;
    void touch(expert_key k, const access_info& a) override;
    void erase(expert_key k) override;
    std::optional<expert_key> victim(expert_key incoming, const victim_filter& filter) override;

private:
    uint32_t _n_layers, _n_experts;
    recency_lists _lists;  // one list: all resident experts
};

}  // namespace moe
