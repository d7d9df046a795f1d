// A small fixed thread pool for the CPU backend's data-parallel loops. Threads are started once; a parallel_for
// splits [0, n) into one contiguous chunk per thread (the caller runs chunk 0) and returns when all are done.
// It takes a plain function pointer and a context instead of std::function, so dispatch never allocates (the
// token loop allocates nothing). Work is split by index, never by reduction, so results do not depend on the
// number of threads.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace moe {

class thread_pool {
public:
    // fn(ctx, begin, end, thread_index): thread_index in [0, n_threads), usable to pick a per-thread workspace.
    using chunk_fn = void (*)(void* ctx, int64_t begin, int64_t end, int thread_index);

    // n_threads >= 1 counts the caller: n_threads - 1 workers are started.
    explicit thread_pool(int n_threads);
    ~thread_pool();
    thread_pool(const thread_pool&) = delete;
    thread_pool& operator=(const thread_pool&) = delete;

    int n_threads() const { return _n_threads; }
    // Runs fn over [0, n) split into n_threads contiguous chunks (fewer when n is small). Not reentrant: one
    // parallel_for at a time (the backend is used by one thread).
    void parallel_for(int64_t n, chunk_fn fn, void* ctx);

    template <class F>
    void parallel_for(int64_t n, F& f) {
        parallel_for(
            n, [](void* c, int64_t b, int64_t e, int t) { (*static_cast<F*>(c))(b, e, t); }, &f);
    }

private:
    void worker(int index);

    int _n_threads = 1;
    std::vector<std::thread> _workers;
    std::mutex _mu;
    std::condition_variable _start_cv, _done_cv;
    uint64_t _generation = 0;  // bumped for every parallel_for; workers run once per generation
    int _pending = 0;          // workers still running the current generation
    bool _stop = false;
    // The current job (valid while _pending > 0).
    chunk_fn _fn = nullptr;
    void* _ctx = nullptr;
    int64_t _n = 0;
    int _n_chunks = 0;
};

}  // namespace moe
