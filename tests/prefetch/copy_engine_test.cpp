// The host side of the transfer path without a GPU: pinned host buffers, the copy engine's host mode (same
// interface, memcpy on a worker thread, per-slot completion) and the CPU checksum the GPU kernel must match.
#include "prefetch/copy_engine.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "prefetch/checksum.h"
#include "prefetch/host_buffer.h"

namespace moe {
namespace {

TEST(checksum, matches_hand_computed_values) {
    EXPECT_EQ(checksum64(nullptr, 0), 0u);
    // One word 0: mix(0 + 0) = 0 (splitmix's finaliser maps 0 to 0), plus 8 * len_mult.
    uint64_t zero = 0;
    EXPECT_EQ(checksum64(&zero, 8), 8 * checksum_len_mult);
    // Three bytes 01 02 03: one zero-padded little-endian word 0x030201 at index 0.
    const uint8_t three[3] = {1, 2, 3};
    EXPECT_EQ(checksum64(three, 3), checksum_mix(0x030201) + 3 * checksum_len_mult);
    // Two words: index enters the mix.
    const uint64_t two[2] = {5, 7};
    EXPECT_EQ(checksum64(two, 16), checksum_mix(5) + checksum_mix(7 + checksum_golden) + 16 * checksum_len_mult);
}

TEST(checksum, detects_swapped_words_and_single_bit_flips) {
    std::vector<uint64_t> w(1000);
    std::mt19937_64 rng(1);
    for (auto& x : w) x = rng();
    const uint64_t base = checksum64(w.data(), w.size() * 8);
    std::swap(w[10], w[500]);
    EXPECT_NE(checksum64(w.data(), w.size() * 8), base);
    std::swap(w[10], w[500]);
    w[999] ^= 1ull << 40;
    EXPECT_NE(checksum64(w.data(), w.size() * 8), base);
    w[999] ^= 1ull << 40;
    EXPECT_EQ(checksum64(w.data(), w.size() * 8), base);
    EXPECT_NE(checksum64(w.data(), w.size() * 8 - 1), base);  // length matters
}

TEST(host_buffer, aligned_and_usable) {
    host_buffer b(10000);
    ASSERT_NE(b.data(), nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % 4096, 0u);
    EXPECT_EQ(b.size(), 10000u);
    std::memset(b.data(), 0x5a, b.size());
    host_buffer moved = std::move(b);
    EXPECT_EQ(b.data(), nullptr);
    EXPECT_EQ(moved.data()[9999], 0x5a);
    EXPECT_GT(memlock_limit(), 0u);
}

TEST(copy_engine, host_mode_round_trip_per_slot) {
    copy_engine_config cfg;
    cfg.n_slots = 4;
    cfg.staging_bytes = 4096;
    cfg.force_host = true;
    copy_engine eng(cfg);
    EXPECT_FALSE(eng.on_device());
    std::mt19937_64 rng(2);
    std::vector<std::vector<uint8_t>> src(4), dst(4);
    for (uint32_t s = 0; s < 4; s++) {
        src[s].resize(100000 + s * 777);
        for (auto& x : src[s]) x = uint8_t(rng());
        dst[s].assign(src[s].size(), 0);
        eng.copy(s, dst[s].data(), src[s].data(), src[s].size(), false);
    }
    for (uint32_t s = 0; s < 4; s++) {
        eng.wait(s);
        EXPECT_TRUE(eng.ready(s));
        EXPECT_EQ(checksum64(dst[s].data(), dst[s].size()), checksum64(src[s].data(), src[s].size()));
        EXPECT_EQ(dst[s], src[s]);
    }
    eng.wait_all();
}

}  // namespace
}  // namespace moe
