// An indexed binary min-heap over dense expert ids, ordered by a caller-supplied "evict a before b" relation,
// shared by the score-based policies (lfu, lfu-window, belady). Keys live in the policy; after changing an
// id's key the policy calls update(id). Finding the best *evictable* id walks the heap in key order from the
// root, so ids the filter refuses (the current row, pins) cost O(log n) each, not a full scan.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cache/eviction_policy.h"

namespace moe {

template <typename Before>  // bool before(uint32_t a, uint32_t b): a should be evicted before b
class policy_heap {
public:
    static constexpr uint32_t NIL = 0xffffffffu;

    policy_heap(size_t n_ids, Before before) : _pos(n_ids, NIL), _before(before) {}

    bool contains(uint32_t id) const { return _pos[id] != NIL; }
    size_t size() const { return _heap.size(); }

    void push(uint32_t id) {
        _pos[id] = uint32_t(_heap.size());
        _heap.push_back(id);
        sift_up(_pos[id]);
    }
    void remove(uint32_t id) {
        uint32_t i = _pos[id];
        uint32_t last = _heap.back();
        _heap.pop_back();
        _pos[id] = NIL;
        if (last == id) return;
        _heap[i] = last;
        _pos[last] = i;
        update_at(i);
    }
    void update(uint32_t id) { update_at(_pos[id]); }
    // Restores heap order after keys changed wholesale (a counter rescale can merge nearly equal keys).
    void rebuild() {
        for (size_t i = _heap.size() / 2; i-- > 0;) sift_down(uint32_t(i));
    }

    // The first id in eviction order that `ok(id)` accepts, or NIL.
    template <typename Ok>
    uint32_t best(Ok ok) {
        if (_heap.empty()) return NIL;
        if (ok(_heap[0])) return _heap[0];
        // Best-first search over the heap's tree; the frontier is a small heap of heap positions.
        auto cmp = [this](uint32_t a, uint32_t b) { return _before(_heap[b], _heap[a]); };
        _frontier.clear();
        auto push_children = [&](uint32_t i) {
            for (uint32_t c = 2 * i + 1; c <= 2 * i + 2 && c < _heap.size(); ++c) {
                _frontier.push_back(c);
                std::push_heap(_frontier.begin(), _frontier.end(), cmp);
            }
        };
        push_children(0);
        while (!_frontier.empty()) {
            std::pop_heap(_frontier.begin(), _frontier.end(), cmp);
            uint32_t i = _frontier.back();
            _frontier.pop_back();
            if (ok(_heap[i])) return _heap[i];
            push_children(i);
        }
        return NIL;
    }

private:
    void update_at(uint32_t i) {
        if (i > 0 && _before(_heap[i], _heap[(i - 1) / 2]))
            sift_up(i);
        else
            sift_down(i);
    }
    void sift_up(uint32_t i) {
        uint32_t id = _heap[i];
        while (i > 0) {
            uint32_t p = (i - 1) / 2;
            if (!_before(id, _heap[p])) break;
            _heap[i] = _heap[p];
            _pos[_heap[i]] = i;
            i = p;
        }
        _heap[i] = id;
        _pos[id] = i;
    }
    void sift_down(uint32_t i) {
        uint32_t id = _heap[i];
        size_t n = _heap.size();
        while (true) {
            size_t c = 2 * size_t(i) + 1;
            if (c >= n) break;
            if (c + 1 < n && _before(_heap[c + 1], _heap[c])) ++c;
            if (!_before(_heap[c], id)) break;
            _heap[i] = _heap[c];
            _pos[_heap[i]] = i;
            i = uint32_t(c);
        }
        _heap[i] = id;
        _pos[id] = i;
    }

    std::vector<uint32_t> _heap;      // heap order of resident ids
    std::vector<uint32_t> _pos;       // (n_ids) position in _heap or NIL
    std::vector<uint32_t> _frontier;  // scratch for best(), kept to avoid allocating per victim
    Before _before;
};

}  // namespace moe
