// The bookkeeping both readers share (internal to prefetch/): how a request is cut into read syscalls ("chunks")
// and what a syscall's result means for it. O_DIRECT needs the file offset, length and memory address to be
// multiples of the block size, while GGUF aligns tensors to 32 bytes only; a chunk therefore reads the 4 KiB-aligned
// window around its bytes into a bounce buffer and copies the exact bytes out, unless destination and offset
// line up, when it reads straight into the destination. The tracker owns the queue of requests waiting to be
// cut, and decides when a request is finished: every chunk back, or the first error and every chunk already in
// flight back (so no read is still writing into a destination that was reported).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "prefetch/file_source.h"

namespace moe {

constexpr uint64_t direct_align = 4096;  // O_DIRECT block: 4 KiB covers every logical block size in use

struct read_op {
    read_request req;
    uint64_t next_pos = 0;     // next file offset to cut a chunk from
    uint32_t outstanding = 0;  // chunks issued and not back
    bool failed = false;
    bool queued = false;  // in the tracker's pending queue
    int64_t error = 0;    // -errno of the first failure
    uint64_t error_offset = 0;
    read_op* q_prev = nullptr;  // links of the tracker's pending queue (intrusive: queueing never allocates)
    read_op* q_next = nullptr;
};

struct read_chunk {
    read_op* op = nullptr;
    uint64_t win_off = 0;    // file offset of the window read
    uint64_t win_len = 0;    // window length (a block multiple when direct)
    uint8_t* buf = nullptr;  // where the window lands: the destination itself, or the bounce buffer
    bool bounced = false;
    uint64_t done = 0;       // window bytes received so far
    uint64_t want = 0;       // window bytes needed (up to the end of the wanted bytes)
    uint64_t copy_from = 0;  // bounced: window offset of the wanted bytes
    uint64_t copy_len = 0;
    uint8_t* copy_dst = nullptr;
    uint32_t retries = 0;  // EAGAIN/EINTR requeues of this chunk
};

// Cuts the next chunk of `op` (whose next_pos < end) into `c`; `bounce` is a direct_align-aligned buffer of at
// least chunk_bytes (chunk_bytes a multiple of direct_align). Advances op.next_pos.
void plan_chunk(read_op& op, read_chunk& c, bool direct, uint64_t chunk_bytes, uint8_t* bounce);

enum class chunk_step { DONE, REISSUE, FAIL };
// Applies a syscall result (bytes or -errno) of the read issued at c.win_off + c.done. REISSUE: read again at
// c.win_off + c.done into c.buf + c.done for c.win_len - c.done bytes; DONE: copy out (bounced) and finish;
// FAIL: err/err_off say why and where. `file_size` tells a real end of file from a short read.
chunk_step chunk_result(read_chunk& c, int64_t r, bool direct, uint64_t file_size, int64_t& err, uint64_t& err_off);

// Results that finished inside submit() (a bad range, an empty request), reported once the reader's lock is
// released. A default-constructed vector allocates nothing, so the usual case costs nothing.
using finished_reads = std::vector<std::pair<read_result, read_listener*>>;
void report_finished(const finished_reads& done);

// Not thread-safe: the reader calls it under its own lock.
class read_tracker {
public:
    // add() for each request; those finished at once go to `now`. Returns how many were queued.
    uint64_t add_all(std::span<const read_request> reqs, uint64_t file_size, finished_reads& now);
    // A request past the end of the file or with no destination fails now (fills `out`, returns null); an
    // empty request completes now; otherwise it is queued.
    read_op* add(const read_request& req, uint64_t file_size, read_result& out, bool& finished_now);
    // The request to cut the next chunk from, or null; pops requests that have been cut completely.
    read_op* next();
    // A chunk of `op` came back (err == 0: fine). True when the request is finished: `out` holds its result,
    // `listener` whom to tell, and the op is recycled.
    bool chunk_back(read_op* op, int64_t err, uint64_t err_off, read_result& out, read_listener*& listener);
    size_t n_live() const { return _live; }
    // Creates ops until `n` exist (recycled: requests up to that many in flight allocate nothing).
    void reserve(size_t n);

private:
    void enqueue(read_op* op);
    void dequeue(read_op* op);

    read_op* _head = nullptr;  // pending queue, oldest first
    read_op* _tail = nullptr;
    std::vector<std::unique_ptr<read_op>> _all;
    std::vector<read_op*> _free;  // recycled ops: after warm-up nothing is allocated per request
    size_t _live = 0;
};

}  // namespace moe
