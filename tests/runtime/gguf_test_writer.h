// A tiny GGUF writer for tests, written from the format (docs/model-formats.md §1.1) and independent of the reader: it
// builds in-memory images and records where each field sits, so broken-file tests can patch exact bytes.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace moe::test {

enum gguf_vt : uint32_t {
    VT_U8 = 0,
    VT_I8,
    VT_U16,
    VT_I16,
    VT_U32,
    VT_I32,
    VT_F32,
    VT_BOOL,
    VT_STRING,
    VT_ARRAY,
    VT_U64,
    VT_I64,
    VT_F64
};

// Bytes appended little-endian (the test host is little-endian, as the reader requires).
struct byte_buf {
    std::vector<uint8_t> b;
    template <typename T>
    void put(T v) {
        uint8_t tmp[sizeof(T)];
        std::memcpy(tmp, &v, sizeof(T));
        b.insert(b.end(), tmp, tmp + sizeof(T));
    }
    void str(const std::string& s) {
        put<uint64_t>(s.size());
        b.insert(b.end(), s.begin(), s.end());
    }
    size_t size() const { return b.size(); }
};

// Block traits for the few ggml types the tests use (values from docs/model-formats.md §2.1, not from the reader).
inline uint64_t test_type_bytes(uint32_t type, const std::vector<int64_t>& ne) {
    uint64_t blk = 1, bb = 0;
    switch (type) {
        case 0:
            bb = 4;
            break;  // F32
        case 1:
            bb = 2;
            break;  // F16
        case 2:
            blk = 32;
            bb = 18;
            break;  // Q4_0
        case 8:
            blk = 32;
            bb = 34;
            break;  // Q8_0
        case 12:
            blk = 256;
            bb = 144;
            break;  // Q4_K
        case 14:
            blk = 256;
            bb = 210;
            break;  // Q6_K
        case 39:
            blk = 32;
            bb = 17;
            break;  // MXFP4
        case 30:
            bb = 2;
            break;  // BF16
        default:
            throw std::logic_error("test writer: add the type");
    }
    uint64_t n = (ne.empty() ? 1 : uint64_t(ne[0])) / blk * bb;
    for (size_t i = 1; i < ne.size(); i++) n *= uint64_t(ne[i]);
    return n;
}

struct test_kv {
    std::string key;
    uint32_t type;
    std::vector<uint8_t> payload;  // everything after the type field
};

struct test_tensor {
    std::string name;
    uint32_t type;
    std::vector<int64_t> ne;
    uint64_t bytes;
};

struct gguf_image {
    std::vector<uint8_t> bytes;
    std::map<std::string, size_t> at;  // field name -> byte offset ("tensor_count", "tensor[1].type", ...)
    uint64_t data_start = 0;
    std::vector<uint64_t> rel_offsets;
};

class gguf_writer {
public:
    uint32_t version = 3;
    uint64_t alignment = 32;  // used for padding; write general.alignment yourself to change what the reader sees

    template <typename T>
    gguf_writer& scalar(const std::string& key, uint32_t type, T v) {
        byte_buf p;
        p.put<T>(v);
        kvs.push_back({key, type, p.b});
        return *this;
    }
    gguf_writer& u32(const std::string& k, uint32_t v) { return scalar(k, VT_U32, v); }
    gguf_writer& f32(const std::string& k, float v) { return scalar(k, VT_F32, v); }
    gguf_writer& str(const std::string& k, const std::string& v) {
        byte_buf p;
        p.str(v);
        kvs.push_back({k, VT_STRING, p.b});
        return *this;
    }
    template <typename T>
    gguf_writer& array(const std::string& key, uint32_t elem_type, const std::vector<T>& v) {
        byte_buf p;
        p.put<uint32_t>(elem_type);
        p.put<uint64_t>(v.size());
        for (const T& x : v) p.put<T>(x);
        kvs.push_back({key, VT_ARRAY, p.b});
        return *this;
    }
    gguf_writer& str_array(const std::string& key, const std::vector<std::string>& v) {
        byte_buf p;
        p.put<uint32_t>(VT_STRING);
        p.put<uint64_t>(v.size());
        for (const auto& s : v) p.str(s);
        kvs.push_back({key, VT_ARRAY, p.b});
        return *this;
    }
    gguf_writer& tensor(const std::string& name, uint32_t type, std::vector<int64_t> ne) {
        tensors.push_back({name, type, ne, test_type_bytes(type, ne)});
        return *this;
    }

    // Serializes header, KVs, tensor infos (offsets packed with padding, as gguf-py writes them), padding and
    // data (byte i of the data blob is uint8_t(i * 7 + 1), so tests can check they point at the right bytes).
    gguf_image build(bool with_data = true) const {
        gguf_image img;
        byte_buf o;
        o.b = {'G', 'G', 'U', 'F'};
        img.at["version"] = o.size();
        o.put<uint32_t>(version);
        img.at["tensor_count"] = o.size();
        o.put<int64_t>(int64_t(tensors.size()));
        img.at["kv_count"] = o.size();
        o.put<int64_t>(int64_t(kvs.size()));
        for (size_t i = 0; i < kvs.size(); i++) {
            std::string f = "kv[" + std::to_string(i) + "]";
            img.at[f] = o.size();
            o.str(kvs[i].key);
            img.at[f + ".type"] = o.size();
            o.put<uint32_t>(kvs[i].type);
            img.at[f + ".value"] = o.size();
            o.b.insert(o.b.end(), kvs[i].payload.begin(), kvs[i].payload.end());
        }
        uint64_t rel = 0;
        for (size_t i = 0; i < tensors.size(); i++) {
            const auto& t = tensors[i];
            std::string f = "tensor[" + std::to_string(i) + "]";
            img.at[f] = o.size();
            o.str(t.name);
            img.at[f + ".n_dims"] = o.size();
            o.put<uint32_t>(uint32_t(t.ne.size()));
            for (size_t d = 0; d < t.ne.size(); d++) {
                img.at[f + ".ne" + std::to_string(d)] = o.size();
                o.put<int64_t>(t.ne[d]);
            }
            img.at[f + ".type"] = o.size();
            o.put<uint32_t>(t.type);
            img.at[f + ".offset"] = o.size();
            o.put<uint64_t>(rel);
            img.rel_offsets.push_back(rel);
            rel += (t.bytes + alignment - 1) / alignment * alignment;
        }
        img.at["tensor_infos_end"] = o.size();
        if (!tensors.empty())
            while (o.size() % alignment) o.put<uint8_t>(0);
        img.data_start = o.size();
        if (with_data) {
            // The last tensor needs no trailing padding; the reader must accept a file that ends right after it.
            uint64_t n = tensors.empty() ? 0 : img.rel_offsets.back() + tensors.back().bytes;
            for (uint64_t i = 0; i < n; i++) o.put<uint8_t>(uint8_t(i * 7 + 1));
        }
        img.bytes = std::move(o.b);
        return img;
    }

    std::vector<test_kv> kvs;
    std::vector<test_tensor> tensors;
};

template <typename T>
inline void patch(std::vector<uint8_t>& b, size_t off, T v) {
    std::memcpy(b.data() + off, &v, sizeof(T));
}

}  // namespace moe::test
