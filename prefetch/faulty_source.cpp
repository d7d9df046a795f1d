// Fault plan evaluation and the wrapper that opens a real reader with it.
#include "prefetch/faulty_source.h"

#include <cerrno>
#include <chrono>
#include <thread>

#include "prefetch/reader_factory.h"

namespace moe {

int64_t fault_injector::apply(uint64_t offset, uint64_t len, int64_t res) {
    const uint64_t n = ++_n_reads;
    if (_plan.delay_us) std::this_thread::sleep_for(std::chrono::microseconds(_plan.delay_us));
    auto fault = [&](int64_t r) {
        ++_n_faults;
        return r;
    };
    if (_plan.eio_nth_read && n == _plan.eio_nth_read) return fault(-EIO);
    if (_plan.eio_at_offset >= 0 && uint64_t(_plan.eio_at_offset) >= offset &&
        uint64_t(_plan.eio_at_offset) < offset + len)
        return fault(-EIO);
    if (_plan.eagain_every && n % _plan.eagain_every == 0) return fault(-EAGAIN);
    if (res <= 0) return res;
    if (_plan.truncate_at >= 0) {
        const uint64_t end = uint64_t(_plan.truncate_at);
        const uint64_t avail = offset >= end ? 0 : end - offset;
        if (uint64_t(res) > avail) return fault(int64_t(avail));
    }
    if (_plan.short_read_every && n % _plan.short_read_every == 0) {
        const uint64_t align = _plan.short_read_align ? _plan.short_read_align : 1;
        const uint64_t shorter = uint64_t(res) / 2 / align * align;
        if (shorter > 0) return fault(int64_t(shorter));
    }
    return res;
}

faulty_source::faulty_source(const std::string& path, reader_kind kind, const fault_plan& plan, reader_config cfg)
    : _faults(std::make_shared<fault_injector>(plan)) {
    cfg.faults = _faults;
    _inner = open_file_source(path, kind, cfg);
    _name = "faulty " + std::string(_inner->kind_name());
}

faulty_source::~faulty_source() = default;

}  // namespace moe
