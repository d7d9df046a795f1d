// Belady's MIN, the offline optimum used as the yardstick: the victim is the resident expert whose next use
// in the trace is farthest away, experts never used again first. It needs the trace it is replayed on and
// access_info::time must be the index of the row being replayed (the simulator does this).
#pragma once

#include <cstdint>
#include <vector>

#include "cache/policy_heap.h"
#include "cache/policy_lru.h"

namespace moe {

struct routing_trace;

class belady_policy final : public eviction_policy {
public:
    belady_policy(const routing_trace& future, uint32_t n_layers, uint32_t n_experts);

    std::string_view name() const override { return "belady"; }
    void insert(expert_key k, const access_info& a) override;
    void touch(expert_key k, const access_info& a) override;
    void erase(expert_key k) override;
    std::optional<expert_key> victim(expert_key incoming, const victim_filter& filter) override;

    static constexpr uint64_t NEVER = ~uint64_t(0);

private:
    uint64_t next_use_after(expert_key k, uint64_t row) const;

    struct before {
        const belady_policy* p;
        bool operator()(uint32_t a, uint32_t b) const {
            return p->_next[a] > p->_next[b] || (p->_next[a] == p->_next[b] && a < b);
        }
    };
    const routing_trace& _future;
    uint32_t _n_layers, _n_experts;
    std::vector<uint64_t> _row_offset;  // (n_rows + 1) first access index of each row
    std::vector<uint64_t> _next_row;    // (n_accesses) row of the next use of the same expert, NEVER if none
    std::vector<uint64_t> _next;        // (n_ids) next use of each resident expert
    policy_heap<before> _heap;          // resident experts, farthest next use first
};

}  // namespace moe
