// safetensors reader: valid images built in the test (layout from the safetensors README), every fixture
// written by the Python `safetensors` package compared with what it read back, sharded checkpoints with
// config.json, directory dispatch, and hand-broken headers and index files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "runtime/model_file.h"
#include "tests/runtime/model_fixture_check.h"
#include "tests/runtime/refusal_check.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// uint64 LE header length, the header text padded with spaces to a multiple of 8, then data_size bytes.
std::vector<uint8_t> st_image(const std::string& header_text, uint64_t data_size) {
    std::string h = header_text;
    while (h.size() % 8) h += ' ';
    std::vector<uint8_t> b;
    for (int i = 0; i < 8; i++) b.push_back(uint8_t(uint64_t(h.size()) >> (8 * i)));
    b.insert(b.end(), h.begin(), h.end());
    for (uint64_t i = 0; i < data_size; i++) b.push_back(uint8_t(i));
    return b;
}
std::vector<uint8_t> st_image(const json& header, uint64_t data_size) {
    return st_image(header.dump(), data_size);
}

json entry(const std::string& dtype, std::vector<int64_t> shape, uint64_t begin, uint64_t end) {
    return {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {begin, end}}};
}

// A small valid header: three tensors written out of name order.
json small_header() {
    json h;
    h["__metadata__"] = {{"format", "pt"}};
    h["b.weight"] = entry("BF16", {3, 4}, 0, 24);  // 12 x 2
    h["a.weight"] = entry("F32", {5}, 24, 44);
    h["c.bias"] = entry("I64", {2, 1, 1, 1}, 48, 64);  // a 4-byte hole before it is tolerated
    return h;
}

model_file parse(const std::vector<uint8_t>& b) {
    return parse_safetensors_buffer(b.data(), b.size(), "mem.safetensors");
}

// Parses and returns the error message ("" if it parsed).
std::string parse_error(const std::vector<uint8_t>& b) {
    return test::refusal_message(parse_safetensors_buffer, b, "broken.safetensors");
}

#define EXPECT_REFUSED(bytes, ...) MOE_EXPECT_REFUSAL(parse_error(bytes), "broken.safetensors", __VA_ARGS__)

struct temp_dir {
    fs::path dir;
    explicit temp_dir(const std::string& tag)
        : dir(fs::temp_directory_path() / ("moe_st_test_" + tag + "_" + std::to_string(::getpid()))) {
        fs::remove_all(dir);
        fs::create_directories(dir);
    }
    ~temp_dir() { fs::remove_all(dir); }
    std::string write(const std::string& name, const std::vector<uint8_t>& b) const {
        std::ofstream(dir / name, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), long(b.size()));
        return (dir / name).string();
    }
    std::string write(const std::string& name, const std::string& s) const {
        std::ofstream(dir / name) << s;
        return (dir / name).string();
    }
};

TEST(safetensors, parses_shapes_offsets_and_dtypes) {
    auto b = st_image(small_header(), 64);
    model_file mf = parse(b);
    EXPECT_EQ(mf.format, model_format::SAFETENSORS);
    EXPECT_TRUE(mf.metadata.empty());
    EXPECT_TRUE(mf.config.is_null());
    ASSERT_EQ(mf.tensors.size(), 3u);
    uint64_t data_start = b.size() - 64;
    // File order (by offset), not name order.
    EXPECT_EQ(mf.tensors[0].name, "b.weight");
    EXPECT_EQ(mf.tensors[1].name, "a.weight");
    EXPECT_EQ(mf.tensors[2].name, "c.bias");
    const tensor_desc* t = mf.find("b.weight");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->type, tensor_type::BF16);
    EXPECT_EQ(t->n_dims, 2);
    EXPECT_EQ(t->ne[0], 4);  // reversed into ggml order: the last (contiguous) dim first
    EXPECT_EQ(t->ne[1], 3);
    EXPECT_EQ(t->ne[2], 1);
    EXPECT_EQ(t->offset, data_start);
    EXPECT_EQ(t->bytes, 24u);
    t = mf.find("c.bias");
    EXPECT_EQ(t->type, tensor_type::I64);
    EXPECT_EQ(t->n_dims, 4);
    EXPECT_EQ(t->ne[3], 2);
    EXPECT_EQ(t->offset, data_start + 48);
    EXPECT_EQ(t->bytes, 16u);
    EXPECT_EQ(mf.find("a.weight")->offset, data_start + 24);
}

TEST(safetensors, scalars_empty_tensors_and_no_metadata) {
    json h;
    h["s"] = entry("F16", {}, 0, 2);
    h["e"] = entry("F32", {0, 7}, 2, 2);
    h["e2"] = entry("U8", {0}, 2, 2);  // two empty tensors at the same offset do not overlap
    h["u"] = entry("U16", {1}, 2, 4);
    model_file mf = parse(st_image(h, 4));
    ASSERT_EQ(mf.tensors.size(), 4u);
    EXPECT_EQ(mf.find("s")->n_dims, 0);
    EXPECT_EQ(mf.find("s")->bytes, 2u);
    EXPECT_EQ(mf.find("e")->bytes, 0u);
    EXPECT_EQ(mf.find("e")->ne[0], 7);
    EXPECT_EQ(mf.find("u")->type, tensor_type::U16);
    EXPECT_EQ(parse(st_image(json::object(), 0)).tensors.size(), 0u);
}

TEST(safetensors, single_file_directory_config_and_sniffing) {
    temp_dir d("single");
    std::string p = d.write("model.safetensors", st_image(small_header(), 64));
    model_file a = read_safetensors(p);
    EXPECT_TRUE(a.config.is_null());  // no config.json: left null for the model-description layer
    d.write("config.json", std::string(R"({"model_type": "mixtral", "num_local_experts": 8})"));
    model_file b = open_model_file(d.dir.string());
    ASSERT_EQ(b.tensors.size(), 3u);
    EXPECT_EQ(b.paths, std::vector<std::string>{(d.dir / "model.safetensors").string()});
    EXPECT_EQ(b.file_sizes[0], fs::file_size(p));
    EXPECT_EQ(b.config["num_local_experts"], 8);
    EXPECT_EQ(b.tensors[1].offset, a.tensors[1].offset);
    fs::copy_file(p, d.dir / "weights.bin");
    EXPECT_EQ(open_model_file((d.dir / "weights.bin").string()).tensors.size(), 3u);  // sniffed
    d.write("config.json", std::string("{not json"));
    try {
        open_model_file(p);
        FAIL();
    } catch (const error& e) {
        EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
    }
}

// Two shards + index: shard order, file indices, every mapped tensor found.
struct sharded_model {
    temp_dir d{"sharded"};
    json index;
    sharded_model() {
        json s1, s2;
        s1["x"] = entry("F32", {2, 2}, 0, 16);
        s1["y"] = entry("F16", {4}, 16, 24);
        s2["z"] = entry("BF16", {8}, 0, 16);
        d.write("model-00001-of-00002.safetensors", st_image(s1, 24));
        d.write("model-00002-of-00002.safetensors", st_image(s2, 16));
        index = {{"metadata", {{"total_size", 40}}},
                 {"weight_map",
                  {{"z", "model-00002-of-00002.safetensors"},
                   {"x", "model-00001-of-00002.safetensors"},
                   {"y", "model-00001-of-00002.safetensors"}}}};
        write_index();
        d.write("config.json", std::string(R"({"model_type": "qwen3_moe"})"));
    }
    std::string write_index() const { return d.write("model.safetensors.index.json", index.dump(2)); }
    std::string error_of() const {
        try {
            open_model_file(d.dir.string());
        } catch (const error& e) {
            return e.what();
        }
        return "";
    }
};

TEST(safetensors, sharded_index) {
    sharded_model m;
    model_file mf = open_model_file(m.d.dir.string());
    ASSERT_EQ(mf.paths.size(), 2u);
    EXPECT_EQ(fs::path(mf.paths[1]).filename(), "model-00002-of-00002.safetensors");
    ASSERT_EQ(mf.tensors.size(), 3u);
    EXPECT_EQ(mf.find("x")->file, 0);
    EXPECT_EQ(mf.find("z")->file, 1);
    EXPECT_EQ(mf.find("z")->offset, fs::file_size(mf.paths[1]) - 16);
    EXPECT_EQ(mf.config["model_type"], "qwen3_moe");
    model_file via_index = open_model_file((m.d.dir / "model.safetensors.index.json").string());
    EXPECT_EQ(via_index.tensors.size(), 3u);
}

TEST(safetensors, fixtures_match_python_safetensors) {
    auto fixtures = test::expected_fixtures("safetensors");
    if (fixtures.empty()) GTEST_SKIP() << "no safetensors fixtures yet (scripts/make_fixtures.py)";
    for (const auto& f : fixtures) test::check_fixture(f);
    std::printf("compared %zu safetensors fixtures\n", fixtures.size());
}

// ---- broken input

TEST(safetensors_broken, header_length) {
    auto b = st_image(small_header(), 64);
    b[7] = 0x01;  // 2^56
    EXPECT_REFUSED(b, "header length", "too big", "at byte 0");
    b = st_image(small_header(), 64);
    uint64_t n = b.size() - 8 + 1;  // one past the file
    for (int i = 0; i < 8; i++) b[size_t(i)] = uint8_t(n >> (8 * i));
    EXPECT_REFUSED(b, "header length", "file size - 8");
    EXPECT_REFUSED(std::vector<uint8_t>(5, 0), "header length", "truncated");
    b = st_image(small_header(), 64);
    b.resize(7);
    EXPECT_REFUSED(b, "truncated");
}

TEST(safetensors_broken, not_json) {
    EXPECT_REFUSED(st_image(std::string("hello world"), 0), "header", "'{'");
    EXPECT_REFUSED(st_image(std::string("{\"a\": "), 0), "valid JSON", "parse error");
    EXPECT_REFUSED(st_image(std::string("{\"a\": 1} trailing"), 0), "valid JSON");
    EXPECT_REFUSED(st_image(std::string("{\"a\": 1}"), 0), "tensor 'a'", "expected an object");
    EXPECT_REFUSED(st_image(std::string(R"({"__metadata__": {"k": 3}})"), 0), "__metadata__", "string");
    auto dup = R"({"t": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
                   "t": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}})";
    EXPECT_REFUSED(st_image(std::string(dup), 2), "duplicate key 't'");
    // Deep nesting is refused up front (nlohmann would recurse once per level and overflow the stack).
    std::string deep = "{\"a\":" + std::string(200000, '[') + std::string(200000, ']') + "}";
    EXPECT_REFUSED(st_image(deep, 0), "nesting");
    std::string brackets_in_string = "{\"__metadata__\": {\"k\": \"" + std::string(1000, '[') + "\\\"\"}}";
    EXPECT_EQ(parse_error(st_image(brackets_in_string, 0)), "");
}

TEST(safetensors_broken, dtypes_shapes_offsets) {
    auto with = [](const std::string& key, json v) {
        json h = small_header();
        h["a.weight"][key] = v;
        return st_image(h, 64);
    };
    EXPECT_REFUSED(with("dtype", "F4"), "a.weight", "dtype", "unknown dtype 'F4'");
    EXPECT_REFUSED(with("dtype", 32), "a.weight", "dtype");
    EXPECT_REFUSED(with("shape", json::array({6})), "a.weight", "shape/offset mismatch", "24 bytes", "found 20");
    EXPECT_REFUSED(with("shape", json::array({-5})), "a.weight", "shape[0]", "negative");
    EXPECT_REFUSED(with("shape", json::array({1.5})), "shape[0]", "integer");
    EXPECT_REFUSED(with("shape", json::array({1, 1, 1, 1, 5})), "at most 4 dimensions", "found 5");
    EXPECT_REFUSED(with("shape", "5"), "shape", "array");
    EXPECT_REFUSED(with("shape", json::array({uint64_t(1) << 62, 8})), "overflow");
    EXPECT_REFUSED(with("data_offsets", json::array({24, 44, 50})), "data_offsets", "[begin, end]");
    EXPECT_REFUSED(with("data_offsets", json::array({44, 24})), "begin <= end");
    EXPECT_REFUSED(with("data_offsets", json::array({60, 80})), "a.weight", "out of bounds");
    EXPECT_REFUSED(with("data_offsets", json::array({-4, 16})), "data_offsets[0]", "negative");
    EXPECT_REFUSED(with("data_offsets", json::array({uint64_t(-1) - 3, uint64_t(-1) + 17})), "data_offsets");
    EXPECT_REFUSED(with("data_offsets", json::array({20, 40})), "overlapping", "b.weight", "a.weight");
    json h = small_header();
    h["a.weight"].erase("data_offsets");
    EXPECT_REFUSED(st_image(h, 64), "a.weight", "no data_offsets");
    h = small_header();
    h["a.weight"].erase("shape");
    EXPECT_REFUSED(st_image(h, 64), "a.weight", "no shape");
    h = small_header();
    h["a.weight"].erase("dtype");
    EXPECT_REFUSED(st_image(h, 64), "a.weight", "no dtype");
    // Data one byte short of the last tensor's end.
    auto b = st_image(small_header(), 64);
    b.pop_back();
    EXPECT_REFUSED(b, "c.bias", "out of bounds");
}

TEST(safetensors_broken, truncation_at_every_byte) {
    auto b = st_image(small_header(), 64);
    for (size_t n = 0; n < b.size(); n++) {
        std::vector<uint8_t> cut(b.begin(), b.begin() + long(n));
        ASSERT_FALSE(parse_error(cut).empty()) << n;
    }
}

TEST(safetensors_broken, bad_index) {
    {
        sharded_model m;
        fs::remove(m.d.dir / "model-00002-of-00002.safetensors");
        std::string e = m.error_of();
        EXPECT_NE(e.find("missing shard"), std::string::npos) << e;
        EXPECT_NE(e.find("model-00002-of-00002.safetensors"), std::string::npos) << e;
    }
    {
        sharded_model m;
        m.index["weight_map"]["w"] = "model-00002-of-00002.safetensors";
        m.write_index();
        std::string e = m.error_of();
        EXPECT_NE(e.find("tensor missing in shard"), std::string::npos) << e;
        EXPECT_NE(e.find("'w'"), std::string::npos) << e;
    }
    {
        sharded_model m;
        m.index["weight_map"]["x"] = "model-00002-of-00002.safetensors";  // x lives in shard 1
        m.write_index();
        std::string e = m.error_of();
        EXPECT_NE(e.find("per weight_map"), std::string::npos) << e;
    }
    {
        sharded_model m;  // the same tensor in both shards
        json s2;
        s2["z"] = entry("BF16", {8}, 0, 16);
        s2["x"] = entry("U8", {1}, 16, 17);
        m.d.write("model-00002-of-00002.safetensors", st_image(s2, 17));
        std::string e = m.error_of();
        EXPECT_NE(e.find("one shard"), std::string::npos) << e;
    }
    {
        sharded_model m;
        m.index.erase("weight_map");
        m.write_index();
        EXPECT_NE(m.error_of().find("no weight_map"), std::string::npos);
        m.d.write("model.safetensors.index.json", std::string("[1, 2"));
        EXPECT_NE(m.error_of().find("valid JSON"), std::string::npos);
        m.index = {{"weight_map", {{"x", 3}}}};
        m.write_index();
        EXPECT_NE(m.error_of().find("shard file name"), std::string::npos);
    }
}

// A shard named by the index must lie inside the model's directory: ".." components and absolute paths are
// refused with the index and the entry named, before anything is opened (a real, valid file waits outside).
TEST(safetensors_broken, shard_paths_outside_the_directory) {
    sharded_model m;
    json outside;
    outside["x"] = entry("F32", {2, 2}, 0, 16);
    outside["y"] = entry("F16", {4}, 16, 24);
    const fs::path escaped = m.d.dir.parent_path() / ("moe_st_test_outside_" + std::to_string(::getpid()) + ".st");
    {
        auto b = st_image(outside, 24);
        std::ofstream(escaped, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), long(b.size()));
    }
    const std::string up = "../" + escaped.filename().string();
    for (const std::string& shard :
         {up, std::string("../../../../etc/passwd"), std::string("/etc/passwd"), "sub/../" + up, escaped.string(),
          std::string("model-00001-of-00002.safetensors\0x", 34)}) {
        m.index["weight_map"]["x"] = shard;
        m.index["weight_map"]["y"] = shard;
        m.write_index();
        std::string e = m.error_of();
        EXPECT_NE(e.find("model.safetensors.index.json: weight_map['x']: expected a shard file name inside the model's "
                         "directory (relative, without '..'), found '"),
                  std::string::npos)
            << shard << ": " << e;
    }
    fs::remove(escaped);
}

// A shard in a subdirectory of the model's directory is inside it: accepted.
TEST(safetensors, shard_in_a_subdirectory) {
    sharded_model sub;
    fs::create_directories(sub.d.dir / "shards");
    fs::rename(sub.d.dir / "model-00001-of-00002.safetensors", sub.d.dir / "shards/model-00001-of-00002.safetensors");
    sub.index["weight_map"]["x"] = "shards/model-00001-of-00002.safetensors";
    sub.index["weight_map"]["y"] = "shards/model-00001-of-00002.safetensors";
    sub.write_index();
    EXPECT_EQ(sub.error_of(), "");
}

// Names from the file are quoted escaped (a NUL would cut the printed message short, an escape sequence would
// reach the terminal); the reason after the name survives.
TEST(safetensors_broken, names_with_control_bytes_are_escaped) {
    json h = small_header();
    h[std::string("evil\0\x1b[31m", 10)] = entry("Q9", {1}, 64, 65);
    const std::string m = parse_error(st_image(h, 65));
    EXPECT_NE(m.find("tensor 'evil\\x00\\x1b[31m': dtype: expected a supported dtype"), std::string::npos) << m;
    EXPECT_NE(m.find("found unknown dtype 'Q9'"), std::string::npos) << m;
    EXPECT_EQ(m.find('\0'), std::string::npos);
    EXPECT_EQ(m.find('\x1b'), std::string::npos);
}

TEST(safetensors_broken, bad_files_on_disk) {
    fs::path p = fs::path(MOE_SOURCE_DIR) / "tests/fixtures/bad/truncated.safetensors";
    if (!fs::exists(p)) GTEST_SKIP();
    try {
        open_model_file(p.string());
        FAIL();
    } catch (const error& e) {
        EXPECT_NE(std::string(e.what()).find("truncated.safetensors"), std::string::npos);
    }
}

}  // namespace
}  // namespace moe
