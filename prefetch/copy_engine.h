// Host -> device copies for expert slots (as llama.cpp's loader staging and llm.c's file_to_device do): one
// dedicated copy stream, one event per destination slot so compute waits on exactly the slot it reads
// (invariant 3 of docs/invariants.md: no use before arrival), and a double-buffered pinned staging ring for
// sources that are not pinned (a pageable source cannot be DMA'd asynchronously). Without a GPU the "device" is
// host memory: the same interface copies with memcpy on a worker thread, which is how the CPU mode and every test
// without a GPU run.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "prefetch/host_buffer.h"

#ifdef MOE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace moe {

struct copy_engine_config {
    uint32_t n_slots = 0;                 // destination slots: one completion event each
    uint64_t staging_bytes = 8ull << 20;  // each pinned staging buffer (unpinned sources are copied through them)
    uint32_t n_staging = 2;               // fill one while the other is on the bus
    bool force_host = false;              // tests: use the host-memcpy engine even when a GPU is present
};

class copy_engine {
public:
    explicit copy_engine(const copy_engine_config& cfg);
    ~copy_engine();  // waits for every copy
    copy_engine(const copy_engine&) = delete;
    copy_engine& operator=(const copy_engine&) = delete;

    // true: destinations are device pointers and copies run on the copy stream; false: host memcpy engine.
    bool on_device() const { return _device; }
    uint32_t n_slots() const { return _cfg.n_slots; }

    // Starts copying `bytes` from host `src` to `dst` and makes slot's completion mean "this copy landed".
    // src_pinned: src is cudaHostAlloc'd (host_buffer::cuda_pinned) and is DMA'd directly, asynchronously; else
    // the call returns once src has been copied into staging (src may then be reused), the DMA still in flight.
    // Thread-safe; copies are ordered on one stream.
    void copy(uint32_t slot, void* dst, const void* src, uint64_t bytes, bool src_pinned);
    bool ready(uint32_t slot);  // has the last copy into slot landed?
    void wait(uint32_t slot);   // blocks until it has
    void wait_all();

#ifdef MOE_HAVE_CUDA
    // Device mode: make `stream` wait (on the GPU, not the host) for slot's last copy.
    void stream_wait(uint32_t slot, cudaStream_t stream);
    cudaStream_t stream() const {
        return _stream;
    }
#endif

private:
    void host_worker();

    copy_engine_config _cfg;
    bool _device = false;
    std::mutex _mu;
    // Host mode: a queue of memcpy jobs and, per slot, how many copies were issued and how many finished.
    struct job {
        uint32_t slot;
        void* dst;
        const void* src;
        uint64_t bytes;
    };
    std::condition_variable _cv;
    std::deque<job> _jobs;
    std::vector<uint64_t> _issued;    // (n_slots)
    std::vector<uint64_t> _finished;  // (n_slots)
    bool _stop = false;
    std::thread _worker;
#ifdef MOE_HAVE_CUDA
    cudaStream_t _stream = nullptr;
    std::vector<cudaEvent_t> _slot_events;     // (n_slots)
    std::vector<host_buffer> _staging;         // (n_staging, staging_bytes)
    std::vector<cudaEvent_t> _staging_events;  // (n_staging) the DMA out of each staging buffer
    uint32_t _next_staging = 0;
#endif
};

}  // namespace moe
