// Hand-broken GGUF images (built in memory by the test writer, then patched) and broken split sets: each must
// be refused with a moe::error naming the specific reason, never a crash, a hang or a huge allocation.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "runtime/model_file.h"
#include "tests/runtime/gguf_test_writer.h"
#include "tests/runtime/refusal_check.h"

namespace moe {
namespace {

using namespace moe::test;
namespace fs = std::filesystem;

// A small valid model with KVs of several kinds and three tensors.
gguf_writer small_model() {
    gguf_writer w;
    w.str("general.architecture", "llama")
        .u32("llama.block_count", 2)
        .f32("llama.rope.freq_base", 10000.0f)
        .str_array("tokenizer.ggml.tokens", {"<s>", "</s>", "hi"})
        .array<float>("tokenizer.ggml.scores", VT_F32, {0.f, -1.f, -2.f});
    w.tensor("token_embd.weight", 0, {4, 3})
        .tensor("blk.0.ffn_up.weight", 8, {32, 2})
        .tensor("output_norm.weight", 1, {4});
    return w;
}

// Parses and returns the error message ("" if it parsed).
std::string parse_error(const std::vector<uint8_t>& b) {
    return test::refusal_message(parse_gguf_buffer, b, "broken.gguf");
}

#define EXPECT_REFUSED(bytes, ...) MOE_EXPECT_REFUSAL(parse_error(bytes), "broken.gguf", __VA_ARGS__)

TEST(gguf_broken, the_base_image_is_valid) {
    auto img = small_model().build();
    EXPECT_EQ(parse_error(img.bytes), "");
}

TEST(gguf_broken, bad_magic) {
    auto img = small_model().build();
    img.bytes[0] = 'X';
    EXPECT_REFUSED(img.bytes, "magic", "at byte 0", "GGUF");
}

TEST(gguf_broken, bad_versions) {
    for (uint32_t v : {0u, 1u, 4u, 0xFFFFFFFFu}) {
        auto img = small_model().build();
        patch<uint32_t>(img.bytes, img.at["version"], v);
        EXPECT_REFUSED(img.bytes, "version", "expected 2 or 3", "at byte 4");
    }
    auto img = small_model().build();
    patch<uint32_t>(img.bytes, img.at["version"], 0x03000000u);  // v3 written on a big-endian host
    EXPECT_REFUSED(img.bytes, "version", "big-endian", "byte-swapped");
    patch<uint32_t>(img.bytes, img.at["version"], 1);
    EXPECT_REFUSED(img.bytes, "version", "GGUFv1");
}

// Every strict prefix of a valid file must be refused (and never read past the buffer: run under ASan).
TEST(gguf_broken, truncation_at_every_byte) {
    auto img = small_model().build();
    for (size_t n = 0; n < img.bytes.size(); n++) {
        std::vector<uint8_t> cut(img.bytes.begin(), img.bytes.begin() + long(n));
        std::string msg = parse_error(cut);
        ASSERT_FALSE(msg.empty()) << "prefix of " << n << " bytes parsed";
        ASSERT_TRUE(msg.find("truncated") != std::string::npos || msg.find("past the end") != std::string::npos ||
                    msg.find("at most") != std::string::npos)
            << n << ": " << msg;
    }
}

TEST(gguf_broken, huge_counts_refused_before_allocation) {
    auto img = small_model().build();
    patch<int64_t>(img.bytes, img.at["tensor_count"], int64_t(1) << 60);
    EXPECT_REFUSED(img.bytes, "tensor_count", "at most", "at byte 8");
    img = small_model().build();
    patch<int64_t>(img.bytes, img.at["kv_count"], int64_t(1) << 60);
    EXPECT_REFUSED(img.bytes, "metadata_kv_count", "at most", "at byte 16");
    img = small_model().build();
    patch<int64_t>(img.bytes, img.at["kv_count"], -1);
    EXPECT_REFUSED(img.bytes, "metadata_kv_count", "non-negative");
    // One more tensor than the bytes can hold is still refused up front.
    img = small_model().build();
    patch<int64_t>(img.bytes, img.at["tensor_count"], int64_t(img.bytes.size() / 24 + 1));
    EXPECT_REFUSED(img.bytes, "tensor_count");
}

TEST(gguf_broken, huge_string_length) {
    auto img = small_model().build();
    patch<uint64_t>(img.bytes, img.at["kv[0]"], ~uint64_t(0));  // key length
    EXPECT_REFUSED(img.bytes, "kv[0] key", "string length");
    img = small_model().build();
    patch<uint64_t>(img.bytes, img.at["kv[0].value"], uint64_t(1) << 40);  // value string length
    EXPECT_REFUSED(img.bytes, "general.architecture", "string length", "bytes left");
    img = small_model().build();
    patch<uint64_t>(img.bytes, img.at["tensor[0]"], uint64_t(1) << 50);  // tensor name length
    EXPECT_REFUSED(img.bytes, "tensor[0] name", "string length");
}

TEST(gguf_broken, huge_array_length) {
    auto img = small_model().build();
    patch<uint64_t>(img.bytes, img.at["kv[3].value"] + 4, uint64_t(1) << 61);  // tokens: count after elem type
    EXPECT_REFUSED(img.bytes, "tokenizer.ggml.tokens", "array length", "at most");
    img = small_model().build();
    patch<uint64_t>(img.bytes, img.at["kv[4].value"] + 4, ~uint64_t(0));  // scores
    EXPECT_REFUSED(img.bytes, "tokenizer.ggml.scores", "array length");
}

TEST(gguf_broken, nested_array_and_bad_value_types) {
    gguf_writer w;
    byte_buf p;
    p.put<uint32_t>(VT_ARRAY);  // elem type ARRAY
    p.put<uint64_t>(1);
    p.put<uint32_t>(VT_U8);
    p.put<uint64_t>(1);
    p.put<uint8_t>(7);
    w.kvs.push_back({"nested", VT_ARRAY, p.b});
    EXPECT_REFUSED(w.build().bytes, "nested", "nested arrays are refused");

    auto img = small_model().build();
    patch<uint32_t>(img.bytes, img.at["kv[1].type"], 13);
    EXPECT_REFUSED(img.bytes, "llama.block_count", "value type", "found 13");
    img = small_model().build();
    patch<uint32_t>(img.bytes, img.at["kv[3].value"], 77);  // array elem type
    EXPECT_REFUSED(img.bytes, "element type", "found 77");
}

TEST(gguf_broken, tensor_offsets) {
    auto img = small_model().build();
    patch<uint64_t>(img.bytes, img.at["tensor[2].offset"], img.rel_offsets[2] + 1024 * 32);
    EXPECT_REFUSED(img.bytes, "output_norm.weight", "offset", "past the end");
    img = small_model().build();
    patch<uint64_t>(img.bytes, img.at["tensor[2].offset"], ~uint64_t(0) - 31);  // aligned, and overflows data_start+
    EXPECT_REFUSED(img.bytes, "output_norm.weight", "past the end");
    img = small_model().build();
    patch<uint64_t>(img.bytes, img.at["tensor[1].offset"], img.rel_offsets[1] + 4);
    EXPECT_REFUSED(img.bytes, "blk.0.ffn_up.weight", "misaligned", "multiple of the alignment 32");
    // The last tensor one byte short of the end of the file.
    img = small_model().build();
    img.bytes.pop_back();
    EXPECT_REFUSED(img.bytes, "output_norm.weight", "past the end");
}

TEST(gguf_broken, duplicates_and_empty_key) {
    auto w = small_model();
    w.tensors[2].name = "token_embd.weight";
    EXPECT_REFUSED(w.build().bytes, "duplicate tensor name", "token_embd.weight");
    w = small_model();
    w.u32("llama.block_count", 3);
    EXPECT_REFUSED(w.build().bytes, "duplicate key", "llama.block_count");
    w = small_model();
    w.u32("", 3);
    EXPECT_REFUSED(w.build().bytes, "non-empty key");
}

TEST(gguf_broken, tensor_shapes_and_types) {
    auto img = small_model().build();
    patch<uint32_t>(img.bytes, img.at["tensor[0].type"], 4);  // removed Q4_2
    EXPECT_REFUSED(img.bytes, "token_embd.weight", "type", "unknown");
    img = small_model().build();
    patch<uint32_t>(img.bytes, img.at["tensor[0].type"], 1234);
    EXPECT_REFUSED(img.bytes, "type", "1234");
    img = small_model().build();
    patch<uint32_t>(img.bytes, img.at["tensor[0].n_dims"], 5);
    EXPECT_REFUSED(img.bytes, "n_dims", "at most 4", "found 5");
    img = small_model().build();
    patch<int64_t>(img.bytes, img.at["tensor[0].ne1"], -3);
    EXPECT_REFUSED(img.bytes, "ne[1]", "negative", "-3");
    img = small_model().build();
    patch<int64_t>(img.bytes, img.at["tensor[1].ne0"], 48);  // Q8_0 blocks are 32 wide
    EXPECT_REFUSED(img.bytes, "ne[0]", "multiple of the Q8_0 block size 32", "48");

    gguf_writer w;
    w.tensor("huge", 0, {4, 4});
    w.tensors[0].ne = {int64_t(1) << 40, int64_t(1) << 40};  // 2^80 elements: the product overflows
    w.tensors[0].bytes = 4;
    EXPECT_REFUSED(w.build().bytes, "huge", "overflow");
}

TEST(gguf_broken, bad_alignment_values) {
    for (uint32_t a : {0u, 3u, 48u}) {
        auto w = small_model();
        w.u32("general.alignment", a);
        EXPECT_REFUSED(w.build().bytes, "general.alignment", "power of two");
    }
    auto w = small_model();
    w.str("general.alignment", "32");
    EXPECT_REFUSED(w.build().bytes, "general.alignment", "expected an integer");
    w = small_model();
    w.scalar<int32_t>("general.alignment", VT_I32, -32);
    EXPECT_REFUSED(w.build().bytes, "general.alignment", "power of two");
}

// Names from the file are quoted escaped: a NUL no longer ends the message (printf would stop there), a control
// byte never reaches the terminal, and the reason after the name survives.
TEST(gguf_broken, names_with_control_bytes_are_escaped) {
    const std::string evil = std::string("blk.0\0x", 7) + "\x1b]0;pwned\x07\xff.weight";
    const std::string shown = "blk.0\\x00x\\x1b]0;pwned\\x07\\xff.weight";
    auto w = small_model();
    w.tensor(evil, 0, {4}).tensor(evil, 0, {4});
    std::string m = parse_error(w.build().bytes);
    EXPECT_NE(m.find("tensor[4] '" + shown + "' name: expected unique tensor names, found duplicate tensor name '" +
                     shown + "'"),
              std::string::npos)
        << m;
    EXPECT_EQ(m.find('\0'), std::string::npos);
    EXPECT_EQ(m.find('\x1b'), std::string::npos);

    auto img = small_model().tensor(evil, 0, {4}).build();
    patch<uint32_t>(img.bytes, img.at["tensor[3].type"], 99);
    m = parse_error(img.bytes);
    EXPECT_NE(m.find("tensor[3] '" + shown + "' type: expected a supported ggml type id, found 99"), std::string::npos)
        << m;

    const std::string key = std::string("general.\0name", 13) + "\x1b[2J";
    auto k = small_model();
    k.str(key, "x").str(key, "y");
    m = parse_error(k.build().bytes);
    EXPECT_NE(m.find("duplicate key 'general.\\x00name\\x1b[2J'"), std::string::npos) << m;
    // Valid UTF-8 stays as it is.
    auto u = small_model();
    u.tensor("blk.0.\xc3\xa9t\xc3\xa9", 0, {4}).tensor("blk.0.\xc3\xa9t\xc3\xa9", 0, {4});
    m = parse_error(u.build().bytes);
    EXPECT_NE(m.find("duplicate tensor name 'blk.0.\xc3\xa9t\xc3\xa9'"), std::string::npos) << m;
}

// ---- split sets on disk

struct split_dir {
    fs::path dir = fs::temp_directory_path() / ("moe_gguf_broken_split_" + std::to_string(::getpid()));
    split_dir() {
        fs::remove_all(dir);
        fs::create_directories(dir);
    }
    ~split_dir() { fs::remove_all(dir); }
    std::string path(int shard) const { return (dir / ("m-0000" + std::to_string(shard) + "-of-00002.gguf")).string(); }
    void write(int shard, uint16_t no, uint16_t count, int32_t total, std::vector<std::string> tensors) const {
        gguf_writer w;
        w.scalar<uint16_t>("split.no", VT_U16, no).scalar<uint16_t>("split.count", VT_U16, count);
        w.scalar<int32_t>("split.tensors.count", VT_I32, total);
        for (auto& t : tensors) w.tensor(t, 0, {4});
        auto b = w.build().bytes;
        std::ofstream(path(shard), std::ios::binary).write(reinterpret_cast<const char*>(b.data()), long(b.size()));
    }
};

std::string open_error(const std::string& p) {
    try {
        open_model_file(p);
    } catch (const error& e) {
        return e.what();
    }
    return "";
}

TEST(gguf_broken, split_sets) {
    split_dir d;
    d.write(1, 0, 2, 2, {"a"});
    d.write(2, 1, 2, 2, {"b"});
    EXPECT_EQ(open_error(d.path(2)), "");

    d.write(2, 0, 2, 2, {"b"});  // wrong split.no
    EXPECT_NE(open_error(d.path(1)).find("split.no"), std::string::npos);
    d.write(2, 1, 3, 2, {"b"});  // wrong split.count
    EXPECT_NE(open_error(d.path(1)).find("split.count"), std::string::npos);
    d.write(2, 1, 2, 2, {"a"});  // same tensor in two shards
    std::string m = open_error(d.path(1));
    EXPECT_NE(m.find("unique across shards"), std::string::npos) << m;
    d.write(2, 1, 2, 2, {"b", "c"});  // total does not match
    EXPECT_NE(open_error(d.path(1)).find("split.tensors.count"), std::string::npos);
    fs::remove(d.path(2));
    m = open_error(d.path(1));
    EXPECT_NE(m.find("no such file"), std::string::npos) << m;
    fs::remove(d.path(1));
    d.write(2, 1, 2, 2, {"b"});
    m = open_error(d.path(2));  // shard 1 missing
    EXPECT_NE(m.find("shard 1"), std::string::npos) << m;
}

TEST(gguf_broken, missing_paths_and_bad_files_on_disk) {
    std::string m = open_error("/nonexistent/dir/model.gguf");
    EXPECT_NE(m.find("no such file"), std::string::npos) << m;
    fs::path root = fs::path(MOE_SOURCE_DIR) / "tests/fixtures/bad";
    if (!fs::exists(root)) GTEST_SKIP() << "no bad fixtures";
    for (const auto& e : fs::directory_iterator(root)) {
        if (e.path().extension() != ".gguf") continue;
        m = open_error(e.path().string());
        EXPECT_FALSE(m.empty()) << e.path();
        EXPECT_NE(m.find(e.path().filename().string()), std::string::npos) << m;
    }
}

}  // namespace
}  // namespace moe
