// Per-link transfer accounting (prefetch/link_meter.h, docs/io-path.md): busy time is the wall time with at least
// one transfer in flight, so overlapping transfers count once and bytes / busy time is the achieved rate. Checked
// on hand-placed intervals, then through the streamer over a faulty source whose reads take a known delay: the
// busy time lies between that delay and the wall clock measured around the loads, equals the sum of the read
// times when reads run one at a time, and is below that sum when they overlap; a failed read adds busy time but
// no bytes.
#include "prefetch/link_meter.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "cache/memory_tier.h"
#include "prefetch/faulty_source.h"
#include "prefetch/reader_factory.h"
#include "prefetch/streamer.h"
#include "tests/prefetch/io_test_util.h"

namespace moe {
namespace {

using clk = link_meter::clock;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

clk::time_point at_ms(int ms) {
    return clk::time_point{} + milliseconds(1000 + ms);
}
constexpr uint64_t ms_ns(uint64_t ms) {
    return ms * 1000000;
}

TEST(link_meter, overlapping_transfers_count_once) {
    link_meter m;
    // [0, 10] and [5, 20] overlap: busy 0..20; then [30, 40]: busy 30 + ... = 30 ms in all, 35 ms of transfers.
    m.begin(at_ms(0));
    m.begin(at_ms(5));
    m.end(at_ms(0), at_ms(10), 1000, true);
    m.end(at_ms(5), at_ms(20), 3000, true);
    m.begin(at_ms(30));
    m.end(at_ms(30), at_ms(40), 2000, true);
    const link_stats s = m.stats(at_ms(100));
    EXPECT_EQ(s.busy_ns, ms_ns(30));
    EXPECT_EQ(s.transfer_ns, ms_ns(35));
    EXPECT_EQ(s.bytes, 6000u);
    EXPECT_EQ(s.transfers, 3u);
    EXPECT_DOUBLE_EQ(s.gb_per_s(), 6000.0 / double(ms_ns(30)));  // bytes per ns = GB/s
    EXPECT_DOUBLE_EQ(s.seconds(), 0.030);
}

TEST(link_meter, late_ends_failures_and_open_periods) {
    link_meter m;
    // Two transfers; the one ending later (25) reports first, the earlier end (15) last: the period runs to 25.
    m.begin(at_ms(0));
    m.begin(at_ms(2));
    m.end(at_ms(2), at_ms(25), 100, true);
    m.end(at_ms(0), at_ms(15), 0, false);
    link_stats s = m.stats(at_ms(50));
    EXPECT_EQ(s.busy_ns, ms_ns(25));
    EXPECT_EQ(s.bytes, 100u);
    EXPECT_EQ(s.transfers, 1u);
    EXPECT_EQ(s.failed, 1u);
    // A transfer still in flight counts up to the moment of the snapshot.
    m.begin(at_ms(60));
    EXPECT_EQ(m.stats(at_ms(70)).busy_ns, ms_ns(35));
    // reset: counters zero, the transfer in flight is busy from the reset on.
    m.reset(at_ms(80));
    EXPECT_EQ(m.stats(at_ms(90)).busy_ns, ms_ns(10));
    m.end(at_ms(60), at_ms(95), 7, true);
    s = m.stats(at_ms(200));
    EXPECT_EQ(s.busy_ns, ms_ns(15));
    EXPECT_EQ(s.bytes, 7u);
    EXPECT_EQ(link_stats{}.gb_per_s(), 0.0);
}

// Counts completions of loads handed straight to the streamer.
class counting_sink final : public load_sink {
public:
    void load_done(uint64_t, bool ok, std::string_view) override {
        std::lock_guard<std::mutex> lock(_mu);
        (ok ? _ok : _failed)++;
        _cv.notify_all();
    }
    void wait_for(int n) {
        std::unique_lock<std::mutex> lock(_mu);
        _cv.wait(lock, [&] { return _ok + _failed >= n; });
    }
    int ok() {
        std::lock_guard<std::mutex> lock(_mu);
        return _ok;
    }

private:
    std::mutex _mu;
    std::condition_variable _cv;
    int _ok = 0, _failed = 0;
};

constexpr uint32_t k_experts = 4;
constexpr uint32_t k_delay_us = 40000;  // every read syscall takes at least 40 ms

struct read_run {
    link_stats reads;
    uint64_t wall_ns = 0;
    uint64_t expert_bytes = 0;
    int ok = 0;
};

// Four experts (one 12 KiB range each, one read syscall each) loaded at once through a pread pool with `threads`
// threads and a streamer with `in_flight` requests at the reader.
read_run load_four(uint32_t in_flight, uint32_t threads, fault_plan faults) {
    test::temp_file file("/tmp", 64 * 1024, 3);
    streamer_layout layout;
    layout.n_layers = 1;
    layout.n_experts = k_experts;
    layout.ranges.resize(k_experts);
    for (uint32_t e = 0; e < k_experts; e++) layout.ranges[e] = {byte_range{0, uint64_t(e) * 16384, 12288}};
    reader_config rc;
    rc.queue_depth = threads;
    faults.delay_us = k_delay_us;
    faulty_source src(file.path, reader_kind::PREAD, faults, rc);
    memory_tier tier(memory_tier_config{tier_kind::RAM, k_experts * 12288, 12288});
    streamer_config sc;
    sc.max_in_flight = in_flight;
    counting_sink sink;
    read_run r;
    {
        streamer st(sc, layout, {&src}, tier);
        const auto t0 = clk::now();
        for (uint32_t e = 0; e < k_experts; e++) {
            load_request req;
            req.key = expert_key{0, e};
            req.slot = e;
            req.dst = tier.slot_data(e);
            req.bytes = tier.slot_bytes();
            st.load(req, load_ticket{&sink, e});
            r.expert_bytes += 12288;
        }
        sink.wait_for(int(k_experts));
        const auto t1 = clk::now();
        r.reads = st.stats().read_link;
        r.wall_ns = uint64_t(std::chrono::duration_cast<nanoseconds>(t1 - t0).count());
    }
    r.ok = sink.ok();
    return r;
}

TEST(link_meter, streamer_reads_one_at_a_time) {
    const read_run r = load_four(1, 4, {});
    ASSERT_EQ(r.ok, int(k_experts));
    EXPECT_EQ(r.reads.bytes, r.expert_bytes);
    EXPECT_EQ(r.reads.transfers, k_experts);
    // Back to back: busy time is the sum of the reads, each at least the injected delay, and within the wall clock.
    EXPECT_EQ(r.reads.busy_ns, r.reads.transfer_ns);
    EXPECT_GE(r.reads.busy_ns, k_experts * uint64_t(k_delay_us) * 1000);
    EXPECT_LE(r.reads.busy_ns, r.wall_ns);
    EXPECT_DOUBLE_EQ(r.reads.gb_per_s(), double(r.expert_bytes) / double(r.reads.busy_ns));
}

TEST(link_meter, streamer_reads_overlapping) {
    const read_run r = load_four(k_experts, k_experts, {});
    ASSERT_EQ(r.ok, int(k_experts));
    EXPECT_EQ(r.reads.bytes, r.expert_bytes);
    EXPECT_EQ(r.reads.transfers, k_experts);
    // All four at the reader together: the link is busy at least one delay and at most the wall clock, while the
    // per-read times add up to at least four delays, so the busy time is below their sum.
    EXPECT_GE(r.reads.busy_ns, uint64_t(k_delay_us) * 1000);
    EXPECT_LE(r.reads.busy_ns, r.wall_ns);
    EXPECT_GE(r.reads.transfer_ns, k_experts * uint64_t(k_delay_us) * 1000);
    EXPECT_LT(r.reads.busy_ns, r.reads.transfer_ns);
}

TEST(link_meter, streamer_failed_read_is_busy_without_bytes) {
    fault_plan f;
    f.eio_nth_read = 1;
    const read_run r = load_four(1, 1, f);
    EXPECT_EQ(r.ok, int(k_experts) - 1);
    EXPECT_EQ(r.reads.failed, 1u);
    EXPECT_EQ(r.reads.transfers, k_experts - 1);
    EXPECT_EQ(r.reads.bytes, r.expert_bytes - 12288);
    EXPECT_GE(r.reads.busy_ns, k_experts * uint64_t(k_delay_us) * 1000);  // the failed read took its delay too
}

}  // namespace
}  // namespace moe
