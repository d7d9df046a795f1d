// Internals of the model-file readers shared by gguf.cpp, safetensors.cpp and model_file.cpp: a pread-based
// file handle and the split-GGUF file-name pattern. The public entry points live in model_file.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace moe {

// A read-only regular file read with pread; every failure is a moe::error naming the path.
class input_file {
public:
    explicit input_file(const std::string& path);
    ~input_file();
    input_file(const input_file&) = delete;
    input_file& operator=(const input_file&) = delete;

    uint64_t size() const { return _size; }
    const std::string& path() const { return _path; }
    // Reads exactly n bytes at off (the caller has checked off + n <= size()).
    void read_exact(uint64_t off, void* dst, uint64_t n) const;

private:
    std::string _path;
    int _fd = -1;
    uint64_t _size = 0;
};

// "<prefix>-NNNNN-of-MMMMM.gguf" (llama.cpp split naming, 1-based shard number).
struct gguf_split_name {
    std::string prefix;
    int shard = 0;  // 1-based, as in the file name
    int count = 0;
};
std::optional<gguf_split_name> parse_gguf_split_name(const std::string& path);
std::string gguf_split_path(const std::string& prefix, int shard, int count);

// Minimum encoded sizes used to refuse counts a file cannot hold before anything is allocated.
inline constexpr uint64_t k_gguf_min_kv_bytes = 8 + 4 + 1;               // key length, value type, 1-byte value
inline constexpr uint64_t k_gguf_min_tensor_info_bytes = 8 + 4 + 4 + 8;  // name length, n_dims, type, offset
inline constexpr uint64_t k_gguf_max_header_bytes = 1ull << 30;          // KVs + tensor infos
inline constexpr uint64_t k_gguf_max_string_bytes = 64ull << 20;
inline constexpr uint64_t k_gguf_max_array_elems = 1ull << 24;           // real vocabularies are ~300k
inline constexpr uint64_t k_safetensors_max_header_bytes = 100'000'000;  // as tensor.rs MAX_HEADER_SIZE

}  // namespace moe
