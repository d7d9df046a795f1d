// io_uring reader (see uring_reader.h). Locking: one mutex guards the slots, the request tracker and the
// submission queue; the completion thread alone consumes the completion queue, and drops the lock for the
// bounce copies, the fault hook and the listeners' callbacks.
#include "prefetch/uring_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "prefetch/faulty_source.h"

namespace moe {

namespace {
constexpr uint64_t stop_tag = ~0ull;
}

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

uring_reader::uring_reader(const std::string& path, bool direct, const reader_config& cfg)
    : _path(path), _direct(direct), _cfg(cfg) {
    if (_cfg.queue_depth == 0) fail("{}: io_uring queue depth must be at least 1", path);
    _cfg.chunk_bytes = std::max<uint64_t>(direct_align, (_cfg.chunk_bytes + direct_align - 1) / direct_align * direct_align);
    _fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0));
    if (_fd < 0) fail("cannot open {} for reading{}: {}", path, direct ? " with O_DIRECT" : "", std::strerror(errno));
    struct stat st{};
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
        _bounce_base = static_cast<uint8_t*>(std::aligned_alloc(direct_align, size_t(qd) * _cfg.chunk_bytes));
        MOE_CHECK(_bounce_base);
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
        io_uring_sqe* sqe = io_uring_get_sqe(&_ring);
        MOE_CHECK(sqe);
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data(sqe, reinterpret_cast<void*>(uintptr_t(stop_tag)));
        submit_locked();
    }
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
    {
        std::lock_guard<std::mutex> lock(_mu);
        _in_flight += _tracker.add_all(reqs, _size, now);
        issue_locked();
        submit_locked();
    }
    report_finished(now);
}

void uring_reader::issue_locked() {
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

void uring_reader::submit_locked() {
    while (io_uring_sq_ready(&_ring) > 0) {
        int rc = io_uring_submit(&_ring);
        if (rc == -EINTR || rc == -EAGAIN) continue;
        if (rc < 0) check_failed("io_uring_submit(&_ring)", __FILE__, __LINE__, std::strerror(-rc));
    }
}

void uring_reader::reap_loop() {
    struct completion {
        uint64_t tag;
        int32_t res;
    };
    std::vector<completion> batch;
    batch.reserve(_slots.size() + 1);
    std::vector<std::pair<read_result, read_listener*>> done;
    done.reserve(_slots.size());
    bool stopping = false;
    while (!stopping) {
        io_uring_cqe* cqe = nullptr;
        int rc = io_uring_wait_cqe(&_ring, &cqe);
        if (rc == -EINTR || rc == -EAGAIN) continue;
        if (rc < 0) check_failed("io_uring_wait_cqe(&_ring, &cqe)", __FILE__, __LINE__, std::strerror(-rc));
        batch.clear();
        unsigned head = 0, n = 0;
        io_uring_for_each_cqe(&_ring, head, cqe) {
            batch.push_back({uint64_t(uintptr_t(io_uring_cqe_get_data(cqe))), cqe->res});
            n++;
        }
        io_uring_cq_advance(&_ring, n);

        for (const completion& cq : batch) {
            if (cq.tag == stop_tag) {
                stopping = true;
                continue;
            }
            const uint32_t i = uint32_t(cq.tag);
            read_chunk c;
            {
                std::lock_guard<std::mutex> lock(_mu);
                c = _slots[i].chunk;
            }
            int64_t res = cq.res;
            if (_cfg.faults) res = _cfg.faults->apply(c.win_off + c.done, c.win_len - c.done, res);
            int64_t err = 0;
            uint64_t err_off = 0;
            const chunk_step step = chunk_result(c, res, _direct, _size, err, err_off);
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
            if (_tracker.chunk_back(c.op, step == chunk_step::FAIL ? err : 0, err_off, out, l)) done.emplace_back(out, l);
        }
        {
            std::lock_guard<std::mutex> lock(_mu);
            issue_locked();
            submit_locked();
        }
        if (done.empty()) continue;
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
}

}  // namespace moe
