// Random blocks of any dequantizable type for tests and benchmarks: random bytes everywhere except the scale
// fields, which get finite values of realistic size so that decoded weights are finite and of order 0.01-1.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "runtime/dequant.h"
#include "runtime/tensor_types.h"

namespace moe::test {

// Byte offsets of the fp16 scale fields inside one block of t.
inline std::vector<int> half_scale_offsets(tensor_type t) {
    switch (t) {
        case tensor_type::Q4_0:
        case tensor_type::Q5_0:
        case tensor_type::Q8_0:
        case tensor_type::IQ4_NL:
        case tensor_type::IQ4_XS:
            return {0};
        case tensor_type::Q4_1:
        case tensor_type::Q5_1:
        case tensor_type::Q4_K:
        case tensor_type::Q5_K:
            return {0, 2};
        case tensor_type::Q2_K:
            return {80, 82};
        case tensor_type::Q3_K:
            return {108};
        case tensor_type::Q6_K:
            return {208};
        default:
            return {};
    }
}

// n_elems elements of type t (PRECOND: a multiple of the block size), packed.
inline std::vector<uint8_t> random_tensor(tensor_type t, int64_t n_elems, std::mt19937_64& rng) {
    const auto& info = type_info(t);
    const int64_t n_blocks = n_elems / info.block_elems;
    std::vector<uint8_t> raw(size_t(n_blocks * info.block_bytes));
    std::uniform_real_distribution<float> scale(-0.02f, 0.02f);
    std::normal_distribution<float> weight(0.0f, 1.0f);
    auto put16 = [&](size_t off, uint16_t v) {
        raw[off] = uint8_t(v & 0xFF);
        raw[off + 1] = uint8_t(v >> 8);
    };
    if (t == tensor_type::F32) {
        for (int64_t i = 0; i < n_elems; i++) {
            const float f = weight(rng);
            std::memcpy(&raw[size_t(4 * i)], &f, 4);
        }
        return raw;
    }
    if (t == tensor_type::F16 || t == tensor_type::BF16) {
        for (int64_t i = 0; i < n_elems; i++) {
            const float f = weight(rng);
            put16(size_t(2 * i), t == tensor_type::F16 ? f32_to_fp16(f) : f32_to_bf16(f));
        }
        return raw;
    }
    for (auto& b : raw) b = uint8_t(rng());
    const auto offsets = half_scale_offsets(t);
    std::uniform_int_distribution<int> e8m0(120, 130);
    for (int64_t b = 0; b < n_blocks; b++) {
        const size_t base = size_t(b * info.block_bytes);
        for (int off : offsets) put16(base + size_t(off), f32_to_fp16(scale(rng)));
        if (t == tensor_type::MXFP4) raw[base] = uint8_t(e8m0(rng));
    }
    return raw;
}

}  // namespace moe::test
