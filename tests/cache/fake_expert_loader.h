// A fake expert loader for the cache tests: fills a slot with a byte pattern derived from the key, and
// completes immediately, when the test says so (deferred), or from a pool of worker threads after a random
// delay; any of them can inject failures. Counts every load so tests can assert "exactly one load".
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cache/expert_loader.h"

namespace moe::test {

// The byte every loaded expert is filled with: distinct for neighbouring keys.
inline uint8_t pattern_byte(expert_key k) {
    return static_cast<uint8_t>(k.layer * 37u + k.expert * 11u + 1u);
}

// True when the first `bytes` of `p` all hold the key's pattern.
inline bool holds_pattern(const void* p, uint64_t bytes, expert_key k) {
    const auto* b = static_cast<const uint8_t*>(p);
    uint8_t want = pattern_byte(k);
    for (uint64_t i = 0; i < bytes; i++)
        if (b[i] != want) return false;
    return true;
}

class fake_expert_loader final : public expert_loader {
public:
    enum class mode { IMMEDIATE, DEFERRED, THREADED };

    explicit fake_expert_loader(mode m, unsigned n_threads = 0, unsigned max_delay_us = 0, double fail_rate = 0.0,
                                uint64_t seed = 1)
        : _mode(m), _max_delay_us(max_delay_us), _fail_rate(fail_rate) {
        for (unsigned i = 0; i < n_threads; i++) _workers.emplace_back([this, seed, i] { work(seed * 7919 + i); });
    }
    ~fake_expert_loader() override {
        {
            std::lock_guard<std::mutex> lock(_mu);
            _stop = true;
        }
        _cv.notify_all();
        for (auto& t : _workers) t.join();
    }

    // Keys for which every load fails with `message` (until cleared).
    void fail_key(expert_key k, std::string message) {
        std::lock_guard<std::mutex> lock(_mu);
        _fail_keys[k.packed()] = std::move(message);
    }
    void clear_failures() {
        std::lock_guard<std::mutex> lock(_mu);
        _fail_keys.clear();
    }
    // load() throws instead of calling the ticket.
    void throw_from_load(bool on) { _throw = on; }

    void load(const load_request& req, load_ticket ticket) override {
        _n_loads++;
        if (_throw) throw std::runtime_error("loader exploded");
        std::string err;
        {
            std::lock_guard<std::mutex> lock(_mu);
            _per_key[req.key.packed()]++;
            if (auto it = _fail_keys.find(req.key.packed()); it != _fail_keys.end()) err = it->second;
            if (_mode != mode::IMMEDIATE) {
                _queue.push_back({req, ticket, err});
                _cv.notify_one();
                return;
            }
        }
        finish({req, ticket, err});
    }

    int n_loads() const { return _n_loads; }
    int loads_of(expert_key k) {
        std::lock_guard<std::mutex> lock(_mu);
        auto it = _per_key.find(k.packed());
        return it == _per_key.end() ? 0 : it->second;
    }
    size_t n_pending() {
        std::lock_guard<std::mutex> lock(_mu);
        return _queue.size();
    }
    // DEFERRED mode: complete the oldest pending load (or fail it with `error` when non-empty).
    void complete_next(const std::string& error = {}) {
        pending p;
        {
            std::lock_guard<std::mutex> lock(_mu);
            if (_queue.empty()) throw std::runtime_error("complete_next: nothing pending");
            p = _queue.front();
            _queue.pop_front();
        }
        if (!error.empty()) p.error = error;
        finish(p);
    }
    void complete_all() {
        while (n_pending() > 0) complete_next();
    }
    int n_failed() const { return _n_failed; }

private:
    struct pending {
        load_request req;
        load_ticket ticket;
        std::string error;
    };

    void finish(const pending& p) {
        if (!p.error.empty()) {
            _n_failed++;
            p.ticket.fail(p.error);
            return;
        }
        std::memset(p.req.dst, pattern_byte(p.req.key), p.req.bytes);
        p.ticket.complete();
    }

    void work(uint64_t seed) {
        std::mt19937_64 rng(seed);
        for (;;) {
            pending p;
            {
                std::unique_lock<std::mutex> lock(_mu);
                _cv.wait(lock, [&] { return _stop || !_queue.empty(); });
                if (_queue.empty()) return;
                p = _queue.front();
                _queue.pop_front();
            }
            if (_max_delay_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % (_max_delay_us + 1)));
            if (p.error.empty() && _fail_rate > 0 && std::uniform_real_distribution<double>(0, 1)(rng) < _fail_rate)
                p.error = "injected random failure";
            finish(p);
        }
    }

    mode _mode;
    unsigned _max_delay_us;
    double _fail_rate;
    std::atomic<bool> _throw{false};
    std::atomic<int> _n_loads{0};
    std::atomic<int> _n_failed{0};
    std::mutex _mu;
    std::condition_variable _cv;
    bool _stop = false;
    std::deque<pending> _queue;
    std::map<uint64_t, std::string> _fail_keys;
    std::map<uint64_t, int> _per_key;
    std::vector<std::thread> _workers;
};

}  // namespace moe::test
