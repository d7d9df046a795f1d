// The CPU backend's thread pool (see thread_pool.h).
#include "runtime/thread_pool.h"

#include <algorithm>

#include "common/error.h"

namespace moe {

thread_pool::thread_pool(int n_threads) : _n_threads(std::max(1, n_threads)) {
    _workers.reserve(size_t(_n_threads - 1));
    for (int i = 1; i < _n_threads; ++i) _workers.emplace_back([this, i] { worker(i); });
}

thread_pool::~thread_pool() {
    {
        std::lock_guard<std::mutex> lock(_mu);
        _stop = true;
    }
    _start_cv.notify_all();
    for (auto& t : _workers) t.join();
}

namespace {
// Chunk c of [0, n) split into k nearly equal contiguous pieces.
void chunk_bounds(int64_t n, int k, int c, int64_t& b, int64_t& e) {
    b = n * c / k;
    e = n * (c + 1) / k;
}
}  // namespace

void thread_pool::parallel_for(int64_t n, chunk_fn fn, void* ctx) {
    if (n <= 0) return;
    const int k = int(std::min<int64_t>(_n_threads, n));
    if (k == 1) {
        fn(ctx, 0, n, 0);
        return;
    }
    {
        std::lock_guard<std::mutex> lock(_mu);
        MOE_CHECK(_pending == 0);  // not reentrant
        _fn = fn, _ctx = ctx, _n = n, _n_chunks = k;
        _pending = _n_threads - 1;  // every worker checks in, those without a chunk at once
        ++_generation;
    }
    _start_cv.notify_all();
    int64_t b, e;
    chunk_bounds(n, k, 0, b, e);
    fn(ctx, b, e, 0);
    std::unique_lock<std::mutex> lock(_mu);
    _done_cv.wait(lock, [this] { return _pending == 0; });
}

void thread_pool::worker(int index) {
    uint64_t seen = 0;
    for (;;) {
        chunk_fn fn;
        void* ctx;
        int64_t n;
        int k;
        {
            std::unique_lock<std::mutex> lock(_mu);
            _start_cv.wait(lock, [&] { return _stop || _generation != seen; });
            if (_stop) return;
            seen = _generation;
            fn = _fn, ctx = _ctx, n = _n, k = _n_chunks;
        }
        if (index < k) {
            int64_t b, e;
            chunk_bounds(n, k, index, b, e);
            fn(ctx, b, e, index);
        }
        bool last;
        {
            std::lock_guard<std::mutex> lock(_mu);
            last = --_pending == 0;
        }
        if (last) _done_cv.notify_one();
    }
}

}  // namespace moe
