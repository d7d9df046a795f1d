// pread thread pool (see pread_reader.h).
#include "prefetch/pread_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "prefetch/faulty_source.h"

namespace moe {

pread_reader::pread_reader(const std::string& path, bool direct, const reader_config& cfg)
    : _path(path), _direct(direct), _cfg(cfg) {
    if (_cfg.queue_depth == 0) fail("{}: pread queue depth must be at least 1", path);
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
    if (_direct) {
        if (_cfg.chunk_bytes <= SIZE_MAX / _cfg.queue_depth)
            _bounce_base =
                static_cast<uint8_t*>(std::aligned_alloc(direct_align, size_t(_cfg.queue_depth) * _cfg.chunk_bytes));
        if (!_bounce_base) {
            ::close(_fd);
            fail("{}: cannot allocate the O_DIRECT bounce buffers ({} x {} bytes): lower the queue depth or chunk size",
                 path, _cfg.queue_depth, _cfg.chunk_bytes);
        }
    }
    for (uint32_t i = 0; i < _cfg.queue_depth; i++) _threads.emplace_back([this, i] { worker(i); });
}

pread_reader::~pread_reader() {
    {
        std::unique_lock<std::mutex> lock(_mu);
        _idle_cv.wait(lock, [&] { return _in_flight == 0 && _in_callback == 0; });
        _stop = true;
    }
    _work_cv.notify_all();
    for (auto& t : _threads) t.join();
    ::close(_fd);
    std::free(_bounce_base);
}

void pread_reader::reserve(uint32_t n_requests) {
    std::lock_guard<std::mutex> lock(_mu);
    _tracker.reserve(n_requests);
}

uint64_t pread_reader::in_flight() const {
    std::lock_guard<std::mutex> lock(_mu);
    return _in_flight;
}

void pread_reader::submit(std::span<const read_request> reqs) {
    finished_reads now;
    {
        std::lock_guard<std::mutex> lock(_mu);
        _in_flight += _tracker.add_all(reqs, _size, now);
    }
    _work_cv.notify_all();
    report_finished(now);
}

void pread_reader::worker(uint32_t index) {
    uint8_t* bounce = _bounce_base ? _bounce_base + size_t(index) * _cfg.chunk_bytes : nullptr;
    for (;;) {
        read_chunk c;
        {
            std::unique_lock<std::mutex> lock(_mu);
            read_op* op = nullptr;
            _work_cv.wait(lock, [&] { return _stop || (op = _tracker.next()) != nullptr; });
            if (!op) return;  // stopping, and nothing is left (the destructor waited for every request)
            plan_chunk(*op, c, _direct, _cfg.chunk_bytes, bounce);
        }
        int64_t err = 0;
        uint64_t err_off = 0;
        chunk_step step;
        do {
            const uint64_t off = c.win_off + c.done;
            const uint64_t len = c.win_len - c.done;
            int64_t res = ::pread(_fd, c.buf + c.done, len, off_t(off));
            if (res < 0) res = -errno;
            if (_cfg.faults) res = _cfg.faults->apply(off, len, res);
            step = chunk_result(c, res, _direct, _size, err, err_off);
        } while (step == chunk_step::REISSUE);
        if (step == chunk_step::DONE && c.bounced) std::memcpy(c.copy_dst, c.buf + c.copy_from, c.copy_len);
        read_result out;
        read_listener* l = nullptr;
        bool finished;
        {
            std::lock_guard<std::mutex> lock(_mu);
            finished = _tracker.chunk_back(c.op, step == chunk_step::FAIL ? err : 0, err_off, out, l);
            if (finished) {
                _in_flight--;
                _in_callback++;
            }
        }
        if (!finished) continue;
        if (l) l->read_done(out);
        {
            std::lock_guard<std::mutex> lock(_mu);
            _in_callback--;
        }
        _idle_cv.notify_all();
    }
}

}  // namespace moe
