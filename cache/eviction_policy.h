// Eviction policies behind one small interface: the cache tells the policy what became
// resident, what was used and what left; the policy only answers "which resident expert goes next".
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache/expert_key.h"

namespace moe {

// What the cache knows about one use of an expert; policies may ignore any of it.
struct access_info {
    uint64_t time = 0;    // monotonically increasing use counter (one per row of a trace / per token-layer)
    uint32_t rank = 0;    // position in the router's top-k (0 = highest weight)
    float weight = 0.0f;  // router weight, 0 when unknown
};

// Which resident experts may be chosen as victims (not pinned, not needed by the current row).
struct victim_filter {
    virtual ~victim_filter() = default;
    virtual bool evictable(expert_key k) const = 0;
};

class eviction_policy {
public:
    virtual ~eviction_policy() = default;
    virtual std::string_view name() const = 0;
    // k took a slot (a load started, after a miss or a prefetch; it becomes usable when the load completes). It
    // is not yet "used": a touch follows when it is. A failed load is followed by erase(k).
    virtual void insert(expert_key k, const access_info& a) = 0;
    // k (resident) was used.
    virtual void touch(expert_key k, const access_info& a) = 0;
    // k left the cache (evicted or dropped).
    virtual void erase(expert_key k) = 0;
    // The resident expert to evict to make room for `incoming` (per-layer quota policies look at its layer),
    // among those the filter allows; nullopt when none is evictable.
    virtual std::optional<expert_key> victim(expert_key incoming, const victim_filter& filter) = 0;
    // Whether making `incoming` resident needs a victim first, with `resident` experts held out of `capacity`
    // slots. Default: a shared pool, so only when it is full. Per-layer quota policies (lru-layer) answer
    // for the incoming expert's layer, so a layer at its quota evicts even while other layers have room.
    // (Additive, by the "policies" helper: callers that never use quota policies may ignore it.)
    virtual bool must_evict(expert_key incoming, uint64_t resident, uint64_t capacity) const {
        (void)incoming;
        return resident >= capacity;
    }
};

}  // namespace moe
