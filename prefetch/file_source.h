// A file opened for reading expert byte ranges: the small interface every reader implements (io_uring with
// O_DIRECT, the pread thread pool, the fault-injecting wrapper), so the expert reader, the streamer and tests
// never care which one they hold. Completions are delivered through a listener, from the reader's own thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace moe {

struct read_request;
struct read_result;
class fault_injector;

// How a reader moves bytes. One struct for every implementation; fields a reader does not use are ignored.
struct reader_config {
    uint32_t queue_depth = 32;               // reads in flight at once (io_uring SQEs; pread: threads)
    uint64_t chunk_bytes = 1ull << 20;       // largest single read; big ranges are split so they spread over the queue
    bool register_buffers = true;            // io_uring: register the bounce buffers (needs RLIMIT_MEMLOCK headroom)
    std::shared_ptr<fault_injector> faults;  // tests: consulted after every read syscall; null in production
};

// Who hears about a finished request. Called exactly once per request, from a reader thread (or from inside
// submit() when the request fails immediately); must not block for long and must not call wait-style methods of
// the same source. It may call submit().
class read_listener {
public:
    virtual ~read_listener() = default;
    virtual void read_done(const read_result& res) = 0;
};

struct read_request {
    uint64_t offset = 0;                // absolute byte offset in the file
    uint64_t len = 0;                   // exact bytes wanted
    uint8_t* dst = nullptr;             // (len) bytes; owned by the reader until read_done
    read_listener* listener = nullptr;  // told once, when every byte has arrived or the request has failed
    uint64_t tag = 0;                   // caller's id, handed back in read_result
};

struct read_result {
    uint64_t tag = 0;
    uint64_t offset = 0;  // the request's offset and length, for messages
    uint64_t len = 0;
    int64_t result = 0;         // len when every byte arrived, else -errno (never a partial count)
    uint64_t error_offset = 0;  // on failure: the file offset whose read failed
    bool ok() const { return result >= 0; }
    int error() const { return result < 0 ? int(-result) : 0; }
};

// "read of 4096 bytes at offset 8192 of model.gguf failed at offset 8192: Input/output error (EIO)"
std::string describe_read_error(const read_result& res, std::string_view path);

class file_source {
public:
    virtual ~file_source() = default;  // waits for every submitted request to complete first
    virtual const std::string& path() const = 0;
    virtual uint64_t size() const = 0;  // file length when opened
    // "io_uring+O_DIRECT", "io_uring (buffered)", "pread", ...: what actually moves the bytes.
    virtual std::string_view kind_name() const = 0;
    // Queues requests; thread-safe; returns without waiting for the I/O. Requests beyond the queue depth wait
    // inside the reader. A request that reaches past the end of the file fails with EINVAL (at submit time).
    virtual void submit(std::span<const read_request> reqs) = 0;
    // Requests submitted and not yet reported.
    virtual uint64_t in_flight() const = 0;
    // Prepares the bookkeeping of `n_requests` requests in flight at once, so submitting up to that many
    // allocates nothing (start-up only; a reader without per-request state ignores it).
    virtual void reserve(uint32_t n_requests) { (void)n_requests; }
};

// A listener that collects results so a caller can submit a batch and then wait/poll for it. Thread-safe.
class read_waiter : public read_listener {
public:
    void read_done(const read_result& res) override;
    // Blocks until `n` results in total have arrived since construction (or the last take()).
    void wait(size_t n);
    // Results so far (moves them out).
    std::vector<read_result> take();
    size_t n_done() const;

private:
    mutable std::mutex _mu;
    std::condition_variable _cv;
    std::vector<read_result> _results;
};

// Submits every request with a private waiter as listener and waits for all; results in request order.
std::vector<read_result> read_all(file_source& src, std::span<const read_request> reqs);

}  // namespace moe
