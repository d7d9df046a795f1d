// Element types of model tensors: every ggml type id a GGUF may carry that we support, plus the extra
// safetensors dtypes. Sizes are per block (ggml quantizes in blocks of `block_elems` elements).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace moe {

// Values equal the ggml_type ids stored in GGUF tensor infos (docs/model-formats.md §2.1); values >= 1000 are
// safetensors-only dtypes with no ggml id.
enum class tensor_type : uint32_t {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    IQ4_NL = 20,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    BF16 = 30,
    MXFP4 = 39,
    // safetensors-only
    U8 = 1000,
    BOOL = 1001,
    F8_E4M3 = 1002,
    F8_E5M2 = 1003,
    U16 = 1004,
    U32 = 1005,
    U64 = 1006,
};

struct tensor_type_info {
    tensor_type type;
    std::string_view name;  // "F32", "Q4_K", ... (ggml's spelling; safetensors dtypes use theirs)
    uint32_t block_elems;   // elements per block (1 for plain types)
    uint32_t block_bytes;   // bytes per block
};

// The traits of a supported ggml type id, or nullopt for ids we refuse (removed, unknown, unsupported).
std::optional<tensor_type_info> ggml_type_info(uint32_t ggml_id);
// The traits of a safetensors dtype string ("F32", "BF16", "I64", ...), or nullopt if unknown.
std::optional<tensor_type_info> safetensors_dtype_info(std::string_view dtype);
const tensor_type_info& type_info(tensor_type t);
std::string_view type_name(tensor_type t);

// Bytes of a tensor of shape ne (ggml order: ne[0] contiguous), or nullopt when ne[0] is not a multiple of
// the block size, a dimension is negative, or the arithmetic overflows uint64.
std::optional<uint64_t> tensor_nbytes(tensor_type t, const int64_t* ne, int n_dims);

}  // namespace moe
