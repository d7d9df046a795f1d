// Expert cache behaviour with a fake loader (immediate, deferred, threaded, failing): hits, misses and LRU
// evictions on hand-made sequences, joining in-flight loads, failures and retries, "all pinned", prefetch,
// per-layer statistics, a random property test of pins and budgets, and two stacked caches.
#include "cache/expert_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <random>
#include <thread>

#include "cache/policies.h"
#include "common/error.h"
#include "tests/cache/fake_expert_loader.h"

using namespace moe;
using moe::test::fake_expert_loader;
using moe::test::holds_pattern;
using mode = fake_expert_loader::mode;

namespace {

constexpr uint64_t k_slot = 4096;

std::unique_ptr<eviction_policy> lru(uint32_t n_layers, uint32_t n_experts, uint64_t capacity) {
    return make_policy("lru", policy_params{n_layers, n_experts, capacity, nullptr});
}

// One tier + one loader + an LRU cache over (n_layers x n_experts) keys with n_slots slots.
struct rig {
    memory_tier tier;
    fake_expert_loader loader;
    expert_cache cache;

    rig(uint32_t n_slots, mode m, uint32_t n_layers = 2, uint32_t n_experts = 8, unsigned threads = 0,
        unsigned delay_us = 0)
        : tier(memory_tier_config{tier_kind::RAM, n_slots * k_slot, k_slot}),
          loader(m, threads, delay_us),
          cache(expert_cache_config{n_layers, n_experts, {}}, tier, loader, lru(n_layers, n_experts, n_slots)),
          _mode(m) {}
    // A deferred load left pending would make the cache's destructor wait forever: finish them first.
    ~rig() {
        if (_mode == mode::DEFERRED) loader.complete_all();
    }
    mode _mode;

    // Acquire, wait, check the bytes, drop: one use of an expert.
    void use(expert_key k, uint64_t t = 0) {
        auto h = cache.acquire(k, access_info{t, 0, 0.f});
        h.wait();
        ASSERT_TRUE(h.ready());
        ASSERT_TRUE(holds_pattern(h.data(), h.bytes(), k)) << "layer " << k.layer << " expert " << k.expert;
    }
};

template <typename F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const moe::error& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace

TEST(expert_cache, hit_miss_and_lru_eviction_sequence) {
    rig r(3, mode::IMMEDIATE, 1, 8);
    // A B C fill the 3 slots; A hit; D evicts B (least recently used); B misses and evicts C; A stays.
    uint64_t t = 0;
    for (uint32_t e : {0u, 1u, 2u}) r.use({0, e}, t++);
    EXPECT_EQ(r.cache.n_resident(), 3u);
    r.use({0, 0}, t++);
    r.use({0, 3}, t++);
    EXPECT_EQ(r.cache.state({0, 1}), residency::ABSENT);
    EXPECT_EQ(r.cache.state({0, 0}), residency::RESIDENT);
    EXPECT_EQ(r.cache.state({0, 2}), residency::RESIDENT);
    r.use({0, 1}, t++);
    EXPECT_EQ(r.cache.state({0, 2}), residency::ABSENT);
    EXPECT_EQ(r.cache.state({0, 0}), residency::RESIDENT);
    EXPECT_EQ(r.cache.state({0, 3}), residency::RESIDENT);

    layer_stats s = r.cache.stats().layers[0];
    EXPECT_EQ(s.hits, 1u);
    EXPECT_EQ(s.misses, 5u);
    EXPECT_EQ(s.loads, 5u);
    EXPECT_EQ(s.evictions, 2u);
    EXPECT_EQ(s.bytes_loaded, 5 * k_slot);
    EXPECT_EQ(s.failed_loads, 0u);
    EXPECT_EQ(r.loader.n_loads(), 5);
    EXPECT_LE(r.tier.bytes_high_water(), r.tier.budget_bytes());
    EXPECT_EQ(r.tier.bytes_high_water(), 3 * k_slot);
}

TEST(expert_cache, hit_handle_is_ready_and_points_at_the_slot) {
    rig r(2, mode::IMMEDIATE);
    auto h1 = r.cache.acquire({1, 5});
    EXPECT_TRUE(h1.ready()) << "an immediate loader completes inside acquire";
    auto h2 = r.cache.acquire({1, 5});
    EXPECT_TRUE(h2.ready());
    EXPECT_EQ(h1.data(), h2.data());
    EXPECT_EQ(h1.data(), r.tier.slot_data(h1.slot()));
    EXPECT_EQ(r.cache.pins({1, 5}), 2u);
    expert_handle moved = std::move(h1);
    EXPECT_FALSE(h1.valid());
    EXPECT_EQ(r.cache.pins({1, 5}), 2u) << "moving a handle keeps one pin";
    moved.reset();
    EXPECT_EQ(r.cache.pins({1, 5}), 1u);
    h2 = expert_handle{};
    EXPECT_EQ(r.cache.pins({1, 5}), 0u) << "assigning over a handle unpins";
}

TEST(expert_cache, joining_an_in_flight_load_issues_exactly_one_load) {
    rig r(4, mode::DEFERRED);
    expert_key k{0, 3};
    auto h1 = r.cache.acquire(k);
    auto h2 = r.cache.acquire(k);
    auto h3 = r.cache.acquire(k);
    EXPECT_FALSE(h1.ready());
    EXPECT_FALSE(h3.ready());
    EXPECT_EQ(r.cache.state(k), residency::LOADING);
    EXPECT_FALSE(r.cache.prefetch(k)) << "prefetch of a loading expert is a no-op";
    EXPECT_EQ(r.loader.n_loads(), 1);
    EXPECT_EQ(r.cache.pins(k), 3u);
    r.loader.complete_next();
    EXPECT_TRUE(h1.ready());
    h2.wait();
    h3.wait();
    EXPECT_TRUE(holds_pattern(h2.data(), h2.bytes(), k));
    EXPECT_EQ(h1.data(), h3.data());
    layer_stats s = r.cache.stats().layers[0];
    EXPECT_EQ(s.misses, 3u);
    EXPECT_EQ(s.joins, 2u);
    EXPECT_EQ(s.loads, 1u);
    EXPECT_EQ(s.hits, 0u);
}

TEST(expert_cache, wait_blocks_until_a_completion_from_another_thread) {
    rig r(4, mode::THREADED, 2, 8, /*threads=*/2, /*delay_us=*/20000);
    expert_key k{1, 2};
    auto h = r.cache.acquire(k);
    // Several threads wait on the same load; the loader's worker completes it ~up to 20 ms later.
    std::vector<std::thread> waiters;
    std::atomic<int> ok{0};
    for (int i = 0; i < 3; i++)
        waiters.emplace_back([&] {
            auto h2 = r.cache.acquire(k);
            h2.wait();
            if (holds_pattern(h2.data(), h2.bytes(), k)) ok++;
        });
    h.wait();
    EXPECT_TRUE(holds_pattern(h.data(), h.bytes(), k));
    for (auto& w : waiters) w.join();
    EXPECT_EQ(ok.load(), 3);
    EXPECT_EQ(r.loader.loads_of(k), 1) << "waiters that arrived during the load joined it";
}

TEST(expert_cache, wait_time_is_charged_to_the_layer) {
    rig r(2, mode::DEFERRED, 2, 8);
    auto h = r.cache.acquire({1, 0});
    std::thread completer([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        r.loader.complete_next();
    });
    h.wait();
    completer.join();
    cache_stats s = r.cache.stats();
    EXPECT_GE(s.layers[1].wait_ns, 20'000'000u) << "blocked ~30 ms";
    EXPECT_LT(s.layers[1].wait_ns, 10'000'000'000u);
    EXPECT_EQ(s.layers[0].wait_ns, 0u);
    h.wait();  // a ready handle returns at once and adds nothing
    EXPECT_EQ(r.cache.stats().layers[1].wait_ns, s.layers[1].wait_ns);
}

// A per-layer quota policy (lru-layer: 4 slots over 2 layers = 2 each) evicts within the incoming expert's
// layer even while the tier still has free slots; the cache asks it through must_evict().
TEST(expert_cache, quota_policy_evicts_within_the_layer_before_the_tier_is_full) {
    memory_tier tier(memory_tier_config{tier_kind::RAM, 4 * k_slot, k_slot});
    fake_expert_loader loader(mode::IMMEDIATE);
    expert_cache c(expert_cache_config{2, 8, {}}, tier, loader,
                   make_policy("lru-layer", policy_params{2, 8, 4, nullptr}));
    for (uint32_t e : {0u, 1u, 2u}) c.acquire({0, e});
    EXPECT_EQ(c.state({0, 0}), residency::ABSENT) << "layer 0 is at its quota of 2";
    EXPECT_EQ(tier.slots_in_use(), 2u);
    c.acquire({1, 0});
    c.acquire({1, 1});
    EXPECT_EQ(tier.slots_in_use(), 4u);
    EXPECT_EQ(c.stats().layers[0].evictions, 1u);
    EXPECT_EQ(c.stats().layers[1].evictions, 0u);
    // Layer 0 all pinned and no free slot left: a clear error rather than a victim from the wrong layer.
    auto a = c.acquire({0, 1});
    auto b = c.acquire({0, 2});
    EXPECT_THROW(c.acquire({0, 3}), moe::error);
}

// A host tier sized for every expert (max_slots = number of experts) is a plain store: nothing is evicted.
TEST(expert_cache, tier_holding_all_experts_never_evicts) {
    constexpr uint32_t n_layers = 3, n_experts = 5;
    memory_tier tier(memory_tier_config{tier_kind::RAM, 1ull << 30, k_slot, n_layers * n_experts});
    EXPECT_EQ(tier.n_slots(), n_layers * n_experts) << "no more slots than experts are reserved";
    fake_expert_loader loader(mode::IMMEDIATE);
    expert_cache c(expert_cache_config{n_layers, n_experts, {}}, tier, loader, lru(n_layers, n_experts, 15));
    std::mt19937 rng(7);
    for (int i = 0; i < 500; i++) {
        expert_key k{uint32_t(rng() % n_layers), uint32_t(rng() % n_experts)};
        auto h = c.acquire(k);
        ASSERT_TRUE(holds_pattern(h.data(), h.bytes(), k));
    }
    layer_stats t = c.stats().total();
    EXPECT_EQ(t.evictions, 0u);
    EXPECT_EQ(t.misses, uint64_t(n_layers * n_experts));
    EXPECT_EQ(t.hits, 500u - n_layers * n_experts);
}

TEST(expert_cache, failed_load_reaches_every_waiter_leaves_expert_absent_and_retry_works) {
    rig r(1, mode::DEFERRED);
    expert_key k{0, 4};
    auto h1 = r.cache.acquire(k);
    auto h2 = r.cache.acquire(k);
    std::string thread_msg;
    std::thread waiter([&] {
        auto h3 = r.cache.acquire(k);  // joins before or after the failure; either way it must not hang
        thread_msg = error_of([&] { h3.wait(); });
    });
    // Fail only once the thread has joined the load, so that it really waits on it.
    while (r.cache.pins(k) < 3) std::this_thread::yield();
    r.loader.complete_next("read error at offset 123 of experts.gguf");
    waiter.join();
    EXPECT_FALSE(h1.ready());
    std::string m1 = error_of([&] { h1.wait(); });
    std::string m2 = error_of([&] { h2.wait(); });
    for (const auto& m : {m1, m2, thread_msg}) {
        EXPECT_NE(m.find("read error at offset 123 of experts.gguf"), std::string::npos) << m;
        EXPECT_NE(m.find("layer 0, expert 4"), std::string::npos) << m;
    }
    EXPECT_FALSE(h1.valid()) << "a failed wait leaves the handle empty";
    EXPECT_EQ(r.cache.state(k), residency::ABSENT);
    EXPECT_EQ(r.tier.slots_in_use(), 0u) << "the failed load's slot is free again";
    EXPECT_EQ(r.tier.bytes_in_use(), 0u);
    EXPECT_EQ(r.cache.stats().layers[0].failed_loads, 1u);

    // Retry: a fresh load into the (only) slot.
    auto h4 = r.cache.acquire(k);
    EXPECT_EQ(r.loader.n_loads(), 2);
    r.loader.complete_next();
    h4.wait();
    EXPECT_TRUE(holds_pattern(h4.data(), h4.bytes(), k));
    EXPECT_EQ(r.cache.stats().layers[0].bytes_loaded, k_slot);
    h1.reset();  // no-op on an empty handle; must not disturb the new load's pin
    EXPECT_EQ(r.cache.pins(k), 1u);
}

TEST(expert_cache, stale_handle_of_a_failed_load_does_not_unpin_the_retry) {
    rig r(2, mode::DEFERRED);
    expert_key k{1, 1};
    auto stale = r.cache.acquire(k);
    r.loader.complete_next("boom");
    auto fresh = r.cache.acquire(k);  // the retry, while `stale` has not been waited on or dropped
    r.loader.complete_next();
    EXPECT_FALSE(stale.ready());
    EXPECT_TRUE(fresh.ready());
    stale.reset();
    EXPECT_EQ(r.cache.pins(k), 1u);
    std::string m = error_of([&] {
        auto again = r.cache.acquire(k);
        EXPECT_TRUE(again.ready());
    });
    EXPECT_EQ(m, "(no error)");
}

TEST(expert_cache, loader_that_throws_counts_as_a_failed_load) {
    rig r(2, mode::IMMEDIATE);
    r.loader.throw_from_load(true);
    auto h = r.cache.acquire({0, 0});
    std::string m = error_of([&] { h.wait(); });
    EXPECT_NE(m.find("loader exploded"), std::string::npos) << m;
    EXPECT_EQ(r.cache.state({0, 0}), residency::ABSENT);
    EXPECT_EQ(r.tier.slots_in_use(), 0u);
    r.loader.throw_from_load(false);
    r.use({0, 0});
}

TEST(expert_cache, all_slots_pinned_is_a_clear_error_and_changes_nothing) {
    rig r(2, mode::IMMEDIATE);
    auto a = r.cache.acquire({0, 0});
    auto b = r.cache.acquire({0, 1});
    std::string m = error_of([&] { r.cache.acquire({0, 2}); });
    EXPECT_NE(m.find("all 2 slots pinned"), std::string::npos) << m;
    EXPECT_NE(m.find("top_k"), std::string::npos) << m;
    EXPECT_FALSE(r.cache.prefetch({0, 2})) << "prefetch gives up quietly";
    EXPECT_EQ(r.cache.state({0, 2}), residency::ABSENT);
    EXPECT_EQ(r.cache.state({0, 0}), residency::RESIDENT);
    EXPECT_EQ(r.cache.state({0, 1}), residency::RESIDENT);
    EXPECT_EQ(r.loader.n_loads(), 2);
    EXPECT_EQ(r.cache.stats().layers[0].misses, 2u) << "the refused acquire is not counted";
    // Unpinning one makes room: it is the victim even though it was used last.
    a.reset();
    r.use({0, 2});
    EXPECT_EQ(r.cache.state({0, 0}), residency::ABSENT);
    EXPECT_EQ(r.cache.state({0, 1}), residency::RESIDENT);
}

TEST(expert_cache, loading_experts_are_never_victims) {
    rig r(1, mode::DEFERRED);
    auto h = r.cache.acquire({0, 0});
    h.reset();  // unpinned but still loading: its slot is the loader's until completion
    EXPECT_EQ(r.cache.state({0, 0}), residency::LOADING);
    std::string m = error_of([&] { r.cache.acquire({0, 1}); });
    EXPECT_NE(m.find("all 1 slots pinned or loading"), std::string::npos) << m;
    r.loader.complete_next();
    EXPECT_EQ(r.cache.state({0, 0}), residency::RESIDENT);
    auto h2 = r.cache.acquire({0, 1});  // now it can be evicted
    EXPECT_EQ(r.cache.state({0, 0}), residency::ABSENT);
    r.loader.complete_next();
    EXPECT_TRUE(h2.ready());
}

TEST(expert_cache, prefetch_then_hit_counts_a_prefetch_hit_once) {
    rig r(4, mode::DEFERRED);
    expert_key k{1, 6};
    EXPECT_TRUE(r.cache.prefetch(k));
    EXPECT_EQ(r.cache.pins(k), 0u) << "prefetch does not pin";
    r.loader.complete_next();
    EXPECT_FALSE(r.cache.prefetch(k)) << "prefetch of a resident expert is a no-op";
    auto h = r.cache.acquire(k);
    EXPECT_TRUE(h.ready());
    h.reset();
    auto h2 = r.cache.acquire(k);
    layer_stats s = r.cache.stats().layers[1];
    EXPECT_EQ(s.hits, 2u);
    EXPECT_EQ(s.prefetch_hits, 1u);
    EXPECT_EQ(s.misses, 0u);
    EXPECT_EQ(s.loads, 1u);
    EXPECT_EQ(s.prefetch_loads, 1u);

    // A demand that arrives while the prefetch is still in flight is a (joined) miss, not a prefetch hit.
    expert_key late{1, 7};
    EXPECT_TRUE(r.cache.prefetch(late));
    auto h3 = r.cache.acquire(late);
    EXPECT_FALSE(h3.ready());
    r.loader.complete_next();
    h3.wait();
    h3.reset();
    r.use(late);
    s = r.cache.stats().layers[1];
    EXPECT_EQ(s.prefetch_hits, 1u);
    EXPECT_EQ(s.joins, 1u);
    EXPECT_EQ(s.misses, 1u);
    EXPECT_EQ(s.hits, 3u);
    EXPECT_EQ(r.loader.n_loads(), 2);
}

// Per-layer statistics on a hand-computed sequence over two layers and 3 slots (LRU).
TEST(expert_cache, per_layer_stats_on_a_hand_computed_sequence) {
    rig r(3, mode::IMMEDIATE, 2, 4);
    r.loader.fail_key({1, 3}, "bad sector");
    uint64_t t = 0;
    r.use({0, 0}, t++);                            // L0 miss, load            [00]
    r.use({1, 0}, t++);                            // L1 miss, load            [00 10]
    r.use({0, 0}, t++);                            // L0 hit                   [10 00]
    EXPECT_TRUE(r.cache.prefetch({0, 1}));         // L0 prefetch load         [10 00 01]
    r.use({0, 1}, t++);                            // L0 hit, prefetch hit     [10 00 01]
    r.use({1, 1}, t++);                            // L1 miss, evicts 10 (L1)  [00 01 11]
    r.use({0, 2}, t++);                            // L0 miss, evicts 00 (L0)  [01 11 02]
    EXPECT_THROW(r.use({1, 3}, t++), moe::error);  // L1 miss, evicts 01 (L0), load fails  [11 02]
    r.use({1, 1}, t++);                            // L1 hit                   [02 11]
    r.use({0, 0}, t++);                            // L0 miss, free slot       [02 11 00]

    cache_stats cs = r.cache.stats();
    ASSERT_EQ(cs.layers.size(), 2u);
    layer_stats l0, l1;
    l0.hits = 2, l0.prefetch_hits = 1, l0.misses = 3, l0.evictions = 2, l0.loads = 4, l0.prefetch_loads = 1;
    l0.bytes_loaded = 4 * k_slot;
    l1.hits = 1, l1.misses = 3, l1.evictions = 1, l1.loads = 3, l1.failed_loads = 1, l1.bytes_loaded = 2 * k_slot;
    // Immediate loads never block, so wait time is 0 everywhere.
    EXPECT_EQ(cs.layers[0], l0);
    EXPECT_EQ(cs.layers[1], l1);
    layer_stats total = cs.total();
    EXPECT_EQ(total.hits, 3u);
    EXPECT_EQ(total.misses, 6u);
    EXPECT_DOUBLE_EQ(total.hit_rate(), 3.0 / 9.0);
    std::string table = cs.format();
    EXPECT_NE(table.find("total"), std::string::npos) << table;
    r.cache.reset_stats();
    EXPECT_EQ(r.cache.stats().total(), layer_stats{});
}

TEST(expert_cache, bad_keys_and_oversized_experts_are_errors) {
    memory_tier tier(memory_tier_config{tier_kind::RAM, 4 * k_slot, k_slot});
    fake_expert_loader loader(mode::IMMEDIATE);
    std::string m = error_of([&] {
        expert_cache c(expert_cache_config{2, 4, [](expert_key k) { return k.expert == 3 ? k_slot + 1 : 100; }}, tier,
                       loader, lru(2, 4, 4));
    });
    EXPECT_NE(m.find("layer 0, expert 3"), std::string::npos) << m;
    EXPECT_NE(m.find("4097 bytes"), std::string::npos) << m;
    expert_cache c(expert_cache_config{2, 4, {}}, tier, loader, lru(2, 4, 4));
    m = error_of([&] { c.acquire({2, 0}); });
    EXPECT_NE(m.find("outside the key space"), std::string::npos) << m;
    EXPECT_THROW(c.prefetch({0, 4}), moe::error);
}

// Property test: random acquires, releases, prefetches and deferred completions with random pins and random
// per-expert sizes. After every step: a pinned expert is never evicted, pin counts match the live handles,
// tier bytes equal the bytes of resident + loading experts and never exceed the budget.
TEST(expert_cache, property_pinned_never_evicted_and_budget_never_exceeded) {
    for (uint64_t seed = 1; seed <= 6; seed++) {
        constexpr uint32_t n_layers = 3, n_experts = 6, n_slots = 5;
        std::mt19937_64 rng(seed);
        memory_tier tier(memory_tier_config{tier_kind::RAM, n_slots * k_slot + 1000, k_slot});
        fake_expert_loader loader(seed % 2 ? mode::DEFERRED : mode::IMMEDIATE);
        auto bytes = [](expert_key k) { return 1000 + (k.layer * 977 + k.expert * 613) % 3000; };
        expert_cache c(expert_cache_config{n_layers, n_experts, bytes}, tier, loader,
                       lru(n_layers, n_experts, n_slots));
        std::vector<expert_handle> held;
        uint64_t t = 0;
        for (int step = 0; step < 3000; step++) {
            int op = int(rng() % 10);
            expert_key k{uint32_t(rng() % n_layers), uint32_t(rng() % n_experts)};
            if (op < 4) {
                if (k.layer == 2 && k.expert == 5) loader.fail_key(k, "flaky");
                try {
                    held.push_back(c.acquire(k, access_info{t++, 0, 0.f}));
                } catch (const moe::error& e) {
                    // Only allowed when every slot is pinned or loading.
                    uint32_t busy = 0;
                    for (uint32_t l = 0; l < n_layers; l++)
                        for (uint32_t x = 0; x < n_experts; x++)
                            if (c.state({l, x}) == residency::LOADING ||
                                (c.state({l, x}) == residency::RESIDENT && c.pins({l, x}) > 0))
                                busy++;
                    ASSERT_EQ(busy, n_slots) << e.what();
                }
            } else if (op < 7 && !held.empty()) {
                held.erase(held.begin() + long(rng() % held.size()));
            } else if (op < 8) {
                c.prefetch(k);
            } else if (loader.n_pending() > 0) {
                loader.complete_next();
            }
            // Drop handles whose load failed (their wait() throws), keep the rest.
            for (size_t i = 0; i < held.size();) {
                if (!held[i].ready() && c.state(held[i].key()) == residency::ABSENT) {
                    EXPECT_THROW(held[i].wait(), moe::error);
                    held.erase(held.begin() + long(i));
                } else {
                    i++;
                }
            }
            std::map<uint64_t, uint32_t> live;
            for (const auto& h : held) live[h.key().packed()]++;
            uint64_t expect_bytes = 0;
            for (uint32_t l = 0; l < n_layers; l++)
                for (uint32_t x = 0; x < n_experts; x++) {
                    expert_key q{l, x};
                    residency st = c.state(q);
                    uint32_t n = live.count(q.packed()) ? live[q.packed()] : 0;
                    ASSERT_EQ(c.pins(q), n) << "seed " << seed << " step " << step;
                    if (n > 0) {
                        ASSERT_NE(st, residency::ABSENT) << "pinned expert evicted, seed " << seed;
                    }
                    if (st != residency::ABSENT) expect_bytes += bytes(q);
                }
            ASSERT_EQ(tier.bytes_in_use(), expect_bytes);
            ASSERT_LE(tier.bytes_high_water(), tier.budget_bytes());
            ASSERT_LE(c.n_resident() + c.n_loading(), n_slots);
            for (const auto& h : held) {
                if (h.ready()) {
                    ASSERT_TRUE(holds_pattern(h.data(), h.bytes(), h.key()));
                }
            }
        }
        held.clear();
        loader.clear_failures();
        loader.complete_all();
        cache_stats cs = c.stats();
        layer_stats tot = cs.total();
        EXPECT_EQ(tot.loads, uint64_t(loader.n_loads()));
        EXPECT_EQ(tot.failed_loads, uint64_t(loader.n_failed()));
        EXPECT_GT(tot.hits, 0u);
        EXPECT_GT(tot.evictions, 0u);
    }
}

// Stacking: a "device" cache (2 slots) whose loader acquires from a "host" cache (4 slots) whose loader is the
// fake file. Host hits mean no file reads; the device sees the file's bytes.
namespace {
class cache_to_cache_loader final : public expert_loader {
public:
    explicit cache_to_cache_loader(expert_cache& upstream) : _up(upstream) {}
    void load(const load_request& req, load_ticket ticket) override {
        expert_handle h = _up.acquire(req.key);  // throws -> the cache records a failed load
        h.wait();                                // fine for a host tier with an immediate loader
        std::memcpy(req.dst, h.data(), req.bytes);
        ticket.complete();
    }

private:
    expert_cache& _up;
};
}  // namespace

TEST(expert_cache, caches_stack_device_over_host_over_file) {
    memory_tier host_tier(memory_tier_config{tier_kind::RAM, 4 * k_slot, k_slot});
    memory_tier dev_tier(memory_tier_config{tier_kind::RAM, 2 * k_slot, k_slot});
    fake_expert_loader file(mode::IMMEDIATE);
    expert_cache host(expert_cache_config{1, 8, {}}, host_tier, file, lru(1, 8, 4));
    cache_to_cache_loader up(host);
    expert_cache dev(expert_cache_config{1, 8, {}}, dev_tier, up, lru(1, 8, 2));
    for (uint32_t round = 0; round < 3; round++)
        for (uint32_t e = 0; e < 4; e++) {
            auto h = dev.acquire({0, e});
            h.wait();
            ASSERT_TRUE(holds_pattern(h.data(), h.bytes(), {0, e}));
        }
    // 4 experts cycle through 2 device slots: every device access misses; the host holds all 4 after round 0.
    EXPECT_EQ(dev.stats().total().misses, 12u);
    EXPECT_EQ(host.stats().total().misses, 4u);
    EXPECT_EQ(host.stats().total().hits, 8u);
    EXPECT_EQ(file.n_loads(), 4);
}
