// The loader interface of the expert cache: the cache hands the loader a slot to fill for an expert key and
// the loader reports back, later and possibly from another thread, through the ticket it was given. This is
// the seam where storage plugs in (file reader, host-tier cache, a fake that injects delays and faults).
#pragma once

#include <cstdint>
#include <string_view>

#include "cache/expert_key.h"

namespace moe {

// Who hears about finished loads (the expert cache). `token` is opaque to the loader.
class load_sink {
public:
    virtual ~load_sink() = default;
    // ok == false: `error` says what went wrong (it is reported to every waiter). Thread-safe, lock-free for
    // the caller: it may be called from any thread, including from inside expert_loader::load().
    virtual void load_done(uint64_t token, bool ok, std::string_view error) = 0;
    // The loader withdrew the load before reading anything (a queued prefetch whose hint went stale). Waiters, if
    // any, see it fail with `why`, but it is not a storage error, so the cache does not count it as a failed load.
    // Default: reported as a failure. Same threading rules as load_done.
    virtual void load_cancelled(uint64_t token, std::string_view why) { load_done(token, false, why); }
};

// One outstanding load. Exactly one of complete() / fail() / cancel() must be called, exactly once; until then the slot
// memory belongs to the loader and nobody else reads or writes it.
struct load_ticket {
    load_sink* sink = nullptr;
    uint64_t token = 0;

    void complete() const { sink->load_done(token, true, {}); }
    void fail(std::string_view error) const { sink->load_done(token, false, error); }
    void cancel(std::string_view why) const { sink->load_cancelled(token, why); }
};

// What to load and where to put it.
struct load_request {
    expert_key key;
    void* dst = nullptr;    // slot memory of the cache's tier (host or device address, per the tier kind)
    uint64_t bytes = 0;     // the expert's size (<= the tier's slot size)
    uint32_t slot = 0;      // slot index in the tier, for loaders that keep per-slot resources (events)
    bool prefetch = false;  // started by prefetch() rather than by a demand acquire()
};

class expert_loader {
public:
    virtual ~expert_loader() = default;
    // Starts filling req.dst; must not block on the cache (it is called without the cache's lock held, and
    // may call ticket.complete() before returning). Throwing from load() instead of using the ticket counts as
    // a failed load (throwing after using it is a double completion: a bug, caught by MOE_CHECK).
    virtual void load(const load_request& req, load_ticket ticket) = 0;

    // Scheduling hints for loads this loader holds queued. A loader without a queue ignores them (the defaults);
    // a loader that is itself backed by another cache (the tiered loader) passes them down, so a prefetch keeps
    // its priority and can be cancelled whatever tiers sit under the cache that started it.
    //
    // A demand now waits on `key`'s queued prefetch: serve it before the other prefetches. True when one was queued.
    virtual bool promote(expert_key /*key*/) { return false; }
    // The next (or the queued) prefetch load of `key` gets this priority (lower = sooner).
    virtual void set_priority(expert_key /*key*/, uint64_t /*priority*/) {}
    // Withdraws `key`'s queued prefetch: its ticket is cancelled (ticket.cancel), never failed. True when one was.
    virtual bool cancel(expert_key /*key*/) { return false; }
};

}  // namespace moe
