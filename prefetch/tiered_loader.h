// The tiered loader: the expert_loader that stacks two expert caches (expert_cache.h: "caches stack"). An expert
// the upper cache misses is acquired from the lower cache (a host tier in pinned RAM, itself loaded from the
// model file by the streamer), waited for, copied into the upper slot, and its lower pin released; so an expert
// evicted from compute memory comes back from RAM, not from the file.
//
// It lives in prefetch/, not cache/: for a DEVICE upper tier the copy goes through the copy engine (copy stream,
// per-slot events, prefetch/copy_engine.h), and cache/ must not depend on prefetch/. prefetch/ already depends on
// cache/ (the streamer is an expert_loader), so this is the direction the layering allows.
//
// Choices:
//  - load() never blocks: a lower hit is copied at once on the caller's thread (host upper tier) or handed to
//    the worker (device upper tier); a lower miss is handed to the worker thread, which waits for the lower
//    load, copies and completes the ticket. Copies land before the ticket completes and before the lower pin is
//    dropped (the lower slot is the copy's source).
//  - A failed lower load fails the upper ticket with the lower loader's message (every upper waiter sees it);
//    a lower cache with every slot pinned or loading fails the upper ticket too. The lower tier holding at least
//    as many slots as the upper one rules that out: each lower pin belongs to one upper load in flight.
//  - The lower cache sees one access per upper miss (its own clock), so its policy orders experts by when the
//    upper tier last had to fetch them.
//  - Scheduling hints travel down: an upper prefetch is acquired from the lower cache as a prefetch (queued
//    behind demands by the lower loader, at the priority set_priority gave it); promote() turns it into a demand
//    in both loaders; cancel() withdraws an upper prefetch whose copy has not started (its ticket is cancelled,
//    not failed) and cancels the lower read if it is still queued.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "cache/expert_cache.h"
#include "cache/expert_loader.h"
#include "cache/memory_tier.h"
#include "prefetch/copy_engine.h"
#include "prefetch/link_meter.h"

namespace moe {

class tiered_loader final : public expert_loader {
public:
    // `lower` is the cache to read experts from; `upper` is the tier of the cache this loader fills (its kind
    // picks memcpy or the copy engine, its slot count sizes the copy engine's events). Both must outlive the
    // loader. Throws moe::error when the upper slots are smaller than the lower ones.
    // `lower_loader` (optional) is the lower cache's loader, told the scheduling hints.
    tiered_loader(expert_cache& lower, const memory_tier& upper, expert_loader* lower_loader = nullptr);
    // Waits for every load handed to the worker (destroy the upper cache first: it waits for its loads).
    ~tiered_loader() override;
    tiered_loader(const tiered_loader&) = delete;
    tiered_loader& operator=(const tiered_loader&) = delete;

    void load(const load_request& req, load_ticket ticket) override;
    bool promote(expert_key key) override;
    void set_priority(expert_key key, uint64_t priority) override;
    bool cancel(expert_key key) override;

    // true when copies into the upper tier run on a GPU copy stream.
    bool on_device() const { return _copies && _copies->on_device(); }
    // The copies lower slot -> upper slot (prefetch/link_meter.h): bytes, copies, and the time at least one was
    // running (a memcpy, or a copy-engine copy from issue until its event completed); waiting for the lower
    // load (a file read, counted by the streamer) is not part of it.
    link_stats copy_stats() const;

private:
    struct job {
        load_request req;
        load_ticket ticket;
        expert_handle pin;  // the lower cache's pin on the expert (the copy's source)
    };
    // Copies the (ready) lower expert into req.dst; for a device upper tier waits until the copy landed.
    void copy(const load_request& req, const expert_handle& pin);
    // Waits for the lower load, copies, releases the pin, completes or fails the ticket.
    void finish(job& j);
    void worker();
    link_meter::clock::time_point begin_copy();
    void end_copy(link_meter::clock::time_point start, uint64_t bytes, bool ok);

    expert_cache& _lower;
    const memory_tier& _upper;
    expert_loader* _lower_loader = nullptr;
    std::unique_ptr<copy_engine> _copies;  // DEVICE upper tier only
    bool _src_pinned = false;              // the lower tier's slots can be DMA'd directly

    mutable std::mutex _mu;
    std::condition_variable _cv;
    std::deque<job> _jobs;
    uint64_t _clock = 0;  // access time given to the lower cache's policy
    bool _stop = false;
    link_meter _copy_meter;  // under _mu
    std::thread _worker;
};

}  // namespace moe
