// Hit/miss statistics of an expert cache, per MoE layer, so a run can say which layers thrash and how much
// time was spent waiting for bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe {

struct layer_stats {
    uint64_t hits = 0;            // acquire() found the expert resident
    uint64_t prefetch_hits = 0;   // ...of which it had been brought by prefetch() and not used since (also in hits)
    uint64_t misses = 0;          // acquire() found it absent or still loading (started or joined a load)
    uint64_t joins = 0;           // ...of which it was already loading (also in misses; no second load issued)
    uint64_t evictions = 0;       // resident experts of this layer evicted to make room
    uint64_t loads = 0;           // loads issued for experts of this layer (demand + prefetch)
    uint64_t prefetch_loads = 0;  // ...of which issued by prefetch()
    uint64_t failed_loads = 0;    // loads that reported an error (a cancelled load is not an error: see below)
    uint64_t bytes_loaded = 0;    // bytes of successfully completed loads
    uint64_t wait_ns = 0;         // time spent blocked in expert_handle::wait()
    // What became of prefetch() loads (docs/prefetch.md defines the figures built from these):
    uint64_t prefetch_joins = 0;   // misses that joined a load prefetch() had started (also in joins)
    uint64_t cancelled_loads = 0;  // prefetch loads the loader withdrew before reading (stale hints); never failed
    uint64_t prefetch_unused_evictions = 0;  // experts brought by prefetch() evicted before any acquire used them
    uint64_t prefetch_unused_bytes = 0;      // ...their bytes: moved for nothing

    layer_stats& operator+=(const layer_stats& o);
    friend bool operator==(const layer_stats&, const layer_stats&) = default;
    // hits / (hits + misses); 0 when nothing was acquired.
    double hit_rate() const;
    // Prefetch loads that an acquire used (a prefetch hit, or a join while it was still loading). Each prefetch
    // load is counted at most once: its first use clears its "prefetched" mark.
    uint64_t prefetch_used() const { return prefetch_hits + prefetch_joins; }
    // Prefetch loads that were never used: evicted unused, or cancelled. (Still resident and unused: neither.)
    uint64_t prefetch_wasted() const { return prefetch_unused_evictions + cancelled_loads; }
    // prefetch_used / (hits + misses): the share of the experts compute needed that a prefetch brought (resident
    // thanks to a prefetch, or arriving thanks to one). 0 when nothing was acquired.
    double prefetch_recall() const;
    // prefetch_used / prefetch_loads: the share of prefetch loads used before eviction. 0 without prefetch loads.
    double prefetch_precision() const;
};

struct cache_stats {
    std::vector<layer_stats> layers;  // (n_layers)

    layer_stats total() const;
    // A multi-line table: one row per layer that saw any traffic, then the total.
    std::string format() const;
};

}  // namespace moe
