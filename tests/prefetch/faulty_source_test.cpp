// Every injected fault ends as a correctly completed request (short reads, EAGAIN, delays: requeued and
// finished) or as a failed one whose error names errno and the file offset (EIO, a truncated file) — never as
// a request marked done with missing bytes. Run against each real reader, since the faults enter at the
// syscall results those readers handle.
#include "prefetch/faulty_source.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>

#include "prefetch/reader_factory.h"
#include "tests/prefetch/io_test_util.h"

namespace moe {
namespace {

constexpr uint64_t file_size = 1024 * 1024 + 4096 + 77;

class faulty_test : public ::testing::TestWithParam<reader_kind> {
protected:
    reader_config cfg() const {
        reader_config c;
        c.queue_depth = 4;
        c.chunk_bytes = 64 * 1024;
        return c;
    }
};

TEST_P(faulty_test, eio_at_an_offset_fails_only_the_request_covering_it) {
    test::temp_file f("/tmp", file_size, 1);
    fault_plan plan;
    plan.eio_at_offset = 500000;
    faulty_source src(f.path, GetParam(), plan, cfg());
    std::vector<uint8_t> a(300000), b(300000), c(1000);
    std::vector<read_request> reqs{
        {100, a.size(), a.data()}, {400032, b.size(), b.data()}, {900000, c.size(), c.data()}};
    auto res = read_all(src, reqs);
    ASSERT_TRUE(res[0].ok()) << describe_read_error(res[0], f.path);
    EXPECT_EQ(std::memcmp(a.data(), f.bytes.data() + 100, a.size()), 0);
    ASSERT_FALSE(res[1].ok());
    EXPECT_EQ(res[1].result, -EIO);
    // The failing read's window covers the offset (it starts at or before it, within one chunk).
    EXPECT_LE(res[1].error_offset, 500000u);
    EXPECT_GT(res[1].error_offset + 64 * 1024, 500000u);
    const std::string msg = describe_read_error(res[1], f.path);
    EXPECT_NE(msg.find("Input/output error"), std::string::npos) << msg;
    EXPECT_NE(msg.find("EIO"), std::string::npos) << msg;
    EXPECT_NE(msg.find("offset 400032"), std::string::npos) << msg;
    EXPECT_NE(msg.find(f.path), std::string::npos) << msg;
    ASSERT_TRUE(res[2].ok());
    EXPECT_EQ(std::memcmp(c.data(), f.bytes.data() + 900000, c.size()), 0);
    EXPECT_GE(src.injector().n_faults(), 1u);
}

TEST_P(faulty_test, eio_on_the_nth_read) {
    test::temp_file f("/tmp", file_size, 2);
    fault_plan plan;
    plan.eio_nth_read = 3;
    faulty_source src(f.path, GetParam(), plan, cfg());
    // One read per request (each smaller than a chunk and within one window), issued one at a time.
    int failed = 0;
    for (int i = 0; i < 5; i++) {
        std::vector<uint8_t> b(1000);
        read_request r{uint64_t(i) * 10000 + 32, b.size(), b.data()};
        auto res = read_all(src, {&r, 1});
        if (i == 2) {
            EXPECT_EQ(res[0].result, -EIO);
            failed++;
        } else {
            ASSERT_TRUE(res[0].ok()) << describe_read_error(res[0], f.path);
            EXPECT_EQ(std::memcmp(b.data(), f.bytes.data() + r.offset, b.size()), 0);
        }
    }
    EXPECT_EQ(failed, 1);
}

TEST_P(faulty_test, short_reads_are_requeued_until_complete) {
    test::temp_file f("/tmp", file_size, 3);
    fault_plan plan;
    plan.short_read_every = 2;
    // Buffered readers may see any short count; O_DIRECT ones only whole blocks (else it means end of file).
    const bool direct = GetParam() == reader_kind::URING_DIRECT || GetParam() == reader_kind::PREAD_DIRECT;
    plan.short_read_align = direct ? 4096 : 1;
    faulty_source src(f.path, GetParam(), plan, cfg());
    std::vector<uint8_t> a(file_size - 32);
    read_request r{32, a.size(), a.data()};
    auto res = read_all(src, {&r, 1});
    ASSERT_TRUE(res[0].ok()) << describe_read_error(res[0], f.path);
    EXPECT_EQ(std::memcmp(a.data(), f.bytes.data() + 32, a.size()), 0);
    EXPECT_GT(src.injector().n_faults(), 3u);
}

TEST_P(faulty_test, eagain_is_requeued) {
    test::temp_file f("/tmp", file_size, 4);
    fault_plan plan;
    plan.eagain_every = 3;
    faulty_source src(f.path, GetParam(), plan, cfg());
    std::vector<uint8_t> a(700000);
    read_request r{4096 + 32, a.size(), a.data()};
    auto res = read_all(src, {&r, 1});
    ASSERT_TRUE(res[0].ok()) << describe_read_error(res[0], f.path);
    EXPECT_EQ(std::memcmp(a.data(), f.bytes.data() + r.offset, a.size()), 0);
    EXPECT_GT(src.injector().n_faults(), 2u);
}

TEST_P(faulty_test, delays_slow_down_but_deliver) {
    test::temp_file f("/tmp", file_size, 5);
    fault_plan plan;
    plan.delay_us = 20000;
    faulty_source src(f.path, GetParam(), plan, cfg());
    std::vector<uint8_t> a(5000);
    read_request r{12345, a.size(), a.data()};
    auto t0 = std::chrono::steady_clock::now();
    auto res = read_all(src, {&r, 1});
    auto dt = std::chrono::steady_clock::now() - t0;
    ASSERT_TRUE(res[0].ok());
    EXPECT_EQ(std::memcmp(a.data(), f.bytes.data() + r.offset, a.size()), 0);
    EXPECT_GE(dt, std::chrono::milliseconds(20));
}

TEST_P(faulty_test, truncated_file_fails_ranges_past_the_cut_with_the_offset) {
    test::temp_file f("/tmp", file_size, 6);
    fault_plan plan;
    plan.truncate_at = 600000 + 100;  // not block-aligned, like a copy cut short
    faulty_source src(f.path, GetParam(), plan, cfg());
    std::vector<uint8_t> a(100000), b(100000, 0), c(5000, 0);
    std::vector<read_request> reqs{
        {32, a.size(), a.data()}, {550000, b.size(), b.data()}, {800000, c.size(), c.data()}};
    auto res = read_all(src, reqs);
    ASSERT_TRUE(res[0].ok()) << describe_read_error(res[0], f.path);
    EXPECT_EQ(std::memcmp(a.data(), f.bytes.data() + 32, a.size()), 0);
    EXPECT_EQ(res[1].result, -ENODATA) << describe_read_error(res[1], f.path);
    EXPECT_EQ(res[1].error_offset, 600100u);
    EXPECT_EQ(res[2].result, -ENODATA);
    EXPECT_EQ(res[2].error_offset, 800000u / 4096 * 4096 < 600100 ? 600100u : res[2].error_offset);
    EXPECT_GE(res[2].error_offset, 600100u);
    EXPECT_LE(res[2].error_offset, 800000u);
    EXPECT_NE(describe_read_error(res[1], f.path).find("failed at offset 600100"), std::string::npos);
}

TEST(fault_injector, applies_the_plan) {
    fault_plan plan;
    plan.truncate_at = 1000;
    plan.short_read_every = 2;
    plan.short_read_align = 1;
    fault_injector inj(plan);
    EXPECT_EQ(inj.apply(0, 4096, 4096), 1000);    // read 1: cut at the truncation point
    EXPECT_EQ(inj.apply(0, 800, 800), 400);       // read 2: short
    EXPECT_EQ(inj.apply(2000, 10, 10), 0);        // read 3: past the end
    EXPECT_EQ(inj.apply(0, 10, -EBADF), -EBADF);  // read 4: real errors pass through
    EXPECT_EQ(inj.n_reads(), 4u);
}

std::string kind_name(const ::testing::TestParamInfo<reader_kind>& p) {
    std::string k(reader_kind_name(p.param));
    for (char& ch : k)
        if (ch == '-') ch = '_';
    return k;
}

INSTANTIATE_TEST_SUITE_P(readers, faulty_test,
                         ::testing::Values(reader_kind::URING_DIRECT, reader_kind::URING_BUFFERED, reader_kind::PREAD,
                                           reader_kind::PREAD_DIRECT),
                         kind_name);

}  // namespace
}  // namespace moe
