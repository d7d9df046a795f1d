// The io_uring reader survives failures of the ring itself: a submission the kernel refuses fails the reads it
// carried (and only those) with the refusal's errno, a failed wait fails the reads in flight and every later
// one, and neither takes the process down; the failure reaches an expert read as an error message, and the
// reader is destroyed cleanly even when it cannot submit its own wake-up. Bounce buffers that cannot be
// allocated are an error of the constructor, for the pread reader too. The failures are injected through
// uring_calls, since a healthy kernel hardly ever returns them.
#include "prefetch/uring_reader.h"

#include <gtest/gtest.h>
#include <liburing.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "prefetch/expert_reader.h"
#include "prefetch/pread_reader.h"
#include "prefetch/reader_factory.h"
#include "tests/prefetch/io_test_util.h"

namespace moe {
namespace {

constexpr uint64_t file_size = 1 << 20;
constexpr uint64_t piece = 64 * 1024;  // one chunk per request

reader_config small_ring() {
    reader_config cfg;
    cfg.queue_depth = 4;
    cfg.chunk_bytes = piece;
    return cfg;
}

bool uring_available(std::string& why) {
    return uring_reader::probe(why);
}

// io_uring_submit that fails with `err` while `refusals` is positive (one refusal per call).
struct refusing_submit {
    std::atomic<int> refusals{0};
    std::atomic<int> calls{0};
    int err = -EIO;
    static int submit(io_uring* ring, void* user) {
        auto* self = static_cast<refusing_submit*>(user);
        self->calls++;
        if (self->refusals.load() > 0) {
            self->refusals--;
            return self->err;
        }
        return io_uring_submit(ring);
    }
};

struct pieces {
    std::vector<std::vector<uint8_t>> bufs;
    std::vector<read_request> reqs;
    explicit pieces(size_t n, uint64_t first = 0) : bufs(n, std::vector<uint8_t>(piece)) {
        for (size_t i = 0; i < n; i++) reqs.push_back({first + i * piece, piece, bufs[i].data(), nullptr, uint64_t(i)});
    }
    bool matches(size_t i, const test::temp_file& f) const {
        return std::equal(bufs[i].begin(), bufs[i].end(), f.bytes.begin() + ptrdiff_t(reqs[i].offset));
    }
};

TEST(uring_reader, refused_submission_fails_its_reads_and_the_reader_goes_on) {
    std::string why;
    if (!uring_available(why)) GTEST_SKIP() << "io_uring unavailable: " << why;
    test::temp_file f("/tmp", file_size, 7);
    refusing_submit hook;
    uring_calls calls;
    calls.submit = &refusing_submit::submit;
    calls.user = &hook;
    uring_reader src(f.path, false, small_ring(), calls);

    // 8 one-chunk requests, 4 slots: the first 4 are cut and refused, then the other 4 go through.
    hook.refusals = 1;
    pieces p(8);
    std::vector<read_result> res = read_all(src, p.reqs);
    ASSERT_EQ(res.size(), 8u);
    int failed = 0;
    for (size_t i = 0; i < res.size(); i++) {
        if (res[i].ok()) {
            EXPECT_EQ(res[i].result, int64_t(piece));
            EXPECT_TRUE(p.matches(i, f)) << "request " << i;
        } else {
            failed++;
            EXPECT_EQ(res[i].error(), EIO) << "request " << i;
            EXPECT_EQ(res[i].error_offset, p.reqs[i].offset);
        }
    }
    EXPECT_EQ(failed, 4);
    EXPECT_EQ(src.in_flight(), 0u);

    // The ring is still in use: the same reads now succeed.
    pieces again(8, piece);
    res = read_all(src, again.reqs);
    for (size_t i = 0; i < res.size(); i++) {
        EXPECT_TRUE(res[i].ok()) << "request " << i << ": " << describe_read_error(res[i], f.path);
        EXPECT_TRUE(again.matches(i, f)) << "request " << i;
    }

    // An expert read over a refusing ring fails with a message, not an abort.
    hook.refusals = 1000000;
    expert_reader er({&src});
    std::vector<uint8_t> slot(3 * piece);
    const byte_range ranges[] = {{0, 0, piece}, {0, 4 * piece, piece}, {0, 9 * piece + 32, piece}};
    try {
        er.read_sync(ranges, slot.data(), slot.size());
        FAIL() << "the read succeeded";
    } catch (const moe::error& e) {
        EXPECT_NE(std::string(e.what()).find("Input/output error"), std::string::npos) << e.what();
    }
    // Destroyed while every submission is refused (its wake-up NOP included): returns all the same.
}

// io_uring_wait_cqe that blocks its first call until the test opens the gate, then fails with EIO.
struct failing_wait {
    std::mutex mu;
    std::condition_variable cv;
    bool open = false;
    std::atomic<int> calls{0};
    static int wait(io_uring* ring, io_uring_cqe** cqe, __kernel_timespec* timeout, void* user) {
        auto* self = static_cast<failing_wait*>(user);
        if (self->calls++ == 0) {
            std::unique_lock<std::mutex> lock(self->mu);
            self->cv.wait(lock, [&] { return self->open; });
            return -EIO;
        }
        return timeout ? io_uring_wait_cqe_timeout(ring, cqe, timeout) : io_uring_wait_cqe(ring, cqe);
    }
    void release() {
        {
            std::lock_guard<std::mutex> lock(mu);
            open = true;
        }
        cv.notify_all();
    }
};

struct captured_log {
    std::mutex mu;
    std::vector<std::pair<log_level, std::string>> lines;
    static void sink(log_level level, const char* text, void* user) {
        auto* self = static_cast<captured_log*>(user);
        std::lock_guard<std::mutex> lock(self->mu);
        self->lines.emplace_back(level, text);
    }
};

TEST(uring_reader, failed_wait_fails_reads_in_flight_and_later_ones) {
    std::string why;
    if (!uring_available(why)) GTEST_SKIP() << "io_uring unavailable: " << why;
    test::temp_file f("/tmp", file_size, 8);
    captured_log logged;
    set_log_callback(&captured_log::sink, &logged);
    {
        failing_wait hook;
        uring_calls calls;
        calls.wait = &failing_wait::wait;
        calls.user = &hook;
        uring_reader src(f.path, false, small_ring(), calls);

        // In the kernel (and likely complete) before the wait fails: they must still be reported as failed, and
        // only once the kernel has handed them back.
        pieces p(3);
        read_waiter w;
        for (auto& r : p.reqs) r.listener = &w;
        src.submit(p.reqs);
        hook.release();
        w.wait(3);
        for (const read_result& r : w.take()) EXPECT_EQ(r.error(), EIO) << describe_read_error(r, f.path);

        // Later reads fail at once with the same error.
        pieces later(2, 5 * piece);
        for (const read_result& r : read_all(src, later.reqs)) EXPECT_EQ(r.error(), EIO);
        EXPECT_EQ(src.in_flight(), 0u);
        EXPECT_EQ(hook.calls.load(), 1);
    }
    set_log_callback(nullptr, nullptr);
    ASSERT_EQ(logged.lines.size(), 1u);
    EXPECT_EQ(logged.lines[0].first, log_level::error);
    EXPECT_NE(logged.lines[0].second.find("waiting on io_uring failed"), std::string::npos) << logged.lines[0].second;
}

TEST(uring_reader, destructor_returns_when_its_wake_up_is_refused) {
    std::string why;
    if (!uring_available(why)) GTEST_SKIP() << "io_uring unavailable: " << why;
    test::temp_file f("/tmp", file_size, 9);
    refusing_submit hook;
    uring_calls calls;
    calls.submit = &refusing_submit::submit;
    calls.user = &hook;
    const auto t0 = std::chrono::steady_clock::now();
    {
        uring_reader src(f.path, false, small_ring(), calls);
        hook.refusals = 1000000;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the completion thread is in its wait
    }
    EXPECT_EQ(hook.calls.load(), 1);  // the wake-up NOP, refused once (EIO is not retried)
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

TEST(uring_reader, unallocatable_bounce_buffers_are_an_error) {
    std::string why;
    if (!uring_available(why)) GTEST_SKIP() << "io_uring unavailable: " << why;
    test::temp_file f("/tmp", file_size, 10);
    if (!probe_io(f.path).direct) GTEST_SKIP() << "O_DIRECT unavailable on /tmp";
    reader_config cfg;
    cfg.queue_depth = 4;
    cfg.chunk_bytes = 1ull << 62;  // queue_depth x chunk_bytes does not fit in memory, nor in a size_t
    EXPECT_THROW(uring_reader(f.path, true, cfg), moe::error);
    EXPECT_THROW(pread_reader(f.path, true, cfg), moe::error);
}

}  // namespace
}  // namespace moe
