// A file_source wrapper for tests that holds every submitted read while closed, so what sits at the reader and
// what waits in the streamer's queue is decided by the test, not by timing.
#pragma once

#include <mutex>
#include <vector>

#include "prefetch/file_source.h"

namespace moe::test {

class gated_source final : public file_source {
public:
    explicit gated_source(file_source& inner) : _inner(inner) {}
    ~gated_source() override { open(); }
    const std::string& path() const override { return _inner.path(); }
    uint64_t size() const override { return _inner.size(); }
    std::string_view kind_name() const override { return "gated"; }
    void submit(std::span<const read_request> reqs) override {
        {
            std::lock_guard<std::mutex> lock(_mu);
            if (!_open) {
                _held.insert(_held.end(), reqs.begin(), reqs.end());
                return;
            }
        }
        _inner.submit(reqs);
    }
    uint64_t in_flight() const override {
        std::lock_guard<std::mutex> lock(_mu);
        return _inner.in_flight() + _held.size();
    }
    void close() {
        std::lock_guard<std::mutex> lock(_mu);
        _open = false;
    }
    // Lets everything held (and everything after) through.
    void open() {
        std::vector<read_request> held;
        {
            std::lock_guard<std::mutex> lock(_mu);
            _open = true;
            held.swap(_held);
        }
        if (!held.empty()) _inner.submit(held);
    }
    size_t n_held() const {
        std::lock_guard<std::mutex> lock(_mu);
        return _held.size();
    }

private:
    file_source& _inner;
    mutable std::mutex _mu;
    bool _open = true;
    std::vector<read_request> _held;
};

}  // namespace moe::test
