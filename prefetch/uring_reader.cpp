// io_uring reader (see uring_reader.h). Locking: one mutex guards the slots, the request tracker and the
// submission queue; the completion thread alone consumes the completion queue, and drops the lock for the
// bounce copies, the fault hook and the listeners' callbacks.
// Failures of the ring itself are reported like failed reads, never by aborting:
//  - io_uring_submit refused (after bounded EINTR/EAGAIN retries): the entries the kernel did not take are taken
//    back out of the submission queue and the chunks they carried fail with that -errno; the ring stays in use.
//  - io_uring_wait_cqe failed: the ring is marked failed. The completion queue is plain shared memory the kernel
//    still fills, so the completion thread polls it until every chunk still in the kernel is back (a request is
//    only reported once nothing can write into its destination any more), and fails them, what waits and every
//    later request with that -errno.
#include "prefetch/uring_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "common/log.h"
#include "prefetch/faulty_source.h"

namespace moe {

namespace {
constexpr uint64_t stop_tag = ~0ull;
constexpr uint32_t max_submit_retries = 1000;    // EINTR/EAGAIN from io_uring_submit before it counts as failed
constexpr long long stop_poll_ns = 500'000'000;  // how often an idle completion thread looks for the stop flag
}  // namespace

bool uring_reader::probe(std::string& why) {
    io_uring ring{};
    int rc = io_uring_queue_init(4, &ring, 0);
    if (rc < 0) {
        why = fmt::format("io_uring_setup failed: {}", std::strerror(-rc));
        return false;
    }
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    io_uring_prep_nop(sqe);
    rc = io_uring_submit(&ring);
    io_uring_cqe* cqe = nullptr;
    if (rc == 1) rc = io_uring_wait_cqe(&ring, &cqe);
    if (rc < 0 || !cqe) {
        why = fmt::format("io_uring NOP failed: {}", std::strerror(rc < 0 ? -rc : EIO));
        io_uring_queue_exit(&ring);
        return false;
    }
    io_uring_cqe_seen(&ring, cqe);
    io_uring_queue_exit(&ring);
    return true;
}

uring_reader::uring_reader(const std::string& path, bool direct, const reader_config& cfg, const uring_calls& calls)
    : _path(path), _direct(direct), _cfg(cfg), _calls(calls) {
    if (_cfg.queue_depth == 0) fail("{}: io_uring queue depth must be at least 1", path);
    _cfg.chunk_bytes =
        std::max<uint64_t>(direct_align, (_cfg.chunk_bytes + direct_align - 1) / direct_align * direct_align);
    _fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0));
    if (_fd < 0) fail("cannot open {} for reading{}: {}", path, direct ? " with O_DIRECT" : "", std::strerror(errno));
    struct stat st {};
    if (::fstat(_fd, &st) != 0) {
        int e = errno;
        ::close(_fd);
        fail("cannot stat {}: {}", path, std::strerror(e));
    }
    _size = uint64_t(st.st_size);
    const uint32_t qd = _cfg.queue_depth;
    int rc = io_uring_queue_init(qd + 1, &_ring, 0);  // +1: the NOP that stops the completion thread
    if (rc < 0) {
        ::close(_fd);
        fail("cannot set up io_uring with {} entries for {}: {}", qd + 1, path, std::strerror(-rc));
    }
    _slots.resize(qd);
    if (_direct) {
        if (_cfg.chunk_bytes <= SIZE_MAX / qd)
            _bounce_base = static_cast<uint8_t*>(std::aligned_alloc(direct_align, size_t(qd) * _cfg.chunk_bytes));
        if (!_bounce_base) {
            io_uring_queue_exit(&_ring);
            ::close(_fd);
            fail("{}: cannot allocate the O_DIRECT bounce buffers ({} x {} bytes): lower the queue depth or chunk size",
                 path, qd, _cfg.chunk_bytes);
        }
        std::vector<iovec> iov(qd);
        for (uint32_t i = 0; i < qd; i++) {
            _slots[i].bounce = _bounce_base + size_t(i) * _cfg.chunk_bytes;
            iov[i] = iovec{_slots[i].bounce, size_t(_cfg.chunk_bytes)};
        }
        if (_cfg.register_buffers) {
            rc = io_uring_register_buffers(&_ring, iov.data(), qd);
            _registered = rc == 0;
            if (!_registered)
                warn_once("uring-register-buffers",
                          fmt::format("io_uring_register_buffers of {} x {} bytes failed ({}); using plain reads. "
                                      "HINT: raise RLIMIT_MEMLOCK (ulimit -l) to let the kernel pin the bounce buffers",
                                      qd, _cfg.chunk_bytes, std::strerror(-rc)));
        }
    }
    for (uint32_t i = qd; i-- > 0;) _free_slots.push_back(i);
    _reaper = std::thread([this] { reap_loop(); });
}

uring_reader::~uring_reader() {
    {
        std::unique_lock<std::mutex> lock(_mu);
        _idle_cv.wait(lock, [&] { return _in_flight == 0 && _in_callback == 0; });
        _stop = true;
        // A NOP wakes the completion thread now. No read is in flight, so a refused submission fails nothing; the
        // thread then sees the flag at its next timed wake-up instead.
        io_uring_sqe* sqe = _ring_error == 0 ? io_uring_get_sqe(&_ring) : nullptr;
        if (sqe) {
            io_uring_prep_nop(sqe);
            io_uring_sqe_set_data(sqe, reinterpret_cast<void*>(uintptr_t(stop_tag)));
            finished_reads none;
            submit_locked(none);
        }
    }
    _idle_cv.notify_all();
    _reaper.join();
    io_uring_queue_exit(&_ring);
    ::close(_fd);
    std::free(_bounce_base);
}

void uring_reader::reserve(uint32_t n_requests) {
    std::lock_guard<std::mutex> lock(_mu);
    _tracker.reserve(n_requests);
}

uint64_t uring_reader::in_flight() const {
    std::lock_guard<std::mutex> lock(_mu);
    return _in_flight;
}

void uring_reader::submit(std::span<const read_request> reqs) {
    finished_reads now;
    finished_reads failed;
    {
        std::lock_guard<std::mutex> lock(_mu);
        _in_flight += _tracker.add_all(reqs, _size, now);
        pump_locked(failed);
    }
    report_finished(now);
    deliver(failed);
}

int uring_reader::call_submit() {
    return _calls.submit ? _calls.submit(&_ring, _calls.user) : io_uring_submit(&_ring);
}

int uring_reader::call_wait(io_uring_cqe** cqe, __kernel_timespec* timeout) {
    if (_calls.wait) return _calls.wait(&_ring, cqe, timeout, _calls.user);
    return timeout ? io_uring_wait_cqe_timeout(&_ring, cqe, timeout) : io_uring_wait_cqe(&_ring, cqe);
}

void uring_reader::deliver(finished_reads& done) {
    if (done.empty()) return;
    {
        std::lock_guard<std::mutex> lock(_mu);
        _in_flight -= done.size();
        _in_callback += done.size();
    }
    for (auto& [res, l] : done)
        if (l) l->read_done(res);
    {
        std::lock_guard<std::mutex> lock(_mu);
        _in_callback -= done.size();
    }
    _idle_cv.notify_all();
    done.clear();
}

void uring_reader::pump_locked(finished_reads& failed) {
    // Each refused round fails at least one chunk, and a failed request is not cut again: this ends.
    do {
        issue_locked(failed);
    } while (!submit_locked(failed));
}

void uring_reader::fail_chunk_locked(const read_chunk& c, int err, finished_reads& failed) {
    read_result out;
    read_listener* l = nullptr;
    if (_tracker.chunk_back(c.op, err, c.win_off + c.done, out, l)) failed.emplace_back(out, l);
}

void uring_reader::issue_locked(finished_reads& failed) {
    if (_ring_error != 0) {
        // The ring is no longer used: what waits fails at its next byte, without a read.
        while (read_op* op = _tracker.next()) {
            read_chunk c;
            plan_chunk(*op, c, _direct, _cfg.chunk_bytes, nullptr);
            fail_chunk_locked(c, _ring_error, failed);
        }
        return;
    }
    while (!_free_slots.empty()) {
        read_op* op = _tracker.next();
        if (!op) break;
        const uint32_t i = _free_slots.back();
        _free_slots.pop_back();
        plan_chunk(*op, _slots[i].chunk, _direct, _cfg.chunk_bytes, _slots[i].bounce);
        prep_locked(i);
    }
}

void uring_reader::prep_locked(uint32_t i) {
    read_chunk& c = _slots[i].chunk;
    io_uring_sqe* sqe = io_uring_get_sqe(&_ring);
    MOE_CHECK(sqe);  // at most queue_depth slots are ever prepared, and the ring has more entries than that
    const uint64_t off = c.win_off + c.done;
    uint8_t* p = c.buf + c.done;
    const unsigned len = unsigned(c.win_len - c.done);
    if (c.bounced && _registered)
        io_uring_prep_read_fixed(sqe, _fd, p, len, off, int(i));
    else
        io_uring_prep_read(sqe, _fd, p, len, off);
    io_uring_sqe_set_data(sqe, reinterpret_cast<void*>(uintptr_t(i)));
}

bool uring_reader::submit_locked(finished_reads& failed) {
    uint32_t retries = 0;
    while (io_uring_sq_ready(&_ring) > 0) {
        const int rc = call_submit();
        if (rc > 0) {
            retries = 0;
            continue;
        }
        if ((rc == 0 || rc == -EINTR || rc == -EAGAIN) && ++retries <= max_submit_retries) continue;
        withdraw_locked(rc < 0 ? rc : -EAGAIN, failed);
        return false;
    }
    return true;
}

void uring_reader::withdraw_locked(int err, finished_reads& failed) {
    // Entries from the kernel's head to our tail were not consumed, and with no kernel polling thread nothing reads
    // them until the next submission: they are ours to take back. liburing hands out entry p at sqes[p & mask]
    // (its submission array maps ring index i to entry i), so rewinding our tail and the kernel-visible tail to the
    // head removes them.
    io_uring_sq& sq = _ring.sq;
    const unsigned head = IO_URING_READ_ONCE(*sq.khead);
    for (unsigned p = head; p != sq.sqe_tail; p++) {
        const uint64_t tag = sq.sqes[p & sq.ring_mask].user_data;
        if (tag == stop_tag) continue;
        const uint32_t i = uint32_t(tag);
        _free_slots.push_back(i);
        fail_chunk_locked(_slots[i].chunk, err, failed);
    }
    sq.sqe_head = sq.sqe_tail = head;
    io_uring_smp_store_release(sq.ktail, head);
}

void uring_reader::fail_ring(int err) {
    {
        std::lock_guard<std::mutex> lock(_mu);
        if (_ring_error != 0) return;
        _ring_error = err;
    }
    log(log_level::error, "{}: waiting on io_uring failed ({}): its reads in flight and every later one fail", _path,
        std::strerror(-err));
}

void uring_reader::reap_loop() {
    struct completion {
        uint64_t tag;
        int32_t res;
    };
    std::vector<completion> batch;
    batch.reserve(_slots.size() + 1);
    finished_reads done;
    done.reserve(_slots.size());
    // Without IORING_FEAT_EXT_ARG a timed wait would queue a timeout entry from this thread, racing the submitters.
    const bool timed = (_ring.features & IORING_FEAT_EXT_ARG) != 0;
    for (;;) {
        int ring_error;
        {
            std::unique_lock<std::mutex> lock(_mu);
            if (_stop) return;
            ring_error = _ring_error;
            if (ring_error != 0) {
                // Polling a failed ring: every few moments while reads are in the kernel, else only the stop flag.
                if (_free_slots.size() == _slots.size())
                    _idle_cv.wait(lock, [&] { return _stop; });
                else
                    _idle_cv.wait_for(lock, std::chrono::milliseconds(1), [&] { return _stop; });
                if (_stop) return;
            }
        }
        if (ring_error == 0) {
            io_uring_cqe* cqe = nullptr;
            __kernel_timespec ts{};
            ts.tv_sec = stop_poll_ns / 1'000'000'000;
            ts.tv_nsec = stop_poll_ns % 1'000'000'000;
            const int rc = call_wait(&cqe, timed ? &ts : nullptr);
            if (rc == -EINTR || rc == -EAGAIN || rc == -ETIME) continue;
            if (rc < 0) fail_ring(rc);  // then reap what is there already
        }
        batch.clear();
        unsigned head = 0, n = 0;
        io_uring_cqe* cqe = nullptr;
        io_uring_for_each_cqe(&_ring, head, cqe) {
            batch.push_back({uint64_t(uintptr_t(io_uring_cqe_get_data(cqe))), cqe->res});
            n++;
        }
        io_uring_cq_advance(&_ring, n);

        for (const completion& cq : batch) {
            if (cq.tag == stop_tag) continue;  // the destructor's wake-up: the flag says the rest
            const uint32_t i = uint32_t(cq.tag);
            read_chunk c;
            {
                std::lock_guard<std::mutex> lock(_mu);
                c = _slots[i].chunk;
                ring_error = _ring_error;
            }
            int64_t err = 0;
            uint64_t err_off = 0;
            chunk_step step;
            if (ring_error != 0) {
                step = chunk_step::FAIL;
                err = ring_error;
                err_off = c.win_off + c.done;
            } else {
                int64_t res = cq.res;
                if (_cfg.faults) res = _cfg.faults->apply(c.win_off + c.done, c.win_len - c.done, res);
                step = chunk_result(c, res, _direct, _size, err, err_off);
            }
            if (step == chunk_step::DONE && c.bounced) std::memcpy(c.copy_dst, c.buf + c.copy_from, c.copy_len);
            std::lock_guard<std::mutex> lock(_mu);
            _slots[i].chunk = c;
            if (step == chunk_step::REISSUE) {
                prep_locked(i);
                continue;
            }
            _free_slots.push_back(i);
            read_result out;
            read_listener* l = nullptr;
            if (_tracker.chunk_back(c.op, step == chunk_step::FAIL ? err : 0, err_off, out, l))
                done.emplace_back(out, l);
        }
        {
            std::lock_guard<std::mutex> lock(_mu);
            pump_locked(done);
        }
        deliver(done);
    }
}

}  // namespace moe
