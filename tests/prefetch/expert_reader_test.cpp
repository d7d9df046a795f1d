// expert_reader packs every range of an expert, from one or several files, in order into one slot, reports
// once, and on a failure names the range, the file and the offset without reporting before every started
// range has come back.
#include "prefetch/expert_reader.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <thread>

#include "common/error.h"
#include "prefetch/faulty_source.h"
#include "prefetch/reader_factory.h"
#include "tests/prefetch/io_test_util.h"

namespace moe {
namespace {

std::vector<uint8_t> expected_packed(const std::vector<const test::temp_file*>& files,
                                     const std::vector<byte_range>& rs) {
    std::vector<uint8_t> out;
    for (const byte_range& r : rs)
        out.insert(out.end(), files[r.file]->bytes.begin() + long(r.offset),
                   files[r.file]->bytes.begin() + long(r.offset + r.bytes));
    return out;
}

TEST(expert_reader, packs_ranges_from_two_files_in_order) {
    test::temp_file a("/tmp", 2 << 20, 1), b("/tmp", (1 << 20) + 333, 2);
    reader_config cfg;
    cfg.chunk_bytes = 64 * 1024;
    cfg.queue_depth = 8;
    auto fa = open_file_source(a.path, reader_kind::URING_DIRECT, cfg);
    auto fb = open_file_source(b.path, reader_kind::PREAD, cfg);
    expert_reader reader({fa.get(), fb.get()});
    // gate, up, down as GGUF lays them: 32-byte aligned, in separate tensors, the last one ending at EOF.
    std::vector<byte_range> ranges{
        {0, 32 * 1001, 300000}, {1, 64, 200000}, {0, 1500000 + 32, 300000}, {1, (1 << 20) + 333 - 4128, 4128}};
    const uint64_t total = expert_reader::packed_bytes(ranges);
    test::guarded_buffer slot(total, 0);
    reader.read_sync(ranges, slot.dst, total);
    auto want = expected_packed({&a, &b}, ranges);
    ASSERT_EQ(want.size(), total);
    EXPECT_EQ(std::memcmp(slot.dst, want.data(), total), 0);
    EXPECT_TRUE(slot.guards_intact());
}

struct counting_listener : expert_read_listener {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::tuple<uint64_t, bool, std::string>> done;
    void expert_read_done(uint64_t tag, bool ok, std::string_view error) override {
        std::lock_guard<std::mutex> lock(mu);
        done.emplace_back(tag, ok, std::string(error));
        cv.notify_all();
    }
    void wait(size_t n) {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return done.size() >= n; });
    }
};

TEST(expert_reader, many_experts_in_flight_each_reported_once) {
    test::temp_file a("/tmp", 4 << 20, 3);
    reader_config cfg;
    cfg.chunk_bytes = 128 * 1024;
    cfg.queue_depth = 16;
    auto fa = open_file_source(a.path, reader_kind::URING_DIRECT, cfg);
    expert_reader reader({fa.get()});
    const int n = 24;
    const uint64_t per = 3 * 40000;
    std::vector<uint8_t> slots(n * per);
    std::vector<std::vector<byte_range>> experts(n);
    counting_listener l;
    for (int e = 0; e < n; e++) {
        // Expert e's slice of three "tensors" (gate at 0, up at 1 MiB + 32, down at 2 MiB + 64).
        for (int part = 0; part < 3; part++)
            experts[e].push_back({0, uint64_t(part) * (1 << 20) + 32 * part + uint64_t(e) * 40000, 40000});
        reader.read(experts[e], slots.data() + e * per, per, &l, 100 + e);
    }
    l.wait(n);
    ASSERT_EQ(l.done.size(), size_t(n));
    std::vector<int> seen(n, 0);
    for (auto& [tag, ok, err] : l.done) {
        ASSERT_TRUE(ok) << err;
        seen[tag - 100]++;
    }
    for (int e = 0; e < n; e++) {
        EXPECT_EQ(seen[e], 1);
        auto want = expected_packed({&a}, experts[e]);
        EXPECT_EQ(std::memcmp(slots.data() + e * per, want.data(), per), 0) << e;
    }
}

TEST(expert_reader, failure_names_range_file_and_offset) {
    test::temp_file a("/tmp", 1 << 20, 4);
    fault_plan plan;
    plan.eio_at_offset = 700000;
    reader_config cfg;
    cfg.chunk_bytes = 64 * 1024;
    faulty_source src(a.path, reader_kind::URING_DIRECT, plan, cfg);
    expert_reader reader({&src});
    std::vector<byte_range> ranges{{0, 32, 100000}, {0, 650016, 100000}, {0, 900000, 1000}};
    std::vector<uint8_t> slot(expert_reader::packed_bytes(ranges));
    try {
        reader.read_sync(ranges, slot.data(), slot.size());
        FAIL() << "no error";
    } catch (const moe::error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("range 1 of 3"), std::string::npos) << msg;
        EXPECT_NE(msg.find(a.path), std::string::npos) << msg;
        EXPECT_NE(msg.find("offset 650016"), std::string::npos) << msg;
        EXPECT_NE(msg.find("Input/output error"), std::string::npos) << msg;
    }
    // The group goes back to the reader just after its listener hears the result (so a listener may still
    // destroy the reader safely), so allow that hand-back a moment; nothing may stay in flight.
    for (int i = 0; i < 1000 && (reader.in_flight() != 0 || src.in_flight() != 0); i++)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(reader.in_flight(), 0u);
    EXPECT_EQ(src.in_flight(), 0u);
}

TEST(expert_reader, rejects_ranges_that_do_not_fit_or_name_unknown_files) {
    test::temp_file a("/tmp", 10000, 5);
    auto fa = open_file_source(a.path, reader_kind::PREAD);
    expert_reader reader({fa.get()});
    std::vector<uint8_t> slot(100);
    std::vector<byte_range> too_big{{0, 0, 60}, {0, 100, 60}};
    EXPECT_THROW(reader.read_sync(too_big, slot.data(), slot.size()), moe::error);
    std::vector<byte_range> bad_file{{1, 0, 10}};
    EXPECT_THROW(reader.read_sync(bad_file, slot.data(), slot.size()), moe::error);
    std::vector<byte_range> past_end{{0, 9990, 20}};
    EXPECT_THROW(reader.read_sync(past_end, slot.data(), slot.size()), moe::error);
}

}  // namespace
}  // namespace moe
