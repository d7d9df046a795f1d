// CPU reference dequantization against independent references: gguf-py's decoding of random blocks of every
// type (bit-exact, tests/fixtures/dequant), GCC's _Float16 soft-float conversions over every half and a sweep of
// floats, and hand-computed blocks that pin the layouts (nibble order, Q6_K's trailing d, MXFP4's scale).
#include "runtime/dequant.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "tests/runtime/dequant_fixture.h"

using namespace moe;

namespace {

const tensor_type k_all_types[] = {tensor_type::F32,  tensor_type::F16,    tensor_type::BF16,   tensor_type::Q4_0,
                                   tensor_type::Q4_1, tensor_type::Q5_0,   tensor_type::Q5_1,   tensor_type::Q8_0,
                                   tensor_type::Q2_K, tensor_type::Q3_K,   tensor_type::Q4_K,   tensor_type::Q5_K,
                                   tensor_type::Q6_K, tensor_type::IQ4_NL, tensor_type::IQ4_XS, tensor_type::MXFP4};

uint32_t bits(float f) {
    return std::bit_cast<uint32_t>(f);
}

// Bit-exact comparison (so -0 != +0 and NaN payloads count); reports the first few mismatches.
::testing::AssertionResult same_bits(const std::vector<float>& want, const float* got, size_t n) {
    int shown = 0;
    size_t bad = 0;
    std::string msg;
    for (size_t i = 0; i < n; i++) {
        if (bits(want[i]) == bits(got[i])) continue;
        bad++;
        if (shown++ < 5)
            msg += "\n  [" + std::to_string(i) + "] want " + std::to_string(want[i]) + " got " + std::to_string(got[i]);
    }
    if (bad == 0) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << bad << " of " << n << " values differ:" << msg;
}

std::vector<uint8_t> half_bytes(uint16_t h) {
    return {uint8_t(h & 0xFF), uint8_t(h >> 8)};
}

}  // namespace

class dequant_golden : public ::testing::TestWithParam<tensor_type> {};

// gguf-py does the same float32 operations in the same order as ggml (fp16 -> f32 widening, then d*sc, then
// *q, then -dmin*m), so no tolerance is needed: every value must match to the bit.
TEST_P(dequant_golden, matches_gguf_py_bit_exactly) {
    const tensor_type t = GetParam();
    const auto fx = test::load_dequant_fixture(t);
    const auto& info = type_info(t);
    ASSERT_EQ(fx.n_elems % info.block_elems, 0);
    ASSERT_EQ(fx.raw.size(), size_t(fx.n_elems / info.block_elems * info.block_bytes));

    std::vector<float> got(size_t(fx.n_elems), -1.0f);
    dequantize_row(t, fx.raw.data(), got.data(), fx.n_elems);
    EXPECT_TRUE(same_bits(fx.values, got.data(), got.size())) << type_name(t) << ": whole row";

    // Blocks may sit at any address (17-, 18-, 22-byte blocks packed back to back): decode from odd offsets.
    for (size_t shift : {1, 3}) {
        std::vector<uint8_t> moved(fx.raw.size() + shift);
        std::memcpy(moved.data() + shift, fx.raw.data(), fx.raw.size());
        std::fill(got.begin(), got.end(), -1.0f);
        dequantize_row(t, moved.data() + shift, got.data(), fx.n_elems);
        EXPECT_TRUE(same_bits(fx.values, got.data(), got.size())) << type_name(t) << ": source offset " << shift;
    }

    // One block at a time gives the same as the whole row (no state carried between blocks).
    std::fill(got.begin(), got.end(), -1.0f);
    for (int64_t b = 0; b < fx.n_elems / info.block_elems; b++)
        dequantize_row(t, fx.raw.data() + b * info.block_bytes, got.data() + b * info.block_elems, info.block_elems);
    EXPECT_TRUE(same_bits(fx.values, got.data(), got.size())) << type_name(t) << ": block by block";
}

INSTANTIATE_TEST_SUITE_P(all_types, dequant_golden, ::testing::ValuesIn(k_all_types),
                         [](const auto& p) { return std::string(type_name(p.param)); });

TEST(dequant, supported_types) {
    for (tensor_type t : k_all_types) EXPECT_TRUE(dequant_supported(t)) << type_name(t);
    for (tensor_type t : {tensor_type::I8, tensor_type::I32, tensor_type::F64, tensor_type::F8_E4M3, tensor_type::U8})
        EXPECT_FALSE(dequant_supported(t)) << type_name(t);
}

TEST(dequant, zero_elements_is_a_no_op) {
    float sentinel = 42.0f;
    dequantize_row(tensor_type::Q4_K, nullptr, &sentinel, 0);
    EXPECT_EQ(sentinel, 42.0f);
}

TEST(dequant_death, partial_block_is_a_precondition_violation) {
    std::vector<uint8_t> block(18, 0);
    std::vector<float> out(32);
    EXPECT_DEATH(dequantize_row(tensor_type::Q4_0, block.data(), out.data(), 31), "block_elems");
}

// ---- fp16 / bf16 conversions --------------------------------------------------------------------------------

TEST(fp16, every_half_widens_like_gcc_float16) {
    for (uint32_t h = 0; h < 65536; h++) {
        _Float16 ref;
        const uint16_t hb = uint16_t(h);
        std::memcpy(&ref, &hb, 2);
        const float want = float(ref), got = fp16_to_f32(hb);
        if (std::isnan(want)) {
            ASSERT_TRUE(std::isnan(got)) << std::hex << h;
            // payload kept in the top mantissa bits, sign kept, signalling NaNs not quieted
            ASSERT_EQ(bits(got), (uint32_t(h & 0x8000) << 16) | 0x7F800000u | (uint32_t(h & 0x3FF) << 13)) << h;
        } else {
            ASSERT_EQ(bits(got), bits(want)) << std::hex << h;
        }
        // and narrowing gives the same half back (NaNs come back quiet)
        const uint16_t back = f32_to_fp16(got);
        if (std::isnan(want))
            ASSERT_EQ(back, uint16_t(h | 0x0200)) << std::hex << h;
        else
            ASSERT_EQ(back, hb) << std::hex << h;
    }
}

TEST(fp16, narrowing_rounds_like_gcc_float16) {
    // A sweep through every float exponent with varied mantissas, plus all the tie cases near the half
    // subnormal/normal boundary, against libgcc's round-to-nearest-even conversion.
    std::mt19937 rng(7);
    auto check = [](uint32_t u) {
        const float f = std::bit_cast<float>(u);
        if (std::isnan(f)) return;
        const _Float16 ref = _Float16(f);
        uint16_t want;
        std::memcpy(&want, &ref, 2);
        ASSERT_EQ(f32_to_fp16(f), want) << std::hex << "float bits 0x" << u;
    };
    for (uint64_t u = 0; u < (1ull << 32); u += 4093) check(uint32_t(u));
    for (int i = 0; i < 200000; i++) check(rng());
    for (uint32_t e = 0; e < 256; e++)
        for (uint32_t m : {0u, 1u, 0xFFFu, 0x1000u, 0x1001u, 0x3000u, 0x7FFFFFu, 0x400000u, 0x401000u})
            for (uint32_t s : {0u, 0x80000000u}) check(s | (e << 23) | m);

    // hand-computed: ties go to even, overflow goes to inf, underflow to signed zero
    EXPECT_EQ(f32_to_fp16(1.0f), 0x3C00);
    EXPECT_EQ(f32_to_fp16(1.0f + 0x1p-11f), 0x3C00);      // tie, even stays
    EXPECT_EQ(f32_to_fp16(1.0f + 3 * 0x1p-11f), 0x3C02);  // tie, odd rounds up
    EXPECT_EQ(f32_to_fp16(65504.0f), 0x7BFF);
    EXPECT_EQ(f32_to_fp16(65519.99f), 0x7BFF);
    EXPECT_EQ(f32_to_fp16(65520.0f), 0x7C00);  // tie between 65504 and 65536 -> even (inf)
    EXPECT_EQ(f32_to_fp16(-1e9f), 0xFC00);
    EXPECT_EQ(f32_to_fp16(0x1p-24f), 0x0001);    // smallest subnormal
    EXPECT_EQ(f32_to_fp16(0x1p-25f), 0x0000);    // tie with 0 -> even
    EXPECT_EQ(f32_to_fp16(0x1.8p-24f), 0x0002);  // 1.5 ulp -> 2
    EXPECT_EQ(f32_to_fp16(-0x1p-26f), 0x8000);
    EXPECT_EQ(f32_to_fp16(0x1.FFCp-15f), 0x0400);                       // rounds up into the smallest normal
    EXPECT_EQ(f32_to_fp16(std::bit_cast<float>(0x7F800001u)), 0x7E00);  // signalling NaN comes out quiet
}

TEST(bf16, widening_is_a_shift_and_narrowing_rounds_to_even) {
    for (uint32_t b = 0; b < 65536; b++) ASSERT_EQ(bits(bf16_to_f32(uint16_t(b))), b << 16);
    EXPECT_EQ(f32_to_bf16(1.0f), 0x3F80);
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3F808000u)), 0x3F80);  // tie, even stays
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3F818000u)), 0x3F82);  // tie, odd rounds up
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3F808001u)), 0x3F81);
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x7F7FFFFFu)), 0x7F80);  // FLT_MAX rounds to inf
    EXPECT_EQ(f32_to_bf16(-INFINITY), 0xFF80);
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x7F800001u)), 0x7FC0);  // NaN forced quiet
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x00000001u)), 0x0000);  // float subnormals round, no flush
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x00008000u)), 0x0000);
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x00018000u)), 0x0002);
}

// ---- hand-computed blocks: layouts written out from docs/model-formats.md §2.2 ------------------------------

TEST(dequant_layout, q4_0_low_nibbles_first) {
    std::vector<uint8_t> b = half_bytes(0x4000);  // d = 2
    for (int j = 0; j < 16; j++) b.push_back(uint8_t((15 - j) << 4 | j));
    std::vector<float> y(32);
    dequantize_row(tensor_type::Q4_0, b.data(), y.data(), 32);
    for (int j = 0; j < 16; j++) {
        EXPECT_EQ(y[j], 2.0f * (j - 8)) << j;
        EXPECT_EQ(y[j + 16], 2.0f * (15 - j - 8)) << j;
    }
}

TEST(dequant_layout, q5_1_high_bits_and_min) {
    std::vector<uint8_t> b = half_bytes(0x3800);  // d = 0.5
    auto m = half_bytes(0xC400);                  // m = -4
    b.insert(b.end(), m.begin(), m.end());
    b.insert(b.end(), {0x01, 0x00, 0x01, 0x80});     // qh bits 0, 16, 31
    for (int j = 0; j < 16; j++) b.push_back(0x21);  // low nibble 1, high nibble 2
    std::vector<float> y(32);
    dequantize_row(tensor_type::Q5_1, b.data(), y.data(), 32);
    EXPECT_EQ(y[0], 0.5f * 17 - 4);
    EXPECT_EQ(y[1], 0.5f * 1 - 4);
    EXPECT_EQ(y[16], 0.5f * 18 - 4);
    EXPECT_EQ(y[17], 0.5f * 2 - 4);
    EXPECT_EQ(y[31], 0.5f * 18 - 4);
}

TEST(dequant_layout, mxfp4_scale_and_e2m1_codes) {
    std::vector<uint8_t> b = {127};  // scale 2^(127-127) = 1
    for (int j = 0; j < 16; j++) b.push_back(uint8_t(j | (15 - j) << 4));
    std::vector<float> y(32);
    dequantize_row(tensor_type::MXFP4, b.data(), y.data(), 32);
    const float e2m1[16] = {0, .5, 1, 1.5, 2, 3, 4, 6, -0.0f, -.5, -1, -1.5, -2, -3, -4, -6};
    for (int j = 0; j < 16; j++) {
        EXPECT_EQ(y[j], e2m1[j]) << j;
        EXPECT_EQ(y[j + 16], e2m1[15 - j]) << j;
    }
    b[0] = 0;  // 2^-127: a float subnormal, built exactly
    dequantize_row(tensor_type::MXFP4, b.data(), y.data(), 32);
    EXPECT_EQ(y[7], std::ldexp(6.0f, -127));
}

TEST(dequant_layout, q6_k_scale_is_last) {
    std::vector<uint8_t> b(210, 0);
    // element 0: ql[0] low = 5, qh[0] bits 0-1 = 2 -> q = 5 | 32 = 37 - 32 = 5, scale[0] = -3
    // element 200 (half 1, l = 8, third quarter): ql[64+8] high nibble = 9, qh[128+32+8] bits 4-5 = 1
    //   -> q = 9 | 16 = 25 - 32 = -7, scale[8 + 0 + 4] = 7
    b[0] = 5;
    b[128] = 2;
    b[192] = uint8_t(int8_t(-3));
    b[64 + 8] = 9 << 4;
    b[128 + 32 + 8] = 1 << 4;
    b[192 + 12] = 7;
    auto d = half_bytes(0x3400);  // d = 0.25 at offset 208
    b[208] = d[0];
    b[209] = d[1];
    std::vector<float> y(256);
    dequantize_row(tensor_type::Q6_K, b.data(), y.data(), 256);
    EXPECT_EQ(y[0], 0.25f * -3 * 5);
    EXPECT_EQ(y[200], 0.25f * 7 * -7);
    EXPECT_EQ(y[1], 0.25f * -3 * -32);  // all-zero bits decode to -32
}

TEST(dequant_layout, q4_k_packed_scales_and_mins) {
    std::vector<uint8_t> b(144, 0);
    auto d = half_bytes(0x3C00), dmin = half_bytes(0x3800);  // d = 1, dmin = 0.5
    b[0] = d[0], b[1] = d[1], b[2] = dmin[0], b[3] = dmin[1];
    uint8_t* sc = b.data() + 4;
    sc[1] = 0x80 | 10;         // sub-block 1: scale 10, top bits of scale 5 = 2
    sc[5] = 0x40 | 3;          // sub-block 1: min 3, top bits of min 5 = 1
    sc[9] = 0x7 | (0x9 << 4);  // sub-block 5: scale 7 | 2<<4 = 39, min 9 | 1<<4 = 25
    uint8_t* qs = b.data() + 16;
    qs[0] = 0xF0;       // element 0 (sub 0): 0; element 32 (sub 1): 15
    qs[64 + 3] = 0x40;  // element 128+32+3 (sub 5): 4
    std::vector<float> y(256);
    dequantize_row(tensor_type::Q4_K, b.data(), y.data(), 256);
    EXPECT_EQ(y[0], 0.0f);
    EXPECT_EQ(y[32], 10.0f * 15 - 0.5f * 3);
    EXPECT_EQ(y[128 + 32 + 3], 39.0f * 4 - 0.5f * 25);
}

// ---- matvec reference -----------------------------------------------------------------------------------------

TEST(matvec_ref, f32_hand_computed) {
    const float w[2 * 3] = {1, 2, 3, -1, 0.5f, 4};
    const float x[3] = {2, -1, 0.25f};
    float y[2];
    matvec_ref(tensor_type::F32, w, x, y, 3, 2);
    EXPECT_EQ(y[0], 2 - 2 + 0.75f);
    EXPECT_EQ(y[1], -2 - 0.5f + 1);
}

TEST(matvec_ref, quantized_rows_equal_dequantized_dot_products) {
    // rows are packed back to back: row r starts at r * (n_cols / 32) blocks
    const auto fx = test::load_dequant_fixture(tensor_type::Q8_0);
    const int64_t n_cols = 256, n_rows = fx.n_elems / n_cols;
    std::vector<float> x(static_cast<size_t>(n_cols));
    for (int64_t i = 0; i < n_cols; i++) x[size_t(i)] = float(i % 7) - 3.0f;
    std::vector<float> y(static_cast<size_t>(n_rows));
    matvec_ref(tensor_type::Q8_0, fx.raw.data(), x.data(), y.data(), n_cols, n_rows);
    for (int64_t r = 0; r < n_rows; r++) {
        double want = 0;
        for (int64_t i = 0; i < n_cols; i++) want += double(fx.values[size_t(r * n_cols + i)]) * x[size_t(i)];
        EXPECT_EQ(y[size_t(r)], float(want)) << r;
    }
}
