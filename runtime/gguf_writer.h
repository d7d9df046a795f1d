// A GGUF v3 writer for files of any size (docs/model-formats.md §1.1): the header (magic, version, counts), the
// metadata key/values, the tensor infos with their aligned offsets, then the tensor data, produced by a callback
// in parallel and written with large sequential writes. The file is written as FILE.tmp and renamed to FILE only
// once every byte is on disk, so a failure never leaves a partial FILE behind.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/tensor_types.h"

namespace moe {

// One tensor of a file being built: its shape (ggml order, ne[0] contiguous), type, byte size and offset
// relative to the start of the data section (a multiple of the alignment).
struct gguf_tensor_spec {
    std::string name;
    tensor_type type = tensor_type::F32;
    std::vector<int64_t> ne;
    uint64_t bytes = 0;
    uint64_t rel_offset = 0;
};

// The header of a GGUF file: metadata and tensor table. Keys and tensors keep the order they were added in.
class gguf_builder {
public:
    explicit gguf_builder(uint32_t alignment = 32);

    gguf_builder& add_u32(const std::string& key, uint32_t v);
    gguf_builder& add_u64(const std::string& key, uint64_t v);
    gguf_builder& add_f32(const std::string& key, float v);
    gguf_builder& add_bool(const std::string& key, bool v);
    gguf_builder& add_string(const std::string& key, const std::string& v);
    // Adds a tensor after the previous one; throws moe::error when ne[0] is not a multiple of the type's block
    // size or the size overflows. Returns its index.
    size_t add_tensor(const std::string& name, tensor_type type, std::vector<int64_t> ne);

    uint32_t alignment() const { return _alignment; }
    const std::vector<gguf_tensor_spec>& tensors() const { return _tensors; }
    // Header bytes: everything before the tensor data, padded to the alignment.
    std::vector<uint8_t> header() const;
    uint64_t header_bytes() const;
    // Bytes of the data section: the last tensor ends the file (no trailing padding).
    uint64_t data_bytes() const;
    uint64_t file_bytes() const { return header_bytes() + data_bytes(); }

private:
    void add_kv(const std::string& key, uint32_t type, const void* payload, size_t n);

    uint32_t _alignment;
    std::vector<uint8_t> _kv_bytes;  // encoded key/values, in order
    uint64_t _n_kv = 0;
    std::vector<gguf_tensor_spec> _tensors;
};

// Fills dst with bytes [begin, end) of tensor `index`'s data. Called concurrently from several threads for
// disjoint ranges; a range may start or end anywhere inside the tensor.
using gguf_fill_fn = std::function<void(size_t index, uint64_t begin, uint64_t end, uint8_t* dst)>;

struct gguf_write_options {
    int threads = 0;                      // threads filling the buffers; 0: the hardware threads
    uint64_t chunk_bytes = 128ull << 20;  // bytes per write (a multiple of 4 KiB)
    int buffers = 3;                      // chunks in flight: filled while earlier ones are written
    bool overwrite = false;               // replace an existing FILE
    bool direct = true;                   // O_DIRECT where the file system takes it (no page cache pollution)
    // Called from the calling thread after each chunk is filled: bytes produced so far, file size.
    std::function<void(uint64_t done, uint64_t total)> progress;
    // Checked before each chunk: once it reads true the write stops, FILE.tmp is removed and a moe::error
    // ("interrupted") is thrown. For a signal handler that sets it.
    const std::atomic<bool>* cancel = nullptr;
};

struct gguf_write_result {
    uint64_t bytes = 0;    // size of the file written
    double seconds = 0.0;  // from opening FILE.tmp to the rename
    bool direct = false;   // whether O_DIRECT was used
    int threads = 0;
};

// Writes the file `path` (via path + ".tmp"). Refuses, with a moe::error naming the path, an existing file
// unless options.overwrite, and a file system with less free space than the file needs (checked up front).
gguf_write_result write_gguf_file(const std::string& path, const gguf_builder& b, const gguf_fill_fn& fill,
                                  const gguf_write_options& options = {});

}  // namespace moe
