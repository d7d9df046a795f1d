// The identity of an expert in the cache: (MoE layer, expert id). The cache knows nothing else about it.
#pragma once

#include <cstdint>
#include <functional>

namespace moe {

struct expert_key {
    uint32_t layer = 0;  // MoE layer index (0-based over MoE layers, as in moe-trace v1)
    uint32_t expert = 0;

    uint64_t packed() const { return (uint64_t(layer) << 32) | expert; }
    friend bool operator==(const expert_key&, const expert_key&) = default;
};

}  // namespace moe

template <>
struct std::hash<moe::expert_key> {
    size_t operator()(const moe::expert_key& k) const noexcept {
        uint64_t x = k.packed() * 0x9E3779B97F4A7C15ull;  // Fibonacci hashing spreads layer and expert bits
        return size_t(x ^ (x >> 29));
    }
};
