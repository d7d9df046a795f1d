// Belady MIN: next uses are precomputed in one backward pass over the trace (O(accesses) memory), and the
// resident set is a heap on next-use row so a victim is O(log n).
#include "cache/policy_belady.h"

#include <algorithm>

#include "cache/trace.h"

namespace moe {

belady_policy::belady_policy(const routing_trace& future, uint32_t n_layers, uint32_t n_experts)
    : _future(future),
      _n_layers(n_layers),
      _n_experts(n_experts),
      _next(size_t(n_layers) * n_experts, NEVER),
      _heap(size_t(n_layers) * n_experts, before{this}) {
    MOE_CHECK(n_layers > 0 && n_experts > 0);
    if (future.n_layers != n_layers || future.n_experts != n_experts)
        fail("policy belady: trace shape {}x{} differs from the cache shape {}x{}", future.n_layers, future.n_experts,
             n_layers, n_experts);
    size_t n_rows = future.rows.size();
    _row_offset.resize(n_rows + 1, 0);
    for (size_t r = 0; r < n_rows; ++r) _row_offset[r + 1] = _row_offset[r] + future.rows[r].experts.size();
    _next_row.resize(_row_offset[n_rows]);
    std::vector<uint64_t> seen(size_t(n_layers) * n_experts, NEVER);
    for (size_t r = n_rows; r-- > 0;) {
        const trace_row& row = future.rows[r];
        for (size_t j = 0; j < row.experts.size(); ++j) {
            uint32_t id = dense_id(expert_key{row.layer, row.experts[j]}, n_layers, n_experts);
            _next_row[_row_offset[r] + j] = seen[id];
            seen[id] = r;
        }
    }
}

uint64_t belady_policy::next_use_after(expert_key k, uint64_t row) const {
    MOE_CHECK(row < _future.rows.size());
    const trace_row& r = _future.rows[row];
    MOE_CHECK(r.layer == k.layer);
    auto it = std::find(r.experts.begin(), r.experts.end(), k.expert);
    MOE_CHECK(it != r.experts.end());  // access_info::time must be the replayed row
    return _next_row[_row_offset[row] + size_t(it - r.experts.begin())];
}

void belady_policy::insert(expert_key k, const access_info& a) {
    uint32_t id = dense_id(k, _n_layers, _n_experts);
    MOE_CHECK(!_heap.contains(id));
    _next[id] = a.time;  // needed by the current row; the touch that follows moves it to its next use
    _heap.push(id);
}

void belady_policy::touch(expert_key k, const access_info& a) {
    uint32_t id = dense_id(k, _n_layers, _n_experts);
    MOE_CHECK(_heap.contains(id));
    _next[id] = next_use_after(k, a.time);
    _heap.update(id);
}

void belady_policy::erase(expert_key k) {
    uint32_t id = dense_id(k, _n_layers, _n_experts);
    if (_heap.contains(id)) _heap.remove(id);
}

std::optional<expert_key> belady_policy::victim(expert_key, const victim_filter& filter) {
    uint32_t n_e = _n_experts;
    uint32_t id = _heap.best([&](uint32_t i) { return filter.evictable(expert_key{i / n_e, i % n_e}); });
    if (id == policy_heap<before>::NIL) return std::nullopt;
    return expert_key{id / n_e, id % n_e};
}

}  // namespace moe
