// Fault injection for the read path (CacheLib's MockDevice idea): a plan of faults applied after every read
// syscall of a real reader (EIO at an offset or on the nth read, short reads, EAGAIN, delays, a file that ends
// early), and a file_source wrapper that opens a reader with that plan, so tests drive the real requeue and
// error paths of the io_uring and pread readers rather than a simulation of them.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "prefetch/file_source.h"

namespace moe {

struct fault_plan {
    int64_t eio_at_offset = -1;        // a read whose bytes cover this file offset fails with EIO (-1: never)
    uint64_t eio_nth_read = 0;         // the nth read (1-based, counted over all reads) fails with EIO (0: never)
    uint32_t short_read_every = 0;     // every kth read returns about half of what it got (0: never)
    uint64_t short_read_align = 4096;  // a short read is rounded down to this (O_DIRECT reads are block multiples)
    uint32_t eagain_every = 0;         // every kth read fails with EAGAIN, which the reader must requeue (0: never)
    uint32_t delay_us = 0;             // every read completes this much later
    int64_t truncate_at = -1;          // reads see the file end here, as if truncated after it was described
};

// Thread-safe: readers call apply() from their worker/completion threads.
class fault_injector {
public:
    explicit fault_injector(const fault_plan& plan) : _plan(plan) {}
    // A read of `len` bytes at `offset` returned `res` (bytes or -errno); returns what the reader should see.
    int64_t apply(uint64_t offset, uint64_t len, int64_t res);
    uint64_t n_reads() const { return _n_reads.load(); }
    uint64_t n_faults() const { return _n_faults.load(); }
    const fault_plan& plan() const { return _plan; }

private:
    fault_plan _plan;
    std::atomic<uint64_t> _n_reads{0};
    std::atomic<uint64_t> _n_faults{0};
};

enum class reader_kind;

// A reader of the given kind (AUTO probes as open_file_source does) with `plan` injected into its syscalls.
class faulty_source : public file_source {
public:
    faulty_source(const std::string& path, reader_kind kind, const fault_plan& plan, reader_config cfg = {});
    ~faulty_source() override;
    const std::string& path() const override { return _inner->path(); }
    uint64_t size() const override { return _inner->size(); }
    std::string_view kind_name() const override { return _name; }
    void submit(std::span<const read_request> reqs) override { _inner->submit(reqs); }
    uint64_t in_flight() const override { return _inner->in_flight(); }
    void reserve(uint32_t n_requests) override { _inner->reserve(n_requests); }
    const fault_injector& injector() const { return *_faults; }

private:
    std::shared_ptr<fault_injector> _faults;
    std::unique_ptr<file_source> _inner;
    std::string _name;
};

}  // namespace moe
