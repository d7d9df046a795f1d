// The tiered loader (prefetch/tiered_loader.h): an upper expert cache whose loader reads from a lower cache (the
// host tier) whose loader is a fake file. Hit/miss/eviction counts of both levels on a scripted sequence are
// computed by hand below; a failed lower load reaches every upper waiter; a lower cache with no free slot fails
// the upper load instead of blocking; budgets hold under concurrent traffic; bytes always arrive intact.
#include "prefetch/tiered_loader.h"

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cache/expert_cache.h"
#include "cache/memory_tier.h"
#include "cache/policies.h"
#include "common/error.h"
#include "tests/cache/fake_expert_loader.h"

namespace moe {
namespace {

constexpr uint64_t k_slot = 4096;

// file (fake) -> lower cache (host tier) -> tiered loader -> upper cache (compute tier), all LRU.
struct two_levels {
    test::fake_expert_loader file;
    memory_tier lower_tier, upper_tier;
    expert_cache lower;
    tiered_loader tiered;
    expert_cache upper;

    two_levels(uint32_t n_layers, uint32_t n_experts, uint32_t upper_slots, uint32_t lower_slots,
               test::fake_expert_loader::mode m, unsigned threads = 0, unsigned delay_us = 0, uint64_t lower_budget = 0)
        : file(m, threads, delay_us),
          lower_tier(
              memory_tier_config{tier_kind::PINNED_HOST, lower_budget ? lower_budget : lower_slots * k_slot, k_slot}),
          upper_tier(memory_tier_config{tier_kind::RAM, upper_slots * k_slot, k_slot}),
          lower(expert_cache_config{n_layers, n_experts, {}}, lower_tier, file,
                make_policy("lru", policy_params{n_layers, n_experts, lower_tier.n_slots(), nullptr})),
          tiered(lower, upper_tier),
          upper(expert_cache_config{n_layers, n_experts, {}}, upper_tier, tiered,
                make_policy("lru", policy_params{n_layers, n_experts, upper_slots, nullptr})) {}
};

// Acquire, wait, check the bytes, release.
void use(expert_cache& c, expert_key k, uint64_t time) {
    expert_handle h = c.acquire(k, access_info{time, 0, 0.0f});
    h.wait();
    ASSERT_TRUE(test::holds_pattern(h.data(), h.bytes(), k)) << "expert " << k.expert;
}

TEST(tiered_loader, scripted_sequence_hits_and_misses_on_both_levels) {
    // Upper: 2 slots, lower (RAM): 3 slots, 1 layer x 4 experts A B C D, each used then released.
    two_levels t(1, 4, 2, 3, test::fake_expert_loader::mode::IMMEDIATE);
    const uint32_t A = 0, B = 1, C = 2, D = 3;
    const uint32_t seq[] = {A, B, A, C, B, D, A, C};
    for (uint32_t i = 0; i < 8; ++i) use(t.upper, {0, seq[i]}, i + 1);
    // By hand (upper LRU by last use; lower LRU by the order of upper misses, its only accesses):
    //  1 A: upper miss {A};          lower miss {A}            (file read)
    //  2 B: upper miss {A,B};        lower miss {A,B}          (file read)
    //  3 A: upper hit
    //  4 C: upper miss, evicts B;    lower miss {A,B,C}        (file read)
    //  5 B: upper miss, evicts A;    lower HIT (RAM hit)
    //  6 D: upper miss, evicts C;    lower miss, evicts A (misses: A@1, C@4, B@5) {B,C,D}
    //  7 A: upper miss, evicts B;    lower miss, evicts C      {B,D,A}
    //  8 C: upper miss, evicts D;    lower miss, evicts B      {D,A,C}
    const layer_stats up = t.upper.stats().total(), low = t.lower.stats().total();
    EXPECT_EQ(up.hits, 1u);
    EXPECT_EQ(up.misses, 7u);
    EXPECT_EQ(up.loads, 7u);
    EXPECT_EQ(up.evictions, 5u);
    EXPECT_EQ(up.bytes_loaded, 7 * k_slot);
    EXPECT_EQ(low.hits, 1u);
    EXPECT_EQ(low.misses, 6u);
    EXPECT_EQ(low.loads, 6u);
    EXPECT_EQ(low.evictions, 3u);
    EXPECT_EQ(t.file.n_loads(), 6);  // the file is read only on lower misses
    EXPECT_EQ(t.lower.state({0, A}), residency::RESIDENT);
    EXPECT_EQ(t.lower.state({0, B}), residency::ABSENT);
    EXPECT_EQ(t.lower.state({0, C}), residency::RESIDENT);
    EXPECT_EQ(t.lower.state({0, D}), residency::RESIDENT);
    EXPECT_EQ(t.lower.pins({0, A}), 0u);  // every lower pin was dropped once its copy was done
    EXPECT_EQ(t.upper.state({0, A}), residency::RESIDENT);
    EXPECT_EQ(t.upper.state({0, C}), residency::RESIDENT);
}

TEST(tiered_loader, a_lower_miss_completes_the_upper_load_later_and_joins) {
    two_levels t(1, 4, 2, 4, test::fake_expert_loader::mode::DEFERRED);
    expert_handle a = t.upper.acquire({0, 1});
    expert_handle b = t.upper.acquire({0, 1});  // joins the upper load
    EXPECT_FALSE(a.ready());
    EXPECT_EQ(t.file.n_pending(), 1u);
    t.file.complete_next();
    a.wait();
    b.wait();
    EXPECT_TRUE(test::holds_pattern(a.data(), a.bytes(), {0, 1}));
    EXPECT_EQ(t.upper.stats().total().joins, 1u);
    EXPECT_EQ(t.file.n_loads(), 1);
}

TEST(tiered_loader, a_failed_lower_load_reaches_every_upper_waiter_and_a_retry_succeeds) {
    two_levels t(1, 4, 2, 4, test::fake_expert_loader::mode::DEFERRED);
    t.file.fail_key({0, 2}, "expert file: read at offset 8192 failed: disk on fire");
    expert_handle a = t.upper.acquire({0, 2});
    expert_handle b = t.upper.acquire({0, 2});
    t.file.complete_next();
    for (expert_handle* h : {&a, &b}) {
        try {
            h->wait();
            ADD_FAILURE() << "wait() did not throw";
        } catch (const error& e) {
            EXPECT_NE(std::string(e.what()).find("disk on fire"), std::string::npos) << e.what();
        }
    }
    EXPECT_EQ(t.upper.state({0, 2}), residency::ABSENT);
    EXPECT_EQ(t.lower.state({0, 2}), residency::ABSENT);
    EXPECT_EQ(t.upper.stats().total().failed_loads, 1u);
    EXPECT_EQ(t.lower.stats().total().failed_loads, 1u);
    EXPECT_EQ(t.upper.n_loading(), 0u);  // the slot was given back
    t.file.clear_failures();
    expert_handle c = t.upper.acquire({0, 2});
    t.file.complete_next();
    c.wait();
    EXPECT_TRUE(test::holds_pattern(c.data(), c.bytes(), {0, 2}));
}

TEST(tiered_loader, a_lower_tier_without_a_free_slot_fails_the_upper_load_instead_of_blocking) {
    // One lower slot under two upper slots: the second upper miss finds the only lower slot loading.
    two_levels t(1, 4, 2, 1, test::fake_expert_loader::mode::DEFERRED);
    expert_handle a = t.upper.acquire({0, 0});
    expert_handle b = t.upper.acquire({0, 1});
    try {
        b.wait();
        ADD_FAILURE() << "wait() did not throw";
    } catch (const error& e) {
        EXPECT_NE(std::string(e.what()).find("all 1 slots pinned or loading"), std::string::npos) << e.what();
    }
    t.file.complete_next();
    a.wait();
    EXPECT_TRUE(test::holds_pattern(a.data(), a.bytes(), {0, 0}));
}

TEST(tiered_loader, budgets_hold_and_bytes_arrive_intact_under_concurrent_traffic) {
    // Lower budget 6.5 slots -> 6 slots; upper 4 slots; 2 layers x 8 experts; file loads from 3 threads with
    // random delays; 4 threads acquire random experts (at most one pin each, so 4 upper slots always suffice).
    const uint64_t lower_budget = 6 * k_slot + k_slot / 2;
    two_levels t(2, 8, 4, 6, test::fake_expert_loader::mode::THREADED, 3, 200, lower_budget);
    EXPECT_EQ(t.lower_tier.n_slots(), 6u);
    std::atomic<int> bad{0};
    std::vector<std::thread> threads;
    for (int w = 0; w < 4; ++w)
        threads.emplace_back([&, w] {
            std::mt19937 rng(uint32_t(w) + 1);
            for (int i = 0; i < 300; ++i) {
                const expert_key k{uint32_t(rng() % 2), uint32_t(rng() % 8)};
                try {
                    expert_handle h = t.upper.acquire(k);
                    h.wait();
                    if (!test::holds_pattern(h.data(), h.bytes(), k)) ++bad;
                } catch (const error&) {
                    ++bad;
                }
            }
        });
    for (auto& th : threads) th.join();
    EXPECT_EQ(bad.load(), 0);
    EXPECT_LE(t.lower_tier.reserved_bytes(), lower_budget);
    EXPECT_LE(t.lower_tier.bytes_high_water(), lower_budget);
    EXPECT_LE(t.upper_tier.bytes_high_water(), 4 * k_slot);
    const layer_stats up = t.upper.stats().total(), low = t.lower.stats().total();
    EXPECT_EQ(up.hits + up.misses, 1200u);
    EXPECT_EQ(low.hits + low.misses, up.loads);  // one lower access per upper load
    EXPECT_EQ(uint64_t(t.file.n_loads()), low.loads);
    EXPECT_GT(low.hits, 0u);
}

TEST(tiered_loader, refuses_upper_slots_smaller_than_lower_ones) {
    test::fake_expert_loader file(test::fake_expert_loader::mode::IMMEDIATE);
    memory_tier lower_tier(memory_tier_config{tier_kind::RAM, 4 * 2 * k_slot, 2 * k_slot});
    memory_tier upper_tier(memory_tier_config{tier_kind::RAM, 2 * k_slot, k_slot});
    expert_cache lower(expert_cache_config{1, 4, {}}, lower_tier, file,
                       make_policy("lru", policy_params{1, 4, lower_tier.n_slots(), nullptr}));
    try {
        tiered_loader t(lower, upper_tier);
        FAIL() << "no exception";
    } catch (const error& e) {
        EXPECT_NE(std::string(e.what()).find("smaller than the lower tier"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace moe
