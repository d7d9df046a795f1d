// Transfer accounting for one link of the expert path (file -> RAM reads, RAM -> VRAM copies, host tier ->
// compute tier copies): bytes moved, transfers, and the wall time the link was busy, meaning at least one of its
// transfers was in flight. Overlapping transfers count once, so bytes / busy time is the rate the link achieved
// while it was in use (docs/io-path.md); the sum of per-transfer times is kept beside it, and is larger than the
// busy time when transfers overlap (e.g. four reads in flight at once).
// link_meter is not thread-safe: its owner calls it under the lock that already guards its own bookkeeping.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace moe {

struct link_stats {
    uint64_t bytes = 0;        // bytes delivered by transfers that succeeded
    uint64_t transfers = 0;    // transfers that succeeded
    uint64_t failed = 0;       // transfers that failed (their time counts as busy, their bytes do not)
    uint64_t busy_ns = 0;      // wall time with at least one transfer in flight
    uint64_t transfer_ns = 0;  // sum of the transfers' own times (>= busy_ns)
    double seconds() const { return double(busy_ns) / 1e9; }
    // Achieved rate in GB/s (1e9 bytes): bytes / busy time; 0 before any busy time.
    double gb_per_s() const { return busy_ns ? double(bytes) / double(busy_ns) : 0.0; }
};

class link_meter {
public:
    using clock = std::chrono::steady_clock;

    // A transfer starts at `t`.
    void begin(clock::time_point t) {
        if (_active++ == 0) _since = t;
    }
    // The transfer that began at `start` ended at `t`, delivering `bytes` (ok) or failing. `t` may be taken
    // before the owner's lock, so ends can arrive out of order: a busy period closes at the latest end seen.
    void end(clock::time_point start, clock::time_point t, uint64_t bytes, bool ok) {
        if (_active == 0) return;  // a begin() lost to reset() while in flight: nothing to close
        _latest_end = std::max(_latest_end, t);
        _s.transfer_ns += ns(start, t);
        if (ok) {
            _s.bytes += bytes;
            _s.transfers++;
        } else {
            _s.failed++;
        }
        if (--_active == 0) _s.busy_ns += ns(_since, std::max(t, _latest_end));
    }
    // The counters, with a busy period still open counted up to `now`.
    link_stats stats(clock::time_point now) const {
        link_stats s = _s;
        if (_active) s.busy_ns += ns(_since, now);
        return s;
    }
    // Zeroes the counters; transfers in flight stay in flight, busy from `now` on.
    void reset(clock::time_point now) {
        _s = link_stats{};
        if (_active) _since = now;
    }

private:
    static uint64_t ns(clock::time_point a, clock::time_point b) {
        return b > a ? uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count()) : 0;
    }
    uint32_t _active = 0;
    clock::time_point _since{}, _latest_end{};
    link_stats _s;
};

}  // namespace moe
