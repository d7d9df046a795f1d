// Block sizes of the tensor types (docs/model-formats.md §2.1) and overflow-safe tensor byte counts.
#include "runtime/tensor_types.h"

#include <array>
#include <cstdint>

#include "common/error.h"

namespace moe {
namespace {

using T = tensor_type;
constexpr std::array<tensor_type_info, 27> k_types = {{
    {T::F32, "F32", 1, 4},         {T::F16, "F16", 1, 2},           {T::Q4_0, "Q4_0", 32, 18},
    {T::Q4_1, "Q4_1", 32, 20},     {T::Q5_0, "Q5_0", 32, 22},       {T::Q5_1, "Q5_1", 32, 24},
    {T::Q8_0, "Q8_0", 32, 34},     {T::Q2_K, "Q2_K", 256, 84},      {T::Q3_K, "Q3_K", 256, 110},
    {T::Q4_K, "Q4_K", 256, 144},   {T::Q5_K, "Q5_K", 256, 176},     {T::Q6_K, "Q6_K", 256, 210},
    {T::IQ4_NL, "IQ4_NL", 32, 18}, {T::IQ4_XS, "IQ4_XS", 256, 136}, {T::I8, "I8", 1, 1},
    {T::I16, "I16", 1, 2},         {T::I32, "I32", 1, 4},           {T::I64, "I64", 1, 8},
    {T::F64, "F64", 1, 8},         {T::BF16, "BF16", 1, 2},         {T::MXFP4, "MXFP4", 32, 17},
    {T::U8, "U8", 1, 1},           {T::BOOL, "BOOL", 1, 1},         {T::F8_E4M3, "F8_E4M3", 1, 1},
    {T::F8_E5M2, "F8_E5M2", 1, 1}, {T::U16, "U16", 1, 2},           {T::U32, "U32", 1, 4},
}};

}  // namespace

std::optional<tensor_type_info> ggml_type_info(uint32_t ggml_id) {
    if (ggml_id >= 1000) return std::nullopt;  // our safetensors-only values are not ggml ids
    for (const auto& t : k_types)
        if (static_cast<uint32_t>(t.type) == ggml_id) return t;
    return std::nullopt;
}

std::optional<tensor_type_info> safetensors_dtype_info(std::string_view dtype) {
    static const tensor_type_info u64{T::U64, "U64", 1, 8};
    if (dtype == "U64") return u64;
    for (const auto& t : k_types) {
        bool plain = t.block_elems == 1;
        if (plain && t.name == dtype) return t;
    }
    return std::nullopt;
}

const tensor_type_info& type_info(tensor_type t) {
    static const tensor_type_info u64{T::U64, "U64", 1, 8};
    if (t == T::U64) return u64;
    for (const auto& i : k_types)
        if (i.type == t) return i;
    check_failed("type_info(known type)", __FILE__, __LINE__, std::to_string(static_cast<uint32_t>(t)));
}

std::string_view type_name(tensor_type t) {
    return type_info(t).name;
}

std::optional<uint64_t> tensor_nbytes(tensor_type t, const int64_t* ne, int n_dims) {
    const auto& info = type_info(t);
    if (n_dims < 0 || n_dims > 4) return std::nullopt;
    // Like gguf.cpp, the element count must fit in int64 too: with a zero dimension the byte product below
    // cannot overflow, yet such a shape is still garbage.
    int64_t elems = 1;
    for (int i = 0; i < n_dims; i++) {
        if (ne[i] < 0) return std::nullopt;
        if (ne[i] != 0 && elems > INT64_MAX / ne[i]) return std::nullopt;
        elems = ne[i] == 0 ? elems : elems * ne[i];
    }
    uint64_t ne0 = n_dims > 0 ? uint64_t(ne[0]) : 1;
    if (ne0 % info.block_elems != 0) return std::nullopt;
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(ne0 / info.block_elems, uint64_t(info.block_bytes), &bytes)) return std::nullopt;
    for (int i = 1; i < n_dims; i++)
        if (__builtin_mul_overflow(bytes, uint64_t(ne[i]), &bytes)) return std::nullopt;
    return bytes;
}

}  // namespace moe
