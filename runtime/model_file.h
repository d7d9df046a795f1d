// A model on disk, format-neutral: the files it spans, its metadata and the tensor table with absolute byte
// ranges. GGUF (single or split) and safetensors (single or sharded, with config.json) both open into this;
// everything above (model description, expert layout, streaming) reads only this.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "runtime/tensor_types.h"

namespace moe {

enum class model_format { GGUF, SAFETENSORS };

// One GGUF metadata value. Arrays hold scalars or strings (nested arrays are refused by the reader).
struct meta_value;
using meta_array = std::vector<meta_value>;
struct meta_value {
    uint32_t gguf_type = 0;  // the GGUF value type id as stored (0..12); arrays keep 9 and elem type below
    uint32_t elem_type = 0;  // for arrays: GGUF type of the elements
    std::variant<uint64_t, int64_t, double, bool, std::string, std::shared_ptr<meta_array>> value;
};

struct tensor_desc {
    std::string name;  // full name as stored ("blk.0.ffn_up_exps.weight", "model.layers.0....")
    tensor_type type;
    int n_dims = 0;
    int64_t ne[4] = {1, 1, 1, 1};  // ggml order: ne[0] is contiguous. safetensors shapes are reversed into this.
    int file = 0;                  // index into model_file::paths
    uint64_t offset = 0;           // absolute byte offset in that file
    uint64_t bytes = 0;            // exact byte size
};

struct model_file {
    model_format format = model_format::GGUF;
    std::vector<std::string> paths;                 // every file the model spans (shards in order)
    std::vector<uint64_t> file_sizes;               // same order as paths
    uint32_t gguf_version = 0;                      // GGUF only
    uint32_t alignment = 0;                         // GGUF: general.alignment or 32
    std::map<std::string, meta_value> metadata;     // GGUF key/values (shard 0); empty for safetensors
    nlohmann::json config;                          // safetensors: config.json beside the weights; null for GGUF
    std::vector<tensor_desc> tensors;               // in file order (shard by shard)
    std::unordered_map<std::string, size_t> index;  // name -> position in tensors

    const tensor_desc* find(const std::string& name) const {
        auto it = index.find(name);
        return it == index.end() ? nullptr : &tensors[it->second];
    }
    // Metadata lookups that accept any integer/float width: writers differ (docs/model-formats.md §1.2).
    const meta_value* meta(const std::string& key) const;
    std::optional<int64_t> meta_int(const std::string& key) const;
    std::optional<double> meta_float(const std::string& key) const;
    std::optional<std::string> meta_string(const std::string& key) const;
    std::optional<bool> meta_bool(const std::string& key) const;
};

// Opens a GGUF file (shard 1 of a split set pulls in the others), a .safetensors file, a
// model.safetensors.index.json, or a directory holding either. Validates everything (magic, version, counts,
// lengths, dims, overflow, alignment, bounds, duplicates) and throws moe::error naming the file, the byte
// offset or field, what was expected and what was found.
model_file open_model_file(const std::string& path);

// The format-specific readers behind open_model_file, exposed for tests and the fuzz target.
model_file read_gguf(const std::string& path);
model_file read_safetensors(const std::string& path);
// Parse a GGUF image held in memory (fuzzing): `name` is used in messages.
model_file parse_gguf_buffer(const uint8_t* data, size_t size, const std::string& name);
// Parse one safetensors image held in memory (fuzzing).
model_file parse_safetensors_buffer(const uint8_t* data, size_t size, const std::string& name);

}  // namespace moe
