// Memory tier: slot sizing against the budget, alignment, accounting and high-water mark, pinned fallback,
// and the clear error for a device tier without a GPU.
#include "cache/memory_tier.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "common/error.h"
#include "common/gpu.h"

using namespace moe;

namespace {

memory_tier_config ram(uint64_t budget, uint64_t expert, uint32_t max_slots = UINT32_MAX) {
    return memory_tier_config{tier_kind::RAM, budget, expert, max_slots};
}

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

TEST(memory_tier, slot_size_rounds_up_and_budget_is_never_exceeded) {
    // 10000-byte experts -> 12288-byte slots (3 pages); 100000 bytes hold 8 of them (98304).
    memory_tier t(ram(100000, 10000));
    EXPECT_EQ(t.slot_bytes(), 12288u);
    EXPECT_EQ(t.n_slots(), 8u);
    EXPECT_EQ(t.reserved_bytes(), 98304u);
    EXPECT_LE(t.reserved_bytes(), t.budget_bytes());
    EXPECT_EQ(t.kind(), tier_kind::RAM);
    EXPECT_FALSE(t.page_locked());

    memory_tier exact(ram(3 * 4096, 4096));
    EXPECT_EQ(exact.slot_bytes(), 4096u);
    EXPECT_EQ(exact.n_slots(), 3u);
}

TEST(memory_tier, max_slots_caps_the_reservation) {
    memory_tier t(ram(1 << 20, 4096, 5));
    EXPECT_EQ(t.n_slots(), 5u);
    EXPECT_EQ(t.reserved_bytes(), 5u * 4096);
}

TEST(memory_tier, budget_smaller_than_one_slot_is_a_clear_error) {
    std::string msg = error_of([] { memory_tier t(ram(8000, 5000)); });
    EXPECT_NE(msg.find("cannot hold one expert slot"), std::string::npos) << msg;
    EXPECT_NE(msg.find("8000 bytes"), std::string::npos) << msg;
    EXPECT_NE(msg.find("8192 bytes"), std::string::npos) << msg;
    EXPECT_THROW(memory_tier(ram(1 << 20, 0)), moe::error);
}

TEST(memory_tier, slots_are_aligned_disjoint_and_writable) {
    memory_tier t(ram(6 * 8192, 5000));
    ASSERT_EQ(t.n_slots(), 6u);
    std::vector<uint32_t> got;
    std::set<uintptr_t> addrs;
    for (uint32_t i = 0; i < t.n_slots(); i++) {
        auto s = t.alloc_slot(5000);
        ASSERT_TRUE(s.has_value());
        got.push_back(*s);
        auto a = reinterpret_cast<uintptr_t>(t.slot_data(*s));
        EXPECT_EQ(a % 4096, 0u) << "slot " << *s << " not 4096-aligned";
        addrs.insert(a);
        std::memset(t.slot_data(*s), int(*s + 1), t.slot_bytes());
    }
    EXPECT_EQ(addrs.size(), t.n_slots());
    EXPECT_FALSE(t.alloc_slot(1).has_value()) << "a full tier hands out no slot";
    // Writes to one slot never spill into another.
    for (uint32_t s : got) {
        const auto* b = static_cast<const uint8_t*>(t.slot_data(s));
        for (uint64_t i = 0; i < t.slot_bytes(); i += 511) ASSERT_EQ(b[i], uint8_t(s + 1));
    }
}

TEST(memory_tier, accounting_and_high_water_mark) {
    memory_tier t(ram(4 * 4096, 4096));
    EXPECT_EQ(t.bytes_in_use(), 0u);
    auto a = t.alloc_slot(1000);
    auto b = t.alloc_slot(3000);
    auto c = t.alloc_slot(4096);
    ASSERT_TRUE(a && b && c);
    EXPECT_EQ(t.bytes_in_use(), 8096u);
    EXPECT_EQ(t.slots_in_use(), 3u);
    t.free_slot(*b);
    EXPECT_EQ(t.bytes_in_use(), 5096u);
    EXPECT_EQ(t.bytes_high_water(), 8096u);
    auto d = t.alloc_slot(10);
    ASSERT_TRUE(d);
    EXPECT_EQ(*d, *b) << "the freed slot is reused";
    EXPECT_EQ(t.bytes_in_use(), 5106u);
    EXPECT_EQ(t.bytes_high_water(), 8096u);
    t.free_slot(*a);
    t.free_slot(*c);
    t.free_slot(*d);
    EXPECT_EQ(t.bytes_in_use(), 0u);
    EXPECT_EQ(t.slots_in_use(), 0u);
}

// Random alloc/free against a model of the accounting: in-use bytes and the high-water mark match the model
// and never pass the budget.
TEST(memory_tier, random_alloc_free_matches_model) {
    memory_tier t(ram(10 * 8192 + 123, 8000));
    ASSERT_EQ(t.n_slots(), 10u);
    std::mt19937 rng(42);
    std::vector<std::pair<uint32_t, uint64_t>> held;
    uint64_t model = 0, model_max = 0;
    for (int step = 0; step < 5000; step++) {
        if (held.empty() || (rng() % 2 == 0 && held.size() < t.n_slots())) {
            uint64_t bytes = 1 + rng() % t.slot_bytes();
            auto s = t.alloc_slot(bytes);
            ASSERT_TRUE(s.has_value());
            held.emplace_back(*s, bytes);
            model += bytes;
        } else {
            size_t i = rng() % held.size();
            t.free_slot(held[i].first);
            model -= held[i].second;
            held.erase(held.begin() + long(i));
        }
        model_max = std::max(model_max, model);
        ASSERT_EQ(t.bytes_in_use(), model);
        ASSERT_EQ(t.slots_in_use(), held.size());
    }
    EXPECT_EQ(t.bytes_high_water(), model_max);
    EXPECT_LE(t.bytes_high_water(), t.budget_bytes());
}

TEST(memory_tier, pinned_host_tier_locks_or_falls_back) {
    memory_tier small(memory_tier_config{tier_kind::PINNED_HOST, 4 * 4096, 4096});
    EXPECT_EQ(small.n_slots(), 4u);
    std::memset(small.slot_data(3), 0xab, small.slot_bytes());
    EXPECT_EQ(static_cast<uint8_t*>(small.slot_data(3))[4095], 0xab);
    if (gpu_count() > 0) {
        EXPECT_TRUE(small.page_locked()) << "cudaHostAlloc memory is page-locked";
        return;
    }
    rlimit lim{};
    ASSERT_EQ(getrlimit(RLIMIT_MEMLOCK, &lim), 0);
    if (lim.rlim_cur == RLIM_INFINITY) GTEST_SKIP() << "memlock unlimited: the fallback path cannot be provoked";
    if (lim.rlim_cur >= small.reserved_bytes()) {
        EXPECT_TRUE(small.page_locked()) << "16 KiB fits RLIMIT_MEMLOCK=" << lim.rlim_cur << ", mlock should work";
    }
    // Over the limit: a warning, unlocked memory, and the tier still works.
    uint64_t over = (uint64_t(lim.rlim_cur) / 4096 + 2) * 4096;
    memory_tier big(memory_tier_config{tier_kind::PINNED_HOST, over, 4096});
    EXPECT_FALSE(big.page_locked());
    std::memset(big.slot_data(big.n_slots() - 1), 1, big.slot_bytes());
}

TEST(memory_tier, device_tier_without_gpu_is_a_clear_error) {
    if (gpu_count() > 0) GTEST_SKIP() << "a GPU is present: memory_tier_gpu_test covers the device tier";
    std::string msg = error_of([] { memory_tier t(memory_tier_config{tier_kind::DEVICE, 1 << 20, 4096}); });
    EXPECT_NE(msg.find("memory tier (device)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("CUDA"), std::string::npos) << msg;
}

TEST(memory_tier, parse_tier_kind_names) {
    EXPECT_EQ(parse_tier_kind("RAM", "--tier"), tier_kind::RAM);
    EXPECT_EQ(parse_tier_kind("pinned", "--tier"), tier_kind::PINNED_HOST);
    EXPECT_EQ(parse_tier_kind("device", "--tier"), tier_kind::DEVICE);
    std::string msg = error_of([] { parse_tier_kind("vram", "--tier"); });
    EXPECT_NE(msg.find("--tier"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'vram'"), std::string::npos) << msg;
    for (auto k : {tier_kind::RAM, tier_kind::PINNED_HOST, tier_kind::DEVICE})
        EXPECT_EQ(parse_tier_kind(tier_kind_name(k), "x"), k);
}
