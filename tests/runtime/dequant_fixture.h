// Reader for the dequantization golden files tests/fixtures/dequant/<TYPE>.bin written by
// scripts/make_dequant_fixtures.py: random raw blocks of one type and the float32 values gguf-py decodes them to.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/tensor_types.h"

namespace moe::test {

struct dequant_fixture {
    tensor_type type;
    int64_t n_elems = 0;
    std::vector<uint8_t> raw;   // (n_elems / block_elems) blocks, packed
    std::vector<float> values;  // (n_elems) gguf-py's decoding of raw
};

inline std::string dequant_fixture_path(std::string_view type_name) {
    return std::string(MOE_SOURCE_DIR) + "/tests/fixtures/dequant/" + std::string(type_name) + ".bin";
}

// Throws std::runtime_error naming the file when it is missing or malformed.
inline dequant_fixture load_dequant_fixture(tensor_type t) {
    const std::string path = dequant_fixture_path(type_name(t));
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error(path + ": cannot open (run scripts/make_dequant_fixtures.py)");
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    auto u32 = [&](size_t off) {
        uint32_t v;
        std::memcpy(&v, bytes.data() + off, 4);
        return v;
    };
    if (bytes.size() < 24 || std::memcmp(bytes.data(), "MOEDQ001", 8) != 0)
        throw std::runtime_error(path + ": bad magic or short header");
    if (u32(8) != static_cast<uint32_t>(t)) throw std::runtime_error(path + ": wrong ggml type id");
    dequant_fixture fx{t, u32(12), {}, {}};
    const uint32_t n_raw = u32(16);
    if (bytes.size() != 24 + size_t(n_raw) + 4 * size_t(fx.n_elems))
        throw std::runtime_error(path + ": size does not match the header");
    fx.raw.assign(bytes.begin() + 24, bytes.begin() + 24 + n_raw);
    fx.values.resize(size_t(fx.n_elems));
    std::memcpy(fx.values.data(), bytes.data() + 24 + n_raw, 4 * size_t(fx.n_elems));
    return fx;
}

}  // namespace moe::test
