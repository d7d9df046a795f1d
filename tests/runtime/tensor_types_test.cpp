// Tensor type traits against the block-size table of docs/model-formats.md §2.1 (hand-copied here, not derived from
// the code under test), the refused ids, safetensors dtypes, and overflow-safe byte counts.
#include "runtime/tensor_types.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace moe {
namespace {

struct expected_type {
    uint32_t id;
    const char* name;
    uint32_t block_elems, block_bytes;
};

TEST(tensor_types, ggml_ids_match_the_spec_table) {
    const expected_type table[] = {
        {0, "F32", 1, 4},       {1, "F16", 1, 2},         {2, "Q4_0", 32, 18},    {3, "Q4_1", 32, 20},
        {6, "Q5_0", 32, 22},    {7, "Q5_1", 32, 24},      {8, "Q8_0", 32, 34},    {10, "Q2_K", 256, 84},
        {11, "Q3_K", 256, 110}, {12, "Q4_K", 256, 144},   {13, "Q5_K", 256, 176}, {14, "Q6_K", 256, 210},
        {20, "IQ4_NL", 32, 18}, {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},       {25, "I16", 1, 2},
        {26, "I32", 1, 4},      {27, "I64", 1, 8},        {28, "F64", 1, 8},      {30, "BF16", 1, 2},
        {39, "MXFP4", 32, 17},
    };
    for (const auto& e : table) {
        SCOPED_TRACE(e.name);
        auto info = ggml_type_info(e.id);
        ASSERT_TRUE(info.has_value());
        EXPECT_EQ(uint32_t(info->type), e.id);
        EXPECT_EQ(info->name, e.name);
        EXPECT_EQ(info->block_elems, e.block_elems);
        EXPECT_EQ(info->block_bytes, e.block_bytes);
        EXPECT_EQ(type_name(info->type), e.name);
        EXPECT_EQ(type_info(info->type).block_bytes, e.block_bytes);
    }
}

TEST(tensor_types, removed_unknown_and_unsupported_ids_are_refused) {
    // 4, 5, 31-33, 36-38 removed; 9 Q8_1 and 15 Q8_K intermediate; IQ2/IQ3/IQ1/TQ unsupported; 40+ unknown here.
    for (uint32_t id : {4u,  5u,  9u,  15u, 16u, 17u, 18u, 19u, 21u, 22u,  29u,   31u,   32u,   33u,
                        34u, 35u, 36u, 37u, 38u, 40u, 41u, 42u, 43u, 999u, 1000u, 1001u, 1006u, 0xFFFFFFFFu})
        EXPECT_FALSE(ggml_type_info(id).has_value()) << id;
}

TEST(tensor_types, safetensors_dtypes) {
    const struct {
        const char* dtype;
        uint32_t bytes;
    } known[] = {{"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F64", 8},     {"I8", 1},
                 {"I16", 2}, {"I32", 4}, {"I64", 8},  {"U8", 1},      {"U16", 2},
                 {"U32", 4}, {"U64", 8}, {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
    for (const auto& k : known) {
        SCOPED_TRACE(k.dtype);
        auto info = safetensors_dtype_info(k.dtype);
        ASSERT_TRUE(info.has_value());
        EXPECT_EQ(info->name, k.dtype);
        EXPECT_EQ(info->block_elems, 1u);
        EXPECT_EQ(info->block_bytes, k.bytes);
        EXPECT_EQ(type_name(info->type), k.dtype);
    }
    // Sub-byte and complex dtypes, ggml block types and garbage are not safetensors dtypes we read.
    for (const char* d : {"F4", "F6_E2M3", "F8_E8M0", "C64", "Q8_0", "Q4_K", "MXFP4", "f32", "", "F32 "})
        EXPECT_FALSE(safetensors_dtype_info(d).has_value()) << d;
}

TEST(tensor_types, nbytes_hand_computed) {
    int64_t ne_f32[] = {5, 3, 2};
    EXPECT_EQ(tensor_nbytes(tensor_type::F32, ne_f32, 3), 5u * 3 * 2 * 4);
    int64_t ne_q8[] = {64, 10};
    EXPECT_EQ(tensor_nbytes(tensor_type::Q8_0, ne_q8, 2), 2u * 34 * 10);
    int64_t ne_q4k[] = {2048, 7, 3, 2};
    EXPECT_EQ(tensor_nbytes(tensor_type::Q4_K, ne_q4k, 4), 8u * 144 * 7 * 3 * 2);
    int64_t ne_mx[] = {2880, 5760, 32};  // gpt-oss-20b ffn_up_exps-like
    EXPECT_EQ(tensor_nbytes(tensor_type::MXFP4, ne_mx, 3), 90ull * 17 * 5760 * 32);
    int64_t scalar[] = {7};
    EXPECT_EQ(tensor_nbytes(tensor_type::F16, scalar, 0), 2u);  // 0 dims: one element
    int64_t empty[] = {0, 100};
    EXPECT_EQ(tensor_nbytes(tensor_type::F32, empty, 2), 0u);
}

TEST(tensor_types, nbytes_refuses_bad_shapes) {
    int64_t not_multiple[] = {33, 2};
    EXPECT_EQ(tensor_nbytes(tensor_type::Q8_0, not_multiple, 2), std::nullopt);
    int64_t negative[] = {4, -1};
    EXPECT_EQ(tensor_nbytes(tensor_type::F32, negative, 2), std::nullopt);
    int64_t overflow_bytes[] = {int64_t(1) << 62, 4};  // 2^64 elements' worth of bytes
    EXPECT_EQ(tensor_nbytes(tensor_type::F32, overflow_bytes, 2), std::nullopt);
    int64_t overflow_elems[] = {0, int64_t(1) << 40, int64_t(1) << 40};  // zero bytes, but 2^80 "elements"
    EXPECT_EQ(tensor_nbytes(tensor_type::F32, overflow_elems, 3), std::nullopt);
    int64_t fits[] = {int64_t(1) << 30, int64_t(1) << 30};  // 2^60 elements x 4 bytes = 2^62: fits
    EXPECT_EQ(tensor_nbytes(tensor_type::F32, fits, 2), uint64_t(1) << 62);
    int64_t five[] = {1, 1, 1, 1, 1};
    EXPECT_EQ(tensor_nbytes(tensor_type::F32, five, 5), std::nullopt);
}

}  // namespace
}  // namespace moe
