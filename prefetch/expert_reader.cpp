// Expert reads as groups of range reads (see expert_reader.h).
#include "prefetch/expert_reader.h"

#include <atomic>
#include <condition_variable>
#include <limits>

#include "common/error.h"

namespace moe {

struct expert_reader::group : read_listener {
    expert_reader* owner = nullptr;
    expert_read_listener* listener = nullptr;
    uint64_t tag = 0;
    std::atomic<uint32_t> remaining{0};
    std::mutex mu;
    uint64_t failed_index = std::numeric_limits<uint64_t>::max();  // lowest failing range: stable message
    std::string error;
    uint32_t n_ranges = 0;
    std::vector<uint32_t> files;     // (n_ranges) file index of each range, for messages
    std::vector<read_request> reqs;  // (n_ranges) kept with the group so a recycled group allocates nothing

    void read_done(const read_result& res) override {
        if (!res.ok()) {
            std::lock_guard<std::mutex> lock(mu);
            if (res.tag < failed_index) {
                failed_index = res.tag;
                error = fmt::format("range {} of {}: {}", res.tag, n_ranges,
                                    describe_read_error(res, owner->_files[files[res.tag]]->path()));
            }
        }
        if (remaining.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
        bool ok;
        {
            std::lock_guard<std::mutex> lock(mu);
            ok = failed_index == std::numeric_limits<uint64_t>::max();
        }
        if (listener) listener->expert_read_done(tag, ok, error);
        owner->give_back(this);
    }
};

expert_reader::expert_reader(std::vector<file_source*> files) : _files(std::move(files)) {
    for (file_source* f : _files) MOE_CHECK(f != nullptr);
}

expert_reader::~expert_reader() {
    std::unique_lock<std::mutex> lock(_mu);
    _idle_cv.wait(lock, [&] { return _in_flight == 0; });
}

uint64_t expert_reader::packed_bytes(std::span<const byte_range> ranges) {
    uint64_t n = 0;
    for (const byte_range& r : ranges) n += r.bytes;
    return n;
}

uint64_t expert_reader::in_flight() const {
    std::lock_guard<std::mutex> lock(_mu);
    return _in_flight;
}

void expert_reader::reserve(uint32_t n_reads, uint32_t max_ranges) {
    for (file_source* f : _files) f->reserve(n_reads * max_ranges);  // each range is one request to its file
    std::lock_guard<std::mutex> lock(_mu);
    while (_groups.size() < n_reads) {
        _groups.push_back(std::make_unique<group>());
        _groups.back()->owner = this;
        _free.push_back(_groups.back().get());
    }
    _free.reserve(_groups.size() + n_reads);  // growth past the reservation then costs the group alone
    for (auto& g : _groups) {
        g->files.reserve(max_ranges);
        g->reqs.reserve(max_ranges);
    }
}

expert_reader::group* expert_reader::take_group() {
    std::lock_guard<std::mutex> lock(_mu);
    _in_flight++;
    if (_free.empty()) {
        _groups.push_back(std::make_unique<group>());
        _groups.back()->owner = this;
        return _groups.back().get();
    }
    group* g = _free.back();
    _free.pop_back();
    return g;
}

void expert_reader::give_back(group* g) {
    // Notify under the lock: the destructor may run as soon as the lock is released.
    std::lock_guard<std::mutex> lock(_mu);
    _free.push_back(g);
    _in_flight--;
    _idle_cv.notify_all();
}

void expert_reader::read(std::span<const byte_range> ranges, uint8_t* dst, uint64_t capacity,
                         expert_read_listener* listener, uint64_t tag) {
    uint64_t total = 0;
    for (size_t i = 0; i < ranges.size(); i++) {
        if (ranges[i].file >= _files.size())
            fail("expert read: range {} names file index {}, but only {} file(s) are open", i, ranges[i].file,
                 _files.size());
        total += ranges[i].bytes;
    }
    if (total > capacity) fail("expert read: {} bytes of ranges do not fit a slot of {} bytes", total, capacity);
    if (ranges.empty()) {
        if (listener) listener->expert_read_done(tag, true, {});
        return;
    }
    group* g = take_group();
    g->listener = listener;
    g->tag = tag;
    g->failed_index = std::numeric_limits<uint64_t>::max();
    g->error.clear();
    g->n_ranges = uint32_t(ranges.size());
    g->files.resize(ranges.size());
    g->remaining.store(uint32_t(ranges.size()), std::memory_order_release);
    // Build every request first, then submit; nothing of the group is touched after the last submit, since
    // its completion may recycle the group at once.
    g->reqs.resize(ranges.size());
    uint64_t at = 0;
    for (size_t i = 0; i < ranges.size(); i++) {
        g->files[i] = ranges[i].file;
        g->reqs[i] = read_request{ranges[i].offset, ranges[i].bytes, dst + at, g, i};
        at += ranges[i].bytes;
    }
    read_request* reqs = g->reqs.data();
    for (size_t i = 0; i < ranges.size(); i++) _files[ranges[i].file]->submit({reqs + i, 1});
}

namespace {
struct sync_listener : expert_read_listener {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    bool ok = false;
    std::string error;
    void expert_read_done(uint64_t, bool ok_, std::string_view err) override {
        std::lock_guard<std::mutex> lock(mu);
        done = true;
        ok = ok_;
        error = err;
        cv.notify_all();
    }
};
}  // namespace

void expert_reader::read_sync(std::span<const byte_range> ranges, uint8_t* dst, uint64_t capacity) {
    sync_listener l;
    read(ranges, dst, capacity, &l, 0);
    std::unique_lock<std::mutex> lock(l.mu);
    l.cv.wait(lock, [&] { return l.done; });
    if (!l.ok) fail("expert read failed: {}", l.error);
}

}  // namespace moe
