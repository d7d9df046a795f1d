// The streamer (see streamer.h): request records, the priority queue, the reader/copy pipeline and tickets.
//
// Locking: one mutex guards records, queue and counters. Tickets are always called without it (the cache takes
// its own lock in load_done, and a ticket may be called while the cache is inside load()), and so is the reader
// (expert_reader::read may report a failure before it returns, re-entering read_done on the same thread).
#include "prefetch/streamer.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "common/error.h"

namespace moe {

namespace {
uint64_t ns_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
    return b > a ? uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count()) : 0;
}
}  // namespace

streamer::streamer(const streamer_config& cfg, const streamer_layout& layout, std::vector<file_source*> files,
                   const memory_tier& dst_tier)
    : _cfg(cfg), _n_layers(layout.n_layers), _n_experts(layout.n_experts), _slot_bytes(dst_tier.slot_bytes()) {
    if (_cfg.max_in_flight == 0) fail("streamer: max_in_flight must be at least 1, got 0");
    if (_n_layers == 0 || _n_experts == 0)
        fail("streamer: expected a layout with n_layers > 0 and n_experts > 0, got {} and {}", _n_layers, _n_experts);
    const uint64_t n_keys = uint64_t(_n_layers) * _n_experts;
    if (n_keys >= k_none) fail("streamer: {} layers x {} experts is too many keys", _n_layers, _n_experts);
    if (layout.ranges.size() != n_keys)
        fail("streamer: the layout has range lists for {} experts, expected {} ({} layers x {} experts)",
             layout.ranges.size(), n_keys, _n_layers, _n_experts);
    for (file_source* f : files) MOE_CHECK(f != nullptr);

    // Validate every range now so a bad layout is a start-up error, never a failed load in the token loop.
    _first_range.reserve(n_keys + 1);
    _packed.reserve(n_keys);
    for (uint32_t i = 0; i < n_keys; i++) {
        const uint32_t layer = i / _n_experts, expert = i % _n_experts;
        _first_range.push_back(uint32_t(_ranges.size()));
        uint64_t packed = 0;
        const auto& rs = layout.ranges[i];
        for (size_t j = 0; j < rs.size(); j++) {
            const byte_range& r = rs[j];
            if (r.file >= files.size())
                fail("streamer: expert (layer {}, expert {}) range {} names file index {}, but {} file(s) are open",
                     layer, expert, j, r.file, files.size());
            const uint64_t size = files[r.file]->size();
            if (r.offset > size || r.bytes > size - r.offset)
                fail(
                    "streamer: expert (layer {}, expert {}) range {} is {} bytes at offset {} of {}, past its end "
                    "({} bytes)",
                    layer, expert, j, r.bytes, r.offset, files[r.file]->path(), size);
            packed += r.bytes;
            _ranges.push_back(r);
        }
        if (packed > _slot_bytes)
            fail("streamer: expert (layer {}, expert {}) is {} bytes but the {} tier's slots hold {} bytes", layer,
                 expert, packed, tier_kind_name(dst_tier.kind()), _slot_bytes);
        _packed.push_back(packed);
    }
    _first_range.push_back(uint32_t(_ranges.size()));

    const uint32_t n_recs = _cfg.max_requests ? _cfg.max_requests : dst_tier.n_slots() + _cfg.max_in_flight;
    _recs.resize(n_recs);
    _free_recs.reserve(n_recs);
    for (uint32_t i = n_recs; i-- > 0;) _free_recs.push_back(i);  // pops record 0 first
    _heap.reserve(n_recs);
    _by_key.assign(n_keys, k_none);
    _priority.assign(n_keys, k_default_priority);

    _staged = dst_tier.kind() == tier_kind::DEVICE || _cfg.force_staging;
    if (_staged) {
        // One staging buffer per request at the reader: a request holds it from its read until its copy landed.
        for (uint32_t i = 0; i < _cfg.max_in_flight; i++) _staging.emplace_back(_slot_bytes);
        for (uint32_t i = _cfg.max_in_flight; i-- > 0;) _free_staging.push_back(i);
        copy_engine_config cc;
        cc.n_slots = dst_tier.n_slots();
        // Our sources are the staging buffers (pinned with a GPU): the engine's own ring is only a fallback.
        cc.staging_bytes = 1ull << 20;
        cc.n_staging = 2;
        cc.force_host = dst_tier.kind() != tier_kind::DEVICE;
        _copies = std::make_unique<copy_engine>(cc);
        _copy_queue.assign(n_recs, 0);
        _copy_thread = std::thread([this] { copy_worker(); });
    }

    _listener.owner = this;
    _reader = std::make_unique<expert_reader>(std::move(files));
    // A group is busy from its read's start until its completion callback has returned, and that callback starts
    // the next read (pump) first: reads at the reader plus callbacks still returning (one per completion thread).
    // Twice max_in_flight and a few more covers that, so the token loop allocates nothing here (forward_test
    // checks it with the prefetcher on); past it the pools still grow rather than fail.
    uint32_t max_ranges = 1;
    for (uint32_t k = 0; k + 1 < _first_range.size(); ++k)
        max_ranges = std::max(max_ranges, _first_range[k + 1] - _first_range[k]);
    _reader->reserve(2 * _cfg.max_in_flight + 8, max_ranges);
}

streamer::~streamer() {
    std::unique_lock<std::mutex> lock(_mu);
    _stopping = true;
    // Queued requests never reach the reader: fail them so their caches free the slots.
    while (!_heap.empty()) {
        const uint32_t r = _heap.front();
        heap_remove(r);
        finished f;
        _stats.n_cancelled++;
        release_locked(r, f);
        lock.unlock();
        finish(f, false, "streamer: shutting down before the read started", false);
        lock.lock();
    }
    _idle_cv.wait(lock, [&] { return _in_flight == 0 && !_pumping; });
    if (_copy_thread.joinable()) {
        _copy_cv.notify_all();  // _stopping with nothing in flight ends the worker
        lock.unlock();
        _copy_thread.join();
    }
    // _reader is destroyed next (declared last): it waits for read callbacks still returning through pump().
}

uint32_t streamer::key_index(expert_key key) const {
    if (key.layer >= _n_layers || key.expert >= _n_experts)
        fail("streamer: key (layer {}, expert {}) is outside the layout ({} layers x {} experts)", key.layer,
             key.expert, _n_layers, _n_experts);
    return key.layer * _n_experts + key.expert;
}

uint64_t streamer::expert_bytes(expert_key key) const {
    return _packed[key_index(key)];
}

// ---- priority queue ---------------------------------------------------------------------------------------

bool streamer::before(const record& a, const record& b) const {
    if (a.demand != b.demand) return a.demand;
    if (!a.demand && a.priority != b.priority) return a.priority < b.priority;
    return a.seq < b.seq;
}

void streamer::heap_swap(uint32_t i, uint32_t j) {
    std::swap(_heap[i], _heap[j]);
    _recs[_heap[i]].heap_pos = i;
    _recs[_heap[j]].heap_pos = j;
}

void streamer::heap_fix(uint32_t pos) {
    // Sift up, then down: one of them is a no-op.
    while (pos > 0) {
        const uint32_t parent = (pos - 1) / 2;
        if (!before(_recs[_heap[pos]], _recs[_heap[parent]])) break;
        heap_swap(pos, parent);
        pos = parent;
    }
    const uint32_t n = uint32_t(_heap.size());
    for (;;) {
        const uint32_t l = 2 * pos + 1, r = l + 1;
        uint32_t best = pos;
        if (l < n && before(_recs[_heap[l]], _recs[_heap[best]])) best = l;
        if (r < n && before(_recs[_heap[r]], _recs[_heap[best]])) best = r;
        if (best == pos) break;
        heap_swap(pos, best);
        pos = best;
    }
}

void streamer::heap_push(uint32_t r) {
    MOE_CHECK(_heap.size() < _heap.capacity());  // reserved for every record: push never allocates
    _recs[r].heap_pos = uint32_t(_heap.size());
    _heap.push_back(r);
    heap_fix(_recs[r].heap_pos);
}

void streamer::heap_remove(uint32_t r) {
    const uint32_t pos = _recs[r].heap_pos;
    MOE_CHECK(pos < _heap.size() && _heap[pos] == r);
    const uint32_t last = uint32_t(_heap.size()) - 1;
    if (pos != last) heap_swap(pos, last);
    _heap.pop_back();
    _recs[r].heap_pos = k_none;
    if (pos < _heap.size()) heap_fix(pos);
}

// ---- requests ---------------------------------------------------------------------------------------------

void streamer::load(const load_request& req, load_ticket ticket) {
    const uint32_t idx = key_index(req.key);
    if (req.dst == nullptr)
        fail("streamer: load of expert (layer {}, expert {}) has no destination", req.key.layer, req.key.expert);
    if (_staged && req.slot >= _copies->n_slots())
        fail("streamer: load of expert (layer {}, expert {}) names slot {}, but the tier has {} slots", req.key.layer,
             req.key.expert, req.slot, _copies->n_slots());
    if (_packed[idx] > req.bytes)
        fail("streamer: expert (layer {}, expert {}) is {} bytes of ranges but the request has room for {}",
             req.key.layer, req.key.expert, _packed[idx], req.bytes);

    std::unique_lock<std::mutex> lock(_mu);
    if (_stopping) {
        lock.unlock();
        ticket.fail("streamer: shutting down");
        return;
    }
    _stats.n_requests++;
    (req.prefetch ? _stats.n_prefetch : _stats.n_demand)++;

    // The same key into the same slot, already queued or at the reader: one read serves both.
    const uint32_t live = _by_key[idx];
    if (live != k_none && _recs[live].dst == req.dst && _recs[live].slot == req.slot) {
        record& rec = _recs[live];
        if (rec.n_tickets == k_max_tickets) {
            lock.unlock();
            ticket.fail("streamer: too many loads joined one request");
            return;
        }
        rec.tickets[rec.n_tickets++] = ticket;
        _stats.n_joined++;
        if (!req.prefetch && !rec.demand) {
            rec.demand = true;
            _stats.n_promoted++;
            if (rec.state == rec_state::QUEUED) {
                rec.seq = _seq++;
                heap_fix(rec.heap_pos);
            }
        }
        return;
    }

    if (_free_recs.empty()) {
        _stats.n_failed++;
        const size_t n = _recs.size();
        lock.unlock();
        char msg[160];
        auto end =
            fmt::format_to_n(msg, sizeof msg, "streamer: all {} request records are in use (raise max_requests)", n);
        ticket.fail(std::string_view(msg, std::min(end.size, sizeof msg)));
        return;
    }
    const uint32_t r = _free_recs.back();
    _free_recs.pop_back();
    record& rec = _recs[r];
    rec.state = rec_state::QUEUED;
    rec.demand = !req.prefetch;
    rec.key = req.key;
    rec.key_index = idx;
    rec.slot = req.slot;
    rec.dst = static_cast<uint8_t*>(req.dst);
    rec.bytes = _packed[idx];
    // A set_priority() hint is used up by the next load of the key, whichever kind (a demand ignores it).
    const uint64_t hinted = std::exchange(_priority[idx], k_default_priority);
    rec.priority = req.prefetch ? hinted : k_default_priority;
    rec.seq = _seq++;
    rec.staging = k_none;
    rec.tickets[0] = ticket;
    rec.n_tickets = 1;
    rec.t_queued = clock::now();
    // A second load of the key into another slot (two caches over one streamer) runs on its own, unindexed.
    if (live == k_none) _by_key[idx] = r;
    heap_push(r);
    _stats.max_queued = std::max(_stats.max_queued, uint32_t(_heap.size()));
    lock.unlock();
    pump();
}

bool streamer::promote(expert_key key) {
    if (key.layer >= _n_layers || key.expert >= _n_experts) return false;
    std::lock_guard<std::mutex> lock(_mu);
    const uint32_t r = _by_key[key.layer * _n_experts + key.expert];
    if (r == k_none || _recs[r].state != rec_state::QUEUED || _recs[r].demand) return false;
    _recs[r].demand = true;
    _recs[r].seq = _seq++;  // FIFO among demands from the moment it became one
    heap_fix(_recs[r].heap_pos);
    _stats.n_promoted++;
    return true;
}

void streamer::set_priority(expert_key key, uint64_t priority) {
    const uint32_t idx = key_index(key);
    std::lock_guard<std::mutex> lock(_mu);
    const uint32_t r = _by_key[idx];
    if (r == k_none) {
        _priority[idx] = priority;
        return;
    }
    if (_recs[r].state == rec_state::QUEUED && !_recs[r].demand) {
        _recs[r].priority = priority;
        heap_fix(_recs[r].heap_pos);
    }
}

void streamer::fail_cancelled(const finished& f, expert_key key) {
    char msg[128];
    auto end = fmt::format_to_n(msg, sizeof msg, "streamer: prefetch of expert (layer {}, expert {}) cancelled",
                                key.layer, key.expert);
    // Through ticket.cancel, not fail: the cache then counts a withdrawn hint, not a failed load. The record
    // never reached the reader, so there is no in-flight place to give back (finish's other half).
    const std::string_view why(msg, std::min(end.size, sizeof msg));
    for (uint32_t i = 0; i < f.n_tickets; i++) f.tickets[i].cancel(why);
}

bool streamer::cancel(expert_key key) {
    if (key.layer >= _n_layers || key.expert >= _n_experts) return false;
    finished f;
    {
        std::lock_guard<std::mutex> lock(_mu);
        const uint32_t r = _by_key[key.layer * _n_experts + key.expert];
        if (r == k_none || _recs[r].state != rec_state::QUEUED || _recs[r].demand) return false;
        heap_remove(r);
        _stats.n_cancelled++;
        release_locked(r, f);
    }
    fail_cancelled(f, key);
    return true;
}

uint32_t streamer::cancel_prefetches() {
    uint32_t n = 0;
    uint64_t bound;
    {
        std::lock_guard<std::mutex> lock(_mu);
        bound = _seq;
    }
    // One record per lock hold: its tickets must be called without the lock, and nothing is allocated to
    // remember a batch. Records queued after the call started (seq >= bound) are left alone.
    for (;;) {
        finished f;
        expert_key key;
        {
            std::lock_guard<std::mutex> lock(_mu);
            uint32_t found = k_none;
            for (uint32_t r : _heap)
                if (!_recs[r].demand && _recs[r].seq < bound) {
                    found = r;
                    break;
                }
            if (found == k_none) return n;
            key = _recs[found].key;
            heap_remove(found);
            _stats.n_cancelled++;
            release_locked(found, f);
        }
        fail_cancelled(f, key);
        n++;
    }
}

void streamer::release_locked(uint32_t r, finished& out) {
    record& rec = _recs[r];
    for (uint32_t i = 0; i < rec.n_tickets; i++) out.tickets[i] = rec.tickets[i];
    out.n_tickets = rec.n_tickets;
    rec.n_tickets = 0;
    if (_by_key[rec.key_index] == r) _by_key[rec.key_index] = k_none;
    if (rec.staging != k_none) {
        _free_staging.push_back(rec.staging);
        rec.staging = k_none;
    }
    rec.state = rec_state::FREE;
    _free_recs.push_back(r);
}

void streamer::finish(const finished& f, bool ok, std::string_view error, bool was_in_flight) {
    for (uint32_t i = 0; i < f.n_tickets; i++) {
        if (ok)
            f.tickets[i].complete();
        else
            f.tickets[i].fail(error);
    }
    if (!was_in_flight) return;
    {
        // The request leaves the pipeline only now, after its tickets: the destructor's wait for _in_flight == 0
        // then also means no ticket call is still running.
        std::lock_guard<std::mutex> lock(_mu);
        _in_flight--;
        _idle_cv.notify_all();
        _copy_cv.notify_all();
    }
    pump();
}

// ---- pipeline ---------------------------------------------------------------------------------------------

void streamer::pump() {
    std::unique_lock<std::mutex> lock(_mu);
    if (_pumping || _stopping) return;
    _pumping = true;
    // One pumping thread at a time; another thread that frees a place or queues a request while we are outside
    // the lock finds _pumping set and leaves it to us: the loop re-checks under the lock before it exits.
    while (!_stopping && _in_flight < _cfg.max_in_flight && !_heap.empty()) {
        const uint32_t r = _heap.front();
        heap_remove(r);
        record& rec = _recs[r];
        rec.state = rec_state::READING;
        if (_staged) {
            MOE_CHECK(!_free_staging.empty());  // one buffer per place at the reader
            rec.staging = _free_staging.back();
            _free_staging.pop_back();
        }
        rec.t_read = clock::now();
        _read_meter.begin(rec.t_read);
        _stats.queue_wait_ns += ns_between(rec.t_queued, rec.t_read);
        _in_flight++;
        lock.unlock();
        start(r);
        lock.lock();
    }
    _pumping = false;
    _idle_cv.notify_all();
}

void streamer::start(uint32_t r) {
    // Read what we need out of the record first: once read() is called the request may complete (and the
    // record be reused) before it returns.
    const record& rec = _recs[r];
    const uint32_t idx = rec.key_index;
    std::span<const byte_range> ranges(_ranges.data() + _first_range[idx], _first_range[idx + 1] - _first_range[idx]);
    uint8_t* dst = _staged ? _staging[rec.staging].data() : rec.dst;
    const uint64_t capacity = _staged ? _staging[rec.staging].size() : rec.bytes;
    try {
        _reader->read(ranges, dst, capacity, &_listener, r);
    } catch (const std::exception& e) {
        read_done(r, false, e.what());  // read() throws before starting any I/O
    }
}

void streamer::read_done(uint32_t r, bool ok, std::string_view error) {
    const auto now = clock::now();
    std::unique_lock<std::mutex> lock(_mu);
    record& rec = _recs[r];
    MOE_CHECK(rec.state == rec_state::READING);
    _stats.read_ns += ns_between(rec.t_read, now);
    _read_meter.end(rec.t_read, now, rec.bytes, ok);
    if (!ok) {
        const expert_key key = rec.key;
        _stats.n_failed++;
        finished f;
        release_locked(r, f);
        lock.unlock();
        // Error path only: the message names the expert, then the reader's range/file/offset/errno text.
        finish(f, false,
               fmt::format("streamer: reading expert (layer {}, expert {}): {}", key.layer, key.expert, error), true);
        return;
    }
    if (!_staged) {
        _stats.n_loaded++;
        _stats.bytes_read += rec.bytes;
        finished f;
        release_locked(r, f);
        lock.unlock();
        finish(f, true, {}, true);
        return;
    }
    // Staged path: the bytes are in staging; start the copy, then let the copy thread wait for its event.
    rec.state = rec_state::COPYING;
    rec.t_copy = now;
    _copy_meter.begin(now);
    const uint32_t slot = rec.slot;
    uint8_t* dst = rec.dst;
    const host_buffer& src = _staging[rec.staging];
    const uint64_t bytes = rec.bytes;
    lock.unlock();
    // Issued before the record is queued for the copy thread, so its wait() sees this copy's event.
    _copies->copy(slot, dst, src.data(), bytes, src.cuda_pinned());
    lock.lock();
    _copy_queue[(_copy_head + _copy_count) % _copy_queue.size()] = r;
    _copy_count++;
    _copy_cv.notify_all();
}

void streamer::copy_worker() {
    std::unique_lock<std::mutex> lock(_mu);
    for (;;) {
        _copy_cv.wait(lock, [&] { return _copy_count > 0 || (_stopping && _in_flight == 0); });
        if (_copy_count == 0) return;
        const uint32_t r = _copy_queue[_copy_head];
        _copy_head = (_copy_head + 1) % uint32_t(_copy_queue.size());
        _copy_count--;
        const uint32_t slot = _recs[r].slot;
        lock.unlock();
        _copies->wait(slot);  // the slot's event: the copy landed
        const auto now = clock::now();
        lock.lock();
        record& rec = _recs[r];
        MOE_CHECK(rec.state == rec_state::COPYING);
        _stats.copy_ns += ns_between(rec.t_copy, now);
        _copy_meter.end(rec.t_copy, now, rec.bytes, true);
        _stats.n_loaded++;
        _stats.bytes_read += rec.bytes;
        finished f;
        release_locked(r, f);
        lock.unlock();
        finish(f, true, {}, true);
        lock.lock();
    }
}

#ifdef MOE_HAVE_CUDA
void streamer::stream_wait(uint32_t slot, cudaStream_t stream) {
    MOE_CHECK(on_device());
    _copies->stream_wait(slot, stream);
}
#endif

// ---- introspection ----------------------------------------------------------------------------------------

streamer_stats streamer::stats() const {
    const auto now = clock::now();
    std::lock_guard<std::mutex> lock(_mu);
    streamer_stats s = _stats;
    s.read_link = _read_meter.stats(now);
    s.copy_link = _copy_meter.stats(now);
    return s;
}

void streamer::reset_stats() {
    const auto now = clock::now();
    std::lock_guard<std::mutex> lock(_mu);
    _stats = streamer_stats{};
    _read_meter.reset(now);
    _copy_meter.reset(now);
}

uint32_t streamer::n_queued() const {
    std::lock_guard<std::mutex> lock(_mu);
    return uint32_t(_heap.size());
}

uint32_t streamer::n_in_flight() const {
    std::lock_guard<std::mutex> lock(_mu);
    return _in_flight;
}

}  // namespace moe
