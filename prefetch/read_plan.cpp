// Chunk planning and result handling shared by the io_uring and pread readers (see read_plan.h).
#include "prefetch/read_plan.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace moe {

namespace {
uint64_t round_down(uint64_t x, uint64_t a) {
    return x / a * a;
}
uint64_t round_up(uint64_t x, uint64_t a) {
    return (x + a - 1) / a * a;
}
constexpr uint32_t max_retries = 1000;  // EAGAIN/EINTR requeues of one chunk before it counts as failed
}  // namespace

void plan_chunk(read_op& op, read_chunk& c, bool direct, uint64_t chunk_bytes, uint8_t* bounce) {
    const uint64_t pos = op.next_pos;
    const uint64_t end = op.req.offset + op.req.len;
    MOE_CHECK(pos < end);
    uint8_t* dst = op.req.dst + (pos - op.req.offset);
    c = read_chunk{};
    c.op = &op;
    if (!direct) {
        const uint64_t n = std::min(chunk_bytes, end - pos);
        c.win_off = pos;
        c.win_len = c.want = n;
        c.buf = dst;
    } else if (pos % direct_align == 0 && reinterpret_cast<uintptr_t>(dst) % direct_align == 0 &&
               end - pos >= direct_align) {
        // Offset and address line up: read straight into the destination, whole blocks only.
        const uint64_t n = std::min(chunk_bytes, round_down(end - pos, direct_align));
        c.win_off = pos;
        c.win_len = c.want = n;
        c.buf = dst;
    } else {
        const uint64_t ws = round_down(pos, direct_align);
        const uint64_t we = std::min(ws + chunk_bytes, round_up(end, direct_align));
        const uint64_t useful_end = std::min(end, we);
        c.win_off = ws;
        c.win_len = we - ws;
        c.want = useful_end - ws;
        c.buf = bounce;
        c.bounced = true;
        c.copy_from = pos - ws;
        c.copy_len = useful_end - pos;
        c.copy_dst = dst;
    }
    op.next_pos = c.win_off + (c.bounced ? c.copy_from + c.copy_len : c.win_len);
    op.outstanding++;
}

chunk_step chunk_result(read_chunk& c, int64_t r, bool direct, uint64_t file_size, int64_t& err, uint64_t& err_off) {
    const uint64_t at = c.win_off + c.done;
    if (r == -EAGAIN || r == -EINTR) {
        if (++c.retries > max_retries) {
            err = r;
            err_off = at;
            return chunk_step::FAIL;
        }
        return chunk_step::REISSUE;
    }
    if (r < 0) {
        err = r;
        err_off = at;
        return chunk_step::FAIL;
    }
    if (r == 0) {  // end of file before the wanted bytes: the file is shorter than its description
        err = -ENODATA;
        err_off = at;
        return chunk_step::FAIL;
    }
    c.done += uint64_t(r);
    if (c.done >= c.want) return chunk_step::DONE;
    if (direct && (c.win_off + c.done) % direct_align != 0) {
        // O_DIRECT only returns a partial block at the end of the file: what is missing is not there.
        err = -ENODATA;
        err_off = c.win_off + c.done;
        (void)file_size;
        return chunk_step::FAIL;
    }
    return chunk_step::REISSUE;  // short read: ask for the rest
}

void report_finished(const finished_reads& done) {
    for (const auto& [res, listener] : done)
        if (listener) listener->read_done(res);
}

void read_tracker::reserve(size_t n) {
    _free.reserve(n);
    while (_all.size() < n) {
        _all.push_back(std::make_unique<read_op>());
        _free.push_back(_all.back().get());
    }
}

uint64_t read_tracker::add_all(std::span<const read_request> reqs, uint64_t file_size, finished_reads& now) {
    uint64_t queued = 0;
    for (const read_request& r : reqs) {
        read_result out;
        bool finished = false;
        add(r, file_size, out, finished);
        if (finished)
            now.emplace_back(out, r.listener);
        else
            queued++;
    }
    return queued;
}

read_op* read_tracker::add(const read_request& req, uint64_t file_size, read_result& out, bool& finished_now) {
    finished_now = false;
    out = read_result{req.tag, req.offset, req.len, int64_t(req.len), 0};
    if (req.offset > file_size || req.len > file_size - req.offset || (req.len && !req.dst)) {
        out.result = -EINVAL;
        out.error_offset = req.offset;
        finished_now = true;
        return nullptr;
    }
    if (req.len == 0) {
        finished_now = true;
        return nullptr;
    }
    read_op* op;
    if (_free.empty()) {
        _all.push_back(std::make_unique<read_op>());
        op = _all.back().get();
    } else {
        op = _free.back();
        _free.pop_back();
    }
    *op = read_op{};
    op->req = req;
    op->next_pos = req.offset;
    enqueue(op);
    _live++;
    return op;
}

void read_tracker::enqueue(read_op* op) {
    op->queued = true;
    op->q_prev = _tail;
    op->q_next = nullptr;
    (_tail ? _tail->q_next : _head) = op;
    _tail = op;
}

void read_tracker::dequeue(read_op* op) {
    (op->q_prev ? op->q_prev->q_next : _head) = op->q_next;
    (op->q_next ? op->q_next->q_prev : _tail) = op->q_prev;
    op->q_prev = op->q_next = nullptr;
    op->queued = false;
}

read_op* read_tracker::next() {
    while (_head) {
        read_op* op = _head;
        if (!op->failed && op->next_pos < op->req.offset + op->req.len) return op;
        dequeue(op);
    }
    return nullptr;
}

bool read_tracker::chunk_back(read_op* op, int64_t err, uint64_t err_off, read_result& out, read_listener*& listener) {
    MOE_CHECK(op->outstanding > 0);
    op->outstanding--;
    // Several chunks may fail (a truncated file fails every chunk past the cut): report the lowest offset, which
    // does not depend on completion order.
    if (err < 0 && (!op->failed || err_off < op->error_offset)) {
        op->failed = true;
        op->error = err;
        op->error_offset = err_off;
    }
    const bool all_cut = op->next_pos >= op->req.offset + op->req.len;
    if (op->outstanding > 0 || (!op->failed && !all_cut)) return false;
    if (op->queued) dequeue(op);
    out = read_result{op->req.tag, op->req.offset, op->req.len, op->failed ? op->error : int64_t(op->req.len),
                      op->failed ? op->error_offset : 0};
    listener = op->req.listener;
    _free.push_back(op);
    _live--;
    return true;
}

}  // namespace moe
