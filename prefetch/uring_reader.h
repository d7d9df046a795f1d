// The io_uring reader: one ring per file, a fixed set of in-flight slots (the queue depth), each with its own
// block-aligned bounce buffer (registered with the ring when RLIMIT_MEMLOCK allows), and one completion thread
// that reaps, requeues short reads and EAGAIN, copies bounced bytes out and tells the listeners. A failing ring
// never takes the process down: a refused submission fails the reads it carried, a failed wait fails every read
// in flight and every later one of this reader, each as -errno in its read_result.
// (liburing examples/io_uring-cp.c; seastar's reactor backend.)
#pragma once

#include <liburing.h>

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "prefetch/file_source.h"
#include "prefetch/read_plan.h"

namespace moe {

// The io_uring calls whose failures the reader must survive, replaceable so that tests can make them fail (a
// healthy kernel hardly ever does). A null member calls liburing's own function.
struct uring_calls {
    int (*submit)(io_uring* ring, void* user) = nullptr;  // io_uring_submit
    // io_uring_wait_cqe, or io_uring_wait_cqe_timeout when `timeout` is not null
    int (*wait)(io_uring* ring, io_uring_cqe** cqe, __kernel_timespec* timeout, void* user) = nullptr;
    void* user = nullptr;
};

class uring_reader : public file_source {
public:
    // Opens `path` (with O_DIRECT when `direct`) and sets up the ring. Throws moe::error when the file cannot be
    // opened or the ring cannot be created (open_file_source probes first and falls back).
    uring_reader(const std::string& path, bool direct, const reader_config& cfg, const uring_calls& calls = {});
    ~uring_reader() override;
    uring_reader(const uring_reader&) = delete;
    uring_reader& operator=(const uring_reader&) = delete;

    const std::string& path() const override { return _path; }
    uint64_t size() const override { return _size; }
    std::string_view kind_name() const override { return _direct ? "io_uring+O_DIRECT" : "io_uring (buffered)"; }
    void submit(std::span<const read_request> reqs) override;
    uint64_t in_flight() const override;
    void reserve(uint32_t n_requests) override;
    bool buffers_registered() const { return _registered; }

    // Can this process set up a ring and get a NOP back? `why` says what failed.
    static bool probe(std::string& why);

private:
    struct slot {
        read_chunk chunk;
        uint8_t* bounce = nullptr;  // (chunk_bytes) block-aligned
    };
    void reap_loop();
    int call_submit();
    int call_wait(io_uring_cqe** cqe, __kernel_timespec* timeout);
    // pump_locked: issue_locked then submit_locked, again while a refused submission freed slots.
    void pump_locked(finished_reads& failed);
    void issue_locked(finished_reads& failed);
    void prep_locked(uint32_t i);
    bool submit_locked(finished_reads& failed);  // false: the kernel refused entries (withdrawn and failed)
    void withdraw_locked(int err, finished_reads& failed);
    void fail_chunk_locked(const read_chunk& c, int err, finished_reads& failed);
    void fail_ring(int err);
    void deliver(finished_reads& done);  // tells the listeners of requests counted in _in_flight

    std::string _path;
    uint64_t _size = 0;
    int _fd = -1;
    bool _direct = false;
    reader_config _cfg;
    uring_calls _calls;
    io_uring _ring{};
    uint8_t* _bounce_base = nullptr;  // (queue_depth, chunk_bytes)
    bool _registered = false;

    mutable std::mutex _mu;  // guards everything below and the submission side of the ring
    std::condition_variable _idle_cv;
    std::vector<slot> _slots;  // (queue_depth)
    std::vector<uint32_t> _free_slots;
    read_tracker _tracker;
    uint64_t _in_flight = 0;    // requests accepted and not yet reported
    uint64_t _in_callback = 0;  // reported, listener still running (the destructor waits for them)
    int _ring_error = 0;        // -errno once a wait on the ring failed: the ring is no longer used
    bool _stop = false;         // the destructor asks the completion thread to end
    std::thread _reaper;        // the only reader of the completion queue
};

}  // namespace moe
