// The readers deliver exactly the file's bytes: io_uring with O_DIRECT (bounce and straight paths), io_uring
// through the page cache, the pread pool with and without O_DIRECT; ranges at the start and end of the file,
// smaller than a page, straddling pages, unaligned by 32 bytes, larger than a chunk; many more requests than
// the queue depth; submissions from several threads; and the start-up fallback when O_DIRECT or io_uring is
// refused.
#include "prefetch/file_source.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <thread>

#include "common/error.h"
#include "prefetch/reader_factory.h"
#include "tests/prefetch/io_test_util.h"

namespace moe {
namespace {

struct range_case {
    uint64_t offset;
    uint64_t len;
    size_t misalign;  // destination address modulo 4096
};

// File size deliberately not a multiple of 4096, so the last page is partial.
constexpr uint64_t file_size = 3 * 1024 * 1024 + 4096 * 3 + 123;

std::vector<range_case> cases() {
    const uint64_t n = file_size;
    return {
        {0, 100, 0},                 // start of file, smaller than a page
        {0, 4096, 0},                // exactly one aligned page, straight into the destination
        {0, 3 * 4096, 0},            // aligned, several pages
        {32, 4000, 0},               // unaligned by 32 (GGUF alignment), within a page
        {32, 3 * 4096, 32},          // unaligned by 32 at both ends, same misalignment as the offset
        {4090, 20, 7},               // straddles a page boundary
        {4096 - 32, 8192 + 64, 96},  // straddles two boundaries
        {n - 1, 1, 5},               // the very last byte
        {n - 5000, 5000, 0},         // ends at end of file, starts unaligned
        {n - 123, 123, 0},           // exactly the partial last page
        {(n / 4096) * 4096 - 4096, n - ((n / 4096) * 4096 - 4096), 0},  // aligned start, ends at EOF
        {12345, 1500000, 3},                                            // larger than a chunk, unaligned
        {4096 * 5, 1 << 20, 0},                                         // aligned 1 MiB: straight reads
        {4096 * 5 + 32, (1 << 20) + 64, 32},  // offset and address share misalignment: bounce ends, straight middle
        {777, 0, 0},                          // empty
    };
}

struct kind_case {
    reader_kind kind;
    uint64_t chunk;
    uint32_t qd;
};

class reader_test : public ::testing::TestWithParam<kind_case> {};

void expect_reads_match(file_source& src, const test::temp_file& f) {
    const auto cs = cases();
    std::vector<std::unique_ptr<test::guarded_buffer>> bufs;
    std::vector<read_request> reqs;
    for (const range_case& c : cs) {
        bufs.push_back(std::make_unique<test::guarded_buffer>(c.len, c.misalign));
        reqs.push_back(read_request{c.offset, c.len, bufs.back()->dst, nullptr, 0});
    }
    std::vector<read_result> res = read_all(src, reqs);
    ASSERT_EQ(res.size(), cs.size());
    for (size_t i = 0; i < cs.size(); i++) {
        SCOPED_TRACE(
            fmt::format("{}: offset {} len {} misalign {}", src.kind_name(), cs[i].offset, cs[i].len, cs[i].misalign));
        ASSERT_TRUE(res[i].ok()) << describe_read_error(res[i], src.path());
        EXPECT_EQ(res[i].result, int64_t(cs[i].len));
        EXPECT_EQ(std::memcmp(bufs[i]->dst, f.bytes.data() + cs[i].offset, cs[i].len), 0);
        EXPECT_TRUE(bufs[i]->guards_intact());
    }
}

TEST_P(reader_test, delivers_exact_bytes) {
    test::temp_file f("/tmp", file_size, 7);
    reader_config cfg;
    cfg.chunk_bytes = GetParam().chunk;
    cfg.queue_depth = GetParam().qd;
    auto src = open_file_source(f.path, GetParam().kind, cfg);
    EXPECT_EQ(src->size(), file_size);
    expect_reads_match(*src, f);
    EXPECT_EQ(src->in_flight(), 0u);
}

TEST_P(reader_test, rejects_ranges_past_the_end) {
    test::temp_file f("/tmp", 10000, 3);
    reader_config cfg;
    cfg.chunk_bytes = GetParam().chunk;
    cfg.queue_depth = GetParam().qd;
    auto src = open_file_source(f.path, GetParam().kind, cfg);
    std::vector<uint8_t> buf(200);
    std::vector<read_request> reqs{{9900, 101, buf.data()}, {20000, 1, buf.data()}, {9900, 100, buf.data()}};
    auto res = read_all(*src, reqs);
    EXPECT_EQ(res[0].result, -EINVAL);
    EXPECT_EQ(res[1].result, -EINVAL);
    EXPECT_EQ(res[2].result, 100);
    EXPECT_EQ(std::memcmp(buf.data(), f.bytes.data() + 9900, 100), 0);
    EXPECT_NE(describe_read_error(res[0], f.path).find("Invalid argument"), std::string::npos);
}

// Far more requests than slots: the readers must queue, and give every request its own bytes.
TEST_P(reader_test, many_more_requests_than_queue_depth) {
    test::temp_file f("/tmp", 1 << 20, 11);
    reader_config cfg;
    cfg.chunk_bytes = GetParam().chunk;
    cfg.queue_depth = GetParam().qd;
    auto src = open_file_source(f.path, GetParam().kind, cfg);
    std::mt19937 rng(5);
    const int n = 300;
    std::vector<std::vector<uint8_t>> bufs(n);
    std::vector<read_request> reqs;
    for (int i = 0; i < n; i++) {
        uint64_t len = 1 + rng() % 20000;
        uint64_t off = rng() % ((1 << 20) - len);
        bufs[i].resize(len);
        reqs.push_back({off, len, bufs[i].data(), nullptr, uint64_t(i) * 10});
    }
    auto res = read_all(*src, reqs);
    for (int i = 0; i < n; i++) {
        ASSERT_TRUE(res[i].ok()) << describe_read_error(res[i], f.path);
        EXPECT_EQ(res[i].tag, uint64_t(i) * 10);
        EXPECT_EQ(std::memcmp(bufs[i].data(), f.bytes.data() + reqs[i].offset, reqs[i].len), 0) << i;
    }
}

// Several threads submit and wait at once (run under TSan: -DMOE_SANITIZE=thread).
TEST_P(reader_test, concurrent_submitters) {
    test::temp_file f("/tmp", 2 << 20, 13);
    reader_config cfg;
    cfg.chunk_bytes = GetParam().chunk;
    cfg.queue_depth = GetParam().qd;
    auto src = open_file_source(f.path, GetParam().kind, cfg);
    std::vector<std::thread> threads;
    std::atomic<int> bad{0};
    for (int t = 0; t < 4; t++) {
        threads.emplace_back([&, t] {
            std::mt19937 rng(100 + t);
            for (int round = 0; round < 10; round++) {
                std::vector<std::vector<uint8_t>> bufs(8);
                std::vector<read_request> reqs;
                for (auto& b : bufs) {
                    uint64_t len = 1 + rng() % 70000;
                    uint64_t off = rng() % ((2 << 20) - len);
                    b.resize(len);
                    reqs.push_back({off, len, b.data()});
                }
                auto res = read_all(*src, reqs);
                for (size_t i = 0; i < reqs.size(); i++)
                    if (!res[i].ok() || std::memcmp(bufs[i].data(), f.bytes.data() + reqs[i].offset, reqs[i].len))
                        bad++;
            }
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(bad.load(), 0);
}

std::string kind_case_name(const ::testing::TestParamInfo<kind_case>& p) {
    std::string k(reader_kind_name(p.param.kind));
    for (char& ch : k)
        if (ch == '-') ch = '_';
    return fmt::format("{}_chunk{}_qd{}", k, p.param.chunk, p.param.qd);
}

INSTANTIATE_TEST_SUITE_P(
    readers, reader_test,
    ::testing::Values(kind_case{reader_kind::URING_DIRECT, 1 << 20, 32}, kind_case{reader_kind::URING_DIRECT, 8192, 3},
                      kind_case{reader_kind::URING_BUFFERED, 1 << 20, 32},
                      kind_case{reader_kind::URING_BUFFERED, 4096, 2}, kind_case{reader_kind::PREAD, 1 << 20, 4},
                      kind_case{reader_kind::PREAD, 4096, 2}, kind_case{reader_kind::PREAD_DIRECT, 1 << 20, 4},
                      kind_case{reader_kind::PREAD_DIRECT, 8192, 3}),
    kind_case_name);

// Environment switches are process-wide: restore them whatever happens.
struct env_guard {
    const char* name;
    explicit env_guard(const char* n) : name(n) { ::setenv(name, "1", 1); }
    ~env_guard() { ::unsetenv(name); }
};

TEST(reader_factory, auto_picks_uring_direct_on_a_disk_file) {
    test::temp_file f("/tmp", file_size, 1);
    io_probe p = probe_io(f.path);
    if (!p.uring || !p.direct) {
        GTEST_SKIP() << "io_uring or O_DIRECT unavailable here: " << p.uring_error << " " << p.direct_error;
    }
    auto src = open_file_source(f.path);
    EXPECT_EQ(src->kind_name(), "io_uring+O_DIRECT");
    expect_reads_match(*src, f);
}

// /dev/shm is tmpfs: before Linux 6.6 it refuses O_DIRECT with EINVAL; either way the reads must be right.
TEST(reader_factory, tmpfs_file_reads_correctly_whatever_the_probe_says) {
    test::temp_file f("/dev/shm", file_size, 21);
    io_probe p = probe_io(f.path);
    auto src = open_file_source(f.path);
    if (!p.direct) {
        EXPECT_NE(src->kind_name(), "io_uring+O_DIRECT");
    }
    std::printf("[ info ] /dev/shm: O_DIRECT %s (%s), reader %s\n", p.direct ? "accepted" : "refused",
                p.direct_error.c_str(), std::string(src->kind_name()).c_str());
    expect_reads_match(*src, f);
}

TEST(reader_factory, falls_back_to_buffered_when_o_direct_is_refused) {
    env_guard g("MOE_NO_DIRECT");
    test::temp_file f("/dev/shm", file_size, 22);
    io_probe p = probe_io(f.path);
    EXPECT_FALSE(p.direct);
    auto src = open_file_source(f.path);
    EXPECT_EQ(src->kind_name(), p.uring ? "io_uring (buffered)" : "pread");
    expect_reads_match(*src, f);
    EXPECT_THROW(open_file_source(f.path, reader_kind::URING_DIRECT), moe::error);
}

TEST(reader_factory, falls_back_to_pread_without_io_uring) {
    env_guard g("MOE_NO_URING");
    test::temp_file f("/tmp", file_size, 23);
    auto src = open_file_source(f.path);
    EXPECT_TRUE(src->kind_name() == "pread+O_DIRECT" || src->kind_name() == "pread") << src->kind_name();
    expect_reads_match(*src, f);
    EXPECT_THROW(open_file_source(f.path, reader_kind::URING_BUFFERED), moe::error);
}

TEST(reader_factory, missing_file_names_the_path) {
    try {
        open_file_source("/nonexistent/model.gguf");
        FAIL() << "no error";
    } catch (const moe::error& e) {
        EXPECT_NE(std::string(e.what()).find("/nonexistent/model.gguf"), std::string::npos);
        EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos);
    }
    EXPECT_THROW(parse_reader_kind("spdk", "--reader"), moe::error);
    EXPECT_EQ(parse_reader_kind("pread-direct", "--reader"), reader_kind::PREAD_DIRECT);
}

}  // namespace
}  // namespace moe
