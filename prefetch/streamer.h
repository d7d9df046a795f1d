// The streamer: the expert_loader that moves an expert from the model file into the cache's slot, file ->
// slot for a host tier, file -> pinned staging buffer -> device slot (copy stream + per-slot event) for a
// DEVICE tier. It sits between the cache (which decides *what* lives where) and the readers (which move bytes):
//  - one expert request = all of the expert's byte ranges, packed in order, through one expert_reader call;
//  - a bounded number of requests at the reader (max_in_flight) and the rest in a priority queue: demand loads
//    first, then prefetches by priority value (lower = sooner, e.g. a deadline), FIFO within equal priority;
//  - a load of a key already queued or in flight into the same slot joins it (and a demand promotes a queued
//    prefetch); promote() does the same for a demand that joined a prefetch inside the cache (the cache does
//    not call its loader then), so the runtime calls it when acquire() hands back a pending handle;
//  - cancel() / cancel_prefetches() drop QUEUED prefetches (never one at the reader) through their tickets'
//    cancel() ("cancelled" message): the cache then frees the slot, the expert is ABSENT again, and the cache
//    counts a cancelled load, not a failed one;
//  - a read error fails the ticket with the reader's message (file, offset, errno text); a slot is only ever
//    reported ready once every byte has landed (and, on the device path, once its copy event has completed).
// Request records, the queue and staging buffers are allocated at construction: nothing per request after that
// (the expert_reader below recycles its own groups).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cache/expert_loader.h"
#include "cache/memory_tier.h"
#include "prefetch/copy_engine.h"
#include "prefetch/expert_reader.h"
#include "prefetch/host_buffer.h"
#include "prefetch/link_meter.h"

namespace moe {

// Where each expert's bytes lie: for key (layer, expert) the ranges at index layer * n_experts + expert, in the
// order they are packed into the slot. Built from runtime's expert layout by the caller (prefetch/ does not
// depend on runtime/).
struct streamer_layout {
    uint32_t n_layers = 0;
    uint32_t n_experts = 0;
    std::vector<std::vector<byte_range>> ranges;  // (n_layers * n_experts) ranges of each expert
};

struct streamer_config {
    uint32_t max_in_flight = 4;  // expert requests at the reader at once (device path: one staging buffer each)
    // Request records (queued + in flight). 0: the destination tier's slot count + max_in_flight, which a single
    // cache over that tier never exceeds (it has at most one load per slot).
    uint32_t max_requests = 0;
    // Tests: go through the staging buffers and the copy engine even for a host tier (host memcpy engine), so
    // the device path's bookkeeping runs on machines without a GPU.
    bool force_staging = false;
};

// Counters for `moe run` and benches; times are sums over requests (divide by the counts for means).
struct streamer_stats {
    uint64_t n_requests = 0;     // load() calls accepted (joins included)
    uint64_t n_demand = 0;       // ... of which demand loads
    uint64_t n_prefetch = 0;     // ... of which prefetches
    uint64_t n_joined = 0;       // loads that joined a request already queued or in flight
    uint64_t n_promoted = 0;     // queued prefetches turned into demand loads (by a join or promote())
    uint64_t n_loaded = 0;       // expert requests that completed (their tickets completed)
    uint64_t n_failed = 0;       // expert requests that failed (read error, no free record)
    uint64_t n_cancelled = 0;    // queued prefetch requests cancelled (or dropped at shutdown)
    uint64_t bytes_read = 0;     // expert bytes delivered into slots
    uint64_t queue_wait_ns = 0;  // enqueue -> handed to the reader
    uint64_t read_ns = 0;        // handed to the reader -> every range read
    uint64_t copy_ns = 0;        // staged path: read done -> copy event completed
    uint32_t max_queued = 0;     // deepest the queue got
    // Per link (prefetch/link_meter.h): the reads file -> slot or staging buffer, from hand-off to the reader to
    // the last range back (failed reads count as busy time); and on the staged path the copies staging -> slot,
    // from issue to the copy event observed complete.
    link_stats read_link;
    link_stats copy_link;
};

class streamer final : public expert_loader {
public:
    // `files[i]` is file index i of the byte ranges (not owned; must outlive the streamer). `dst_tier` is the
    // tier of the cache this streamer fills (its kind picks the path, its slot size bounds every expert); it
    // must outlive the streamer. Throws moe::error when a range names a missing file, reaches past its file's
    // end, or an expert does not fit a slot.
    streamer(const streamer_config& cfg, const streamer_layout& layout, std::vector<file_source*> files,
             const memory_tier& dst_tier);
    // Fails every queued request ("shutting down"), waits for those at the reader and their copies. Destroy the
    // cache first in normal operation (its destructor waits for loads, which this streamer then finishes).
    ~streamer() override;
    streamer(const streamer&) = delete;
    streamer& operator=(const streamer&) = delete;

    // expert_loader: queues (or joins) the request; never blocks on I/O. Throws moe::error before touching the
    // ticket when the key is outside the layout or the expert's ranges do not fit req.bytes.
    void load(const load_request& req, load_ticket ticket) override;

    // A queued prefetch of `key` becomes a demand load (it overtakes every other prefetch). True when one was
    // queued; false when none is queued (already at the reader, done, or never asked for).
    bool promote(expert_key key) override;
    // Sets the priority of `key`'s prefetch (lower = sooner; e.g. the token/layer time it is predicted for):
    // applied to a queued prefetch now, else remembered for the next prefetch load of `key`. Default: lowest
    // priority (after every prefetch with a priority), FIFO.
    void set_priority(expert_key key, uint64_t priority) override;
    // Cancels `key`'s queued prefetch: its tickets are cancelled and the cache frees the slot. True when
    // one was cancelled; a demand or a request already at the reader is left alone.
    bool cancel(expert_key key) override;
    // Cancels every prefetch queued when the call starts (stale hints after the router moved on); returns how many.
    uint32_t cancel_prefetches();

    // Packed bytes of an expert (what the cache's expert_bytes should answer).
    uint64_t expert_bytes(expert_key key) const;
    streamer_stats stats() const;
    void reset_stats();
    uint32_t n_queued() const;
    uint32_t n_in_flight() const;
    // Which path loads take: true when reads go through staging buffers and the copy engine.
    bool staged() const { return _staged; }
    // true when the copies run on a GPU copy stream (the DEVICE tier in a CUDA build with a GPU).
    bool on_device() const { return _copies && _copies->on_device(); }
#ifdef MOE_HAVE_CUDA
    // Device path: make `stream` wait (on the GPU) for the last copy into `slot`. A completed ticket already
    // implies the copy landed; this lets a compute stream order itself on the copy without a host round trip.
    void stream_wait(uint32_t slot, cudaStream_t stream);
#endif

private:
    static constexpr uint32_t k_max_tickets = 4;  // a request plus the loads that joined it
    static constexpr uint32_t k_none = std::numeric_limits<uint32_t>::max();
    static constexpr uint64_t k_default_priority = std::numeric_limits<uint64_t>::max();
    using clock = std::chrono::steady_clock;

    enum class rec_state : uint8_t { FREE, QUEUED, READING, COPYING };

    // One expert request, from load() to its tickets; recycled through _free_recs.
    struct record {
        rec_state state = rec_state::FREE;
        bool demand = false;
        expert_key key;
        uint32_t key_index = 0;
        uint32_t slot = 0;
        uint8_t* dst = nullptr;  // the cache's slot (a device address on the device path)
        uint64_t bytes = 0;      // packed bytes of the expert
        uint64_t priority = k_default_priority;
        uint64_t seq = 0;  // enqueue order: FIFO among equal priorities
        uint32_t heap_pos = k_none;
        uint32_t staging = k_none;  // staging buffer index while staged
        load_ticket tickets[k_max_tickets];
        uint32_t n_tickets = 0;
        clock::time_point t_queued, t_read, t_copy;
    };
    struct read_listener_impl : expert_read_listener {
        streamer* owner = nullptr;
        void expert_read_done(uint64_t tag, bool ok, std::string_view error) override {
            owner->read_done(uint32_t(tag), ok, error);
        }
    };
    // What a finished record leaves behind once it is recycled: the tickets to call outside the lock.
    struct finished {
        load_ticket tickets[k_max_tickets];
        uint32_t n_tickets = 0;
    };

    // Heap of queued records (ordered by before()), indexed so promote/cancel can move or remove any entry.
    bool before(const record& a, const record& b) const;
    void heap_push(uint32_t r);
    void heap_remove(uint32_t r);
    void heap_fix(uint32_t pos);
    void heap_swap(uint32_t i, uint32_t j);

    uint32_t key_index(expert_key key) const;  // throws moe::error outside the layout
    // Starts queued requests while fewer than max_in_flight are at the reader. Called without the lock.
    void pump();
    void start(uint32_t r);
    void read_done(uint32_t r, bool ok, std::string_view error);
    void copy_worker();
    // Under the lock: recycles record r and moves its tickets into `out`.
    void release_locked(uint32_t r, finished& out);
    // Without the lock: calls the tickets, then lets the next request start.
    void finish(const finished& f, bool ok, std::string_view error, bool was_in_flight);
    void fail_cancelled(const finished& f, expert_key key);

    streamer_config _cfg;
    uint32_t _n_layers = 0;
    uint32_t _n_experts = 0;
    std::vector<byte_range> _ranges;     // every expert's ranges, concatenated
    std::vector<uint32_t> _first_range;  // (n_keys + 1) CSR offsets into _ranges
    std::vector<uint64_t> _packed;       // (n_keys) packed bytes of each expert
    bool _staged = false;
    uint64_t _slot_bytes = 0;

    mutable std::mutex _mu;
    std::condition_variable _idle_cv;     // signalled when a request leaves the reader/copy path
    std::vector<record> _recs;            // (max_requests)
    std::vector<uint32_t> _free_recs;     // stack of free record indices
    std::vector<uint32_t> _heap;          // queued record indices (capacity max_requests, reserved)
    std::vector<uint32_t> _by_key;        // (n_keys) the live record of each key, k_none when none
    std::vector<uint64_t> _priority;      // (n_keys) set_priority() values waiting for the next prefetch
    std::vector<uint32_t> _free_staging;  // stack of free staging buffer indices
    uint32_t _in_flight = 0;              // requests at the reader or the copy engine (incl. ticket calls)
    bool _pumping = false;                // one thread runs pump()'s loop; others leave the work to it
    bool _stopping = false;
    uint64_t _seq = 0;
    streamer_stats _stats;
    link_meter _read_meter, _copy_meter;  // under _mu; copied into stats()

    // Staged path: staging buffers, the copy engine and the thread that waits for copies to land.
    std::vector<host_buffer> _staging;  // (max_in_flight, slot_bytes)
    std::unique_ptr<copy_engine> _copies;
    std::vector<uint32_t> _copy_queue;  // ring (max_requests): records whose copy was issued, in issue order
    uint32_t _copy_head = 0, _copy_count = 0;
    std::condition_variable _copy_cv;
    std::thread _copy_thread;

    read_listener_impl _listener;
    // Declared last so it is destroyed first: its destructor waits until every read callback (which touches the
    // members above) has returned.
    std::unique_ptr<expert_reader> _reader;
};

}  // namespace moe
