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
    uint64_t failed_loads = 0;    // loads that reported an error
    uint64_t bytes_loaded = 0;    // bytes of successfully completed loads
    uint64_t wait_ns = 0;         // time spent blocked in expert_handle::wait()

    layer_stats& operator+=(const layer_stats& o);
    friend bool operator==(const layer_stats&, const layer_stats&) = default;
    // hits / (hits + misses); 0 when nothing was acquired.
    double hit_rate() const;
};

struct cache_stats {
    std::vector<layer_stats> layers;  // (n_layers)

    layer_stats total() const;
    // A multi-line table: one row per layer that saw any traffic, then the total.
    std::string format() const;
};

}  // namespace moe
