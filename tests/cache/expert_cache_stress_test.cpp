// Concurrency stress of the expert cache: several threads acquire top-k groups, wait, check the bytes, hold
// and release, and prefetch, while the loader completes from a worker pool with random delays and random
// failures. Checks that pinned bytes are never overwritten (a pinned expert is never evicted), the budget
// holds, and the statistics add up. Also built with -fsanitize=thread as expert_cache_stress_tsan.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cache/expert_cache.h"
#include "cache/policies.h"
#include "common/error.h"
#include "tests/cache/fake_expert_loader.h"

using namespace moe;
using moe::test::fake_expert_loader;
using moe::test::holds_pattern;

namespace {

struct stress_params {
    uint32_t n_slots;
    unsigned n_threads;
    int iterations;
    double fail_rate;
};

void run_stress(const stress_params& p, uint64_t seed) {
    constexpr uint32_t n_layers = 4, n_experts = 16;
    constexpr uint64_t slot = 4096;
    memory_tier tier(memory_tier_config{tier_kind::RAM, p.n_slots * slot, slot});
    // Declared before the cache: the cache's destructor waits for loads the pool is still completing.
    fake_expert_loader loader(fake_expert_loader::mode::THREADED, 3, /*max_delay_us=*/200, p.fail_rate, seed);
    auto bytes = [](expert_key k) { return 512 + (k.layer * 131 + k.expert * 97) % 3584; };
    expert_cache cache(expert_cache_config{n_layers, n_experts, bytes}, tier, loader,
                       make_policy("lru", policy_params{n_layers, n_experts, p.n_slots, nullptr}));

    std::atomic<uint64_t> acquired{0}, all_pinned{0}, failed_waits{0}, corrupt{0}, other_errors{0}, time{0};
    std::atomic<bool> done{false};
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < p.n_threads; t++) {
        threads.emplace_back([&, t] {
            std::mt19937_64 rng(seed * 1000 + t);
            for (int it = 0; it < p.iterations; it++) {
                uint32_t layer = uint32_t(rng() % n_layers);
                if (rng() % 8 == 0) cache.prefetch({uint32_t(rng() % n_layers), uint32_t(rng() % n_experts)});
                // A top-k group of 1..3 experts of one layer, skewed towards low ids (hot experts).
                std::vector<expert_handle> group;
                unsigned k = 1 + unsigned(rng() % 3);
                for (unsigned i = 0; i < k; i++) {
                    uint32_t e = uint32_t(std::min(rng() % n_experts, rng() % n_experts));
                    try {
                        group.push_back(cache.acquire({layer, e}, access_info{time++, i, 0.f}));
                        acquired++;
                    } catch (const moe::error& err) {
                        if (std::string(err.what()).find("slots pinned or loading") != std::string::npos)
                            all_pinned++;
                        else
                            other_errors++;
                    }
                }
                for (auto& h : group) {
                    try {
                        h.wait();
                    } catch (const moe::error& err) {
                        if (std::string(err.what()).find("injected random failure") != std::string::npos)
                            failed_waits++;
                        else
                            other_errors++;
                        continue;
                    }
                    if (!holds_pattern(h.data(), h.bytes(), h.key())) corrupt++;
                }
                if (rng() % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 50));
                // While still pinned the bytes must not have changed under us.
                for (auto& h : group)
                    if (h.ready() && !holds_pattern(h.data(), h.bytes(), h.key())) corrupt++;
            }
        });
    }
    // Monitor: the budget and slot count hold at every instant we look.
    std::thread monitor([&] {
        while (!done) {
            EXPECT_LE(tier.bytes_in_use(), tier.reserved_bytes());
            // (Two separate reads are not one snapshot, so each count is bounded on its own.)
            EXPECT_LE(cache.n_resident(), p.n_slots);
            EXPECT_LE(cache.n_loading(), p.n_slots);
            EXPECT_LE(tier.slots_in_use(), p.n_slots);
            cache_stats s = cache.stats();
            EXPECT_EQ(s.layers.size(), n_layers);
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
    });
    for (auto& t : threads) t.join();
    done = true;
    monitor.join();
    while (cache.n_loading() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));

    EXPECT_EQ(corrupt.load(), 0u) << "a pinned expert's bytes changed: it was evicted or reloaded while in use";
    EXPECT_EQ(other_errors.load(), 0u);
    layer_stats tot = cache.stats().total();
    EXPECT_EQ(tot.hits + tot.misses, acquired.load());
    EXPECT_EQ(tot.loads, uint64_t(loader.n_loads())) << "every load the cache counted reached the loader once";
    EXPECT_EQ(tot.failed_loads, uint64_t(loader.n_failed()));
    EXPECT_LE(tot.joins, tot.misses);
    EXPECT_LE(tot.prefetch_hits, tot.hits);
    EXPECT_GT(tot.hits, 0u);
    EXPECT_GT(tot.evictions, 0u);
    EXPECT_LE(tier.bytes_high_water(), tier.budget_bytes());
    for (uint32_t l = 0; l < n_layers; l++)
        for (uint32_t e = 0; e < n_experts; e++) ASSERT_EQ(cache.pins({l, e}), 0u);
    if (p.fail_rate > 0) {
        EXPECT_GT(failed_waits.load() + tot.failed_loads, 0u);
    }
    std::printf(
        "stress: %llu acquires, %llu hits, %llu misses (%llu joined), %llu loads, %llu failed, "
        "%llu evictions, %llu 'all pinned', %llu failed waits\n",
        (unsigned long long)acquired.load(), (unsigned long long)tot.hits, (unsigned long long)tot.misses,
        (unsigned long long)tot.joins, (unsigned long long)tot.loads, (unsigned long long)tot.failed_loads,
        (unsigned long long)tot.evictions, (unsigned long long)all_pinned.load(),
        (unsigned long long)failed_waits.load());
}

}  // namespace

TEST(expert_cache_stress, roomy_cache_with_random_failures) {
    run_stress(stress_params{24, 6, 1500, 0.05}, 1);
}

TEST(expert_cache_stress, tight_cache_hits_all_pinned_without_breaking) {
    run_stress(stress_params{8, 6, 1500, 0.02}, 2);
}
