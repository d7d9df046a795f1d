// Scheduling hints through a host tier: compute cache <- tiered loader <- host cache <- streamer <- (gated) file.
// A prefetch started at the compute cache must reach the streamer as a prefetch (queued behind demands, at its
// priority), be cancellable as a cancelled load (not a failed one) at both levels, and turn into a demand when a
// demand joins it. The gate holds every read, so what is queued where is decided here, not by timing.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <thread>

#include "cache/expert_cache.h"
#include "cache/memory_tier.h"
#include "cache/policies.h"
#include "prefetch/reader_factory.h"
#include "prefetch/streamer.h"
#include "prefetch/tiered_loader.h"
#include "tests/prefetch/gated_source.h"
#include "tests/prefetch/io_test_util.h"

namespace moe {
namespace {

constexpr uint32_t k_experts = 6;
constexpr uint64_t k_expert_bytes = 4096;

struct hinted_stack {
    test::temp_file file{"/tmp", k_experts* k_expert_bytes, 3};
    std::unique_ptr<file_source> source;
    std::unique_ptr<test::gated_source> gate;
    memory_tier host_tier{memory_tier_config{tier_kind::PINNED_HOST, k_experts* k_expert_bytes, k_expert_bytes}};
    memory_tier upper_tier{memory_tier_config{tier_kind::RAM, 4 * k_expert_bytes, k_expert_bytes}};
    std::unique_ptr<streamer> stream;
    std::unique_ptr<expert_cache> host;
    std::unique_ptr<tiered_loader> tiered;
    std::unique_ptr<expert_cache> upper;

    hinted_stack() {
        source = open_file_source(file.path, reader_kind::PREAD);
        gate = std::make_unique<test::gated_source>(*source);
        gate->close();
        streamer_layout l;
        l.n_layers = 1;
        l.n_experts = k_experts;
        for (uint32_t e = 0; e < k_experts; ++e) l.ranges.push_back({{0, e * k_expert_bytes, k_expert_bytes}});
        streamer_config sc;
        sc.max_in_flight = 1;  // one read at the reader, the rest queued in the streamer
        stream = std::make_unique<streamer>(sc, l, std::vector<file_source*>{gate.get()}, host_tier);
        expert_cache_config cc{1, k_experts, {}};
        host = std::make_unique<expert_cache>(cc, host_tier, *stream,
                                              make_policy("lru", policy_params{1, k_experts, host_tier.n_slots()}));
        tiered = std::make_unique<tiered_loader>(*host, upper_tier, stream.get());
        upper = std::make_unique<expert_cache>(cc, upper_tier, *tiered,
                                               make_policy("lru", policy_params{1, k_experts, upper_tier.n_slots()}));
    }
    ~hinted_stack() {
        gate->open();
        upper.reset();
        tiered.reset();
        host.reset();
        stream.reset();
    }
};

template <typename P>
bool eventually(P pred) {
    for (int i = 0; i < 10000; i++) {
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return pred();
}

TEST(tiered_hints, a_prefetch_reaches_the_streamer_as_a_prefetch) {
    hinted_stack s;
    expert_handle a = s.upper->acquire({0, 0});  // a demand: at the reader, held by the gate
    ASSERT_TRUE(eventually([&] { return s.stream->n_in_flight() == 1; }));
    ASSERT_TRUE(s.upper->prefetch({0, 1}));
    ASSERT_TRUE(s.upper->prefetch({0, 2}));
    expert_handle d = s.upper->acquire({0, 3});
    const streamer_stats st = s.stream->stats();
    EXPECT_EQ(st.n_demand, 2u);
    EXPECT_EQ(st.n_prefetch, 2u) << "the host tier asked the streamer for the upper prefetches as demands";
    s.gate->open();
    a.wait();
    d.wait();
    EXPECT_EQ(s.upper->stats().total().failed_loads, 0u);
}

TEST(tiered_hints, a_stale_prefetch_is_cancelled_not_failed_at_both_levels) {
    hinted_stack s;
    expert_handle a = s.upper->acquire({0, 0});
    ASSERT_TRUE(eventually([&] { return s.stream->n_in_flight() == 1; }));
    ASSERT_TRUE(s.upper->prefetch({0, 1}));
    ASSERT_EQ(s.stream->n_queued(), 1u);
    EXPECT_TRUE(s.tiered->cancel({0, 1}));
    EXPECT_FALSE(s.tiered->cancel({0, 1})) << "nothing left to cancel";
    const layer_stats up = s.upper->stats().total();
    EXPECT_EQ(up.cancelled_loads, 1u);
    EXPECT_EQ(up.failed_loads, 0u);
    EXPECT_EQ(s.upper->state({0, 1}), residency::ABSENT);
    EXPECT_EQ(s.host->state({0, 1}), residency::ABSENT) << "the queued read of the host tier was withdrawn too";
    EXPECT_EQ(s.host->stats().total().failed_loads, 0u);
    EXPECT_EQ(s.stream->n_queued(), 0u);
    // A demand on the demand path is never cancelled.
    EXPECT_FALSE(s.tiered->cancel({0, 0}));
    s.gate->open();
    a.wait();
    EXPECT_TRUE(a.ready());
}

TEST(tiered_hints, a_demand_joining_a_queued_prefetch_promotes_it_below) {
    hinted_stack s;
    expert_handle a = s.upper->acquire({0, 0});
    ASSERT_TRUE(eventually([&] { return s.stream->n_in_flight() == 1; }));
    ASSERT_TRUE(s.upper->prefetch({0, 1}));
    expert_handle b = s.upper->acquire({0, 1});  // joins the prefetch in the upper cache
    EXPECT_FALSE(b.ready());
    EXPECT_TRUE(s.tiered->promote({0, 1}));
    EXPECT_EQ(s.stream->stats().n_promoted, 1u);
    EXPECT_FALSE(s.tiered->cancel({0, 1})) << "a promoted load is a demand now";
    s.gate->open();
    b.wait();
    EXPECT_TRUE(b.ready());
}

}  // namespace
}  // namespace moe
