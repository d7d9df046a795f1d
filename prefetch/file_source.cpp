// The shared pieces of the reader interface: error text, and the waiter that turns callbacks into wait/poll.
#include "prefetch/file_source.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace moe {

std::string describe_read_error(const read_result& res, std::string_view path) {
    if (res.ok()) return fmt::format("read of {} bytes at offset {} of {} succeeded", res.len, res.offset, path);
    const char* name = strerrorname_np(res.error());
    return fmt::format(
        "read of {} bytes at offset {} of {} failed at offset {}: {} ({}){}", res.len, res.offset, path,
        res.error_offset, std::strerror(res.error()), name ? name : "?",
        res.error() == ENODATA ? ": the file ends there (truncated, or changed since it was described)" : "");
}

void read_waiter::read_done(const read_result& res) {
    // Notify under the lock: the waiter may return and destroy this object as soon as the lock is released.
    std::lock_guard<std::mutex> lock(_mu);
    _results.push_back(res);
    _cv.notify_all();
}

void read_waiter::wait(size_t n) {
    std::unique_lock<std::mutex> lock(_mu);
    _cv.wait(lock, [&] { return _results.size() >= n; });
}

std::vector<read_result> read_waiter::take() {
    std::lock_guard<std::mutex> lock(_mu);
    return std::exchange(_results, {});
}

size_t read_waiter::n_done() const {
    std::lock_guard<std::mutex> lock(_mu);
    return _results.size();
}

std::vector<read_result> read_all(file_source& src, std::span<const read_request> reqs) {
    read_waiter waiter;
    std::vector<read_request> mine(reqs.begin(), reqs.end());
    for (size_t i = 0; i < mine.size(); i++) {
        mine[i].listener = &waiter;
        mine[i].tag = i;
    }
    src.submit(mine);
    waiter.wait(mine.size());
    std::vector<read_result> out = waiter.take();
    std::sort(out.begin(), out.end(), [](const read_result& a, const read_result& b) { return a.tag < b.tag; });
    for (size_t i = 0; i < out.size(); i++) out[i].tag = reqs[i].tag;
    return out;
}

}  // namespace moe
