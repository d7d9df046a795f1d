// Tiered loader (see tiered_loader.h): upper slot <- lower cache, by memcpy or through the copy engine.
#include "prefetch/tiered_loader.h"

#include <cstring>
#include <string>

#include "common/error.h"
#include "common/units.h"

namespace moe {

tiered_loader::tiered_loader(expert_cache& lower, const memory_tier& upper, expert_loader* lower_loader)
    : _lower(lower), _upper(upper), _lower_loader(lower_loader) {
    if (upper.slot_bytes() < lower.tier().slot_bytes())
        fail(
            "tiered loader: the upper tier's slots ({}) are smaller than the lower tier's ({}); both must hold the "
            "largest expert",
            format_bytes(upper.slot_bytes()), format_bytes(lower.tier().slot_bytes()));
    if (upper.kind() == tier_kind::DEVICE) {
        copy_engine_config cc;
        cc.n_slots = upper.n_slots();
        _copies = std::make_unique<copy_engine>(cc);
        // A cudaHostAlloc'd tier (PINNED_HOST with a GPU) is DMA'd straight from its slots; anything else goes
        // through the copy engine's staging buffers.
        _src_pinned = lower.tier().kind() == tier_kind::PINNED_HOST && lower.tier().page_locked();
    }
    _worker = std::thread([this] { worker(); });
}

tiered_loader::~tiered_loader() {
    {
        std::lock_guard<std::mutex> lock(_mu);
        _stop = true;
    }
    _cv.notify_all();
    _worker.join();
}

void tiered_loader::load(const load_request& req, load_ticket ticket) {
    uint64_t now;
    {
        std::lock_guard<std::mutex> lock(_mu);
        now = ++_clock;
    }
    // Throws (a failed load for the upper cache, ticket untouched) when the key is outside the lower cache's
    // key space or every lower slot is pinned or loading.
    expert_handle pin = _lower.acquire(req.key, access_info{now, 0, 0.0f}, req.prefetch);
    if (pin.bytes() != req.bytes)
        fail("tiered loader: expert {} of layer {} has {} bytes in the lower cache but the upper asks for {}",
             req.key.expert, req.key.layer, pin.bytes(), req.bytes);
    if (pin.ready() && !_copies) {
        // RAM hit into a host slot: a memcpy, done before returning (the cache allows completing inside load()).
        const auto t0 = begin_copy();
        std::memcpy(req.dst, pin.data(), req.bytes);
        end_copy(t0, req.bytes, true);
        pin.reset();
        ticket.complete();
        return;
    }
    {
        std::lock_guard<std::mutex> lock(_mu);
        _jobs.push_back(job{req, ticket, std::move(pin)});
    }
    _cv.notify_one();
}

bool tiered_loader::promote(expert_key key) {
    bool queued = false;
    {
        std::lock_guard<std::mutex> lock(_mu);
        for (auto it = _jobs.begin(); it != _jobs.end(); ++it)
            if (it->req.key == key && it->req.prefetch) {
                // A demand waits on it now: to the front, past the prefetches the worker would copy first.
                job j = std::move(*it);
                j.req.prefetch = false;
                _jobs.erase(it);
                _jobs.push_front(std::move(j));
                queued = true;
                break;
            }
    }
    if (_lower_loader) queued = _lower_loader->promote(key) || queued;
    return queued;
}

void tiered_loader::set_priority(expert_key key, uint64_t priority) {
    if (_lower_loader) _lower_loader->set_priority(key, priority);
}

bool tiered_loader::cancel(expert_key key) {
    job j;
    bool found = false;
    {
        std::lock_guard<std::mutex> lock(_mu);
        for (auto it = _jobs.begin(); it != _jobs.end(); ++it)
            if (it->req.key == key && it->req.prefetch) {
                j = std::move(*it);
                _jobs.erase(it);
                found = true;
                break;
            }
    }
    if (!found) return false;
    // Unpin before cancelling below: a lower read that is still queued is then withdrawn and its slot freed; one
    // already at the reader finishes into the lower tier, where a later miss finds it.
    j.pin.reset();
    if (_lower_loader) _lower_loader->cancel(key);
    j.ticket.cancel("prefetch cancelled before its copy into the upper tier started");
    return true;
}

void tiered_loader::copy(const load_request& req, const expert_handle& pin) {
    if (!_copies) {
        std::memcpy(req.dst, pin.data(), req.bytes);
        return;
    }
    _copies->copy(req.slot, req.dst, pin.data(), req.bytes, _src_pinned);
    _copies->wait(req.slot);  // the source slot stays pinned until the bytes are on the device
}

void tiered_loader::finish(job& j) {
    std::string error;
    try {
        j.pin.wait();
        const auto t0 = begin_copy();
        try {
            copy(j.req, j.pin);
        } catch (...) {
            end_copy(t0, 0, false);
            throw;
        }
        end_copy(t0, j.req.bytes, true);
    } catch (const std::exception& e) {
        error = e.what();
        if (error.empty()) error = "lower tier load failed";
    }
    j.pin.reset();  // before the ticket: the upper slot frees only after the lower pin is gone
    if (error.empty())
        j.ticket.complete();
    else
        j.ticket.fail(error);
}

link_meter::clock::time_point tiered_loader::begin_copy() {
    const auto t = link_meter::clock::now();
    std::lock_guard<std::mutex> lock(_mu);
    _copy_meter.begin(t);
    return t;
}

void tiered_loader::end_copy(link_meter::clock::time_point start, uint64_t bytes, bool ok) {
    const auto t = link_meter::clock::now();
    std::lock_guard<std::mutex> lock(_mu);
    _copy_meter.end(start, t, bytes, ok);
}

link_stats tiered_loader::copy_stats() const {
    const auto now = link_meter::clock::now();
    std::lock_guard<std::mutex> lock(_mu);
    return _copy_meter.stats(now);
}

void tiered_loader::worker() {
    for (;;) {
        job j;
        {
            std::unique_lock<std::mutex> lock(_mu);
            _cv.wait(lock, [&] { return _stop || !_jobs.empty(); });
            if (_jobs.empty()) return;  // stopping with nothing left
            j = std::move(_jobs.front());
            _jobs.pop_front();
        }
        finish(j);
    }
}

}  // namespace moe
