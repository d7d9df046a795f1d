// The pread fallback: a pool of threads (one per queue-depth slot) each issuing one blocking pread at a time,
// with the same chunking, bounce/O_DIRECT handling, requeue and error reporting as the io_uring reader.
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "prefetch/file_source.h"
#include "prefetch/read_plan.h"

namespace moe {

class pread_reader : public file_source {
public:
    // Opens `path` (with O_DIRECT when `direct`) and starts queue_depth threads; throws moe::error when the
    // file cannot be opened.
    pread_reader(const std::string& path, bool direct, const reader_config& cfg);
    ~pread_reader() override;
    pread_reader(const pread_reader&) = delete;
    pread_reader& operator=(const pread_reader&) = delete;

    const std::string& path() const override { return _path; }
    uint64_t size() const override { return _size; }
    std::string_view kind_name() const override { return _direct ? "pread+O_DIRECT" : "pread"; }
    void submit(std::span<const read_request> reqs) override;
    uint64_t in_flight() const override;
    void reserve(uint32_t n_requests) override;

private:
    void worker(uint32_t index);

    std::string _path;
    uint64_t _size = 0;
    int _fd = -1;
    bool _direct = false;
    reader_config _cfg;
    uint8_t* _bounce_base = nullptr;  // (queue_depth, chunk_bytes) when direct: one bounce buffer per thread

    mutable std::mutex _mu;  // guards the tracker and the counters
    std::condition_variable _work_cv;
    std::condition_variable _idle_cv;
    read_tracker _tracker;
    uint64_t _in_flight = 0;    // requests accepted and not yet reported
    uint64_t _in_callback = 0;  // reported, listener still running (the destructor waits for them)
    bool _stop = false;
    std::vector<std::thread> _threads;
};

}  // namespace moe
