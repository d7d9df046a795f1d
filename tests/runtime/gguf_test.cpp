// GGUF reader on valid input: every metadata value type, tensor tables with absolute offsets, alignment, v2,
// split sets, incremental header reading of a huge (sparse) file, and every fixture written by the Python
// `gguf` package compared with what gguf.GGUFReader read back.
#include "runtime/gguf.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "runtime/model_file.h"
#include "tests/runtime/gguf_test_writer.h"
#include "tests/runtime/model_fixture_check.h"

namespace moe {
namespace {

using namespace moe::test;
namespace fs = std::filesystem;

model_file parse(const gguf_image& img) {
    return parse_gguf_buffer(img.bytes.data(), img.bytes.size(), "mem.gguf");
}

fs::path temp_dir(const std::string& tag) {
    fs::path d = fs::temp_directory_path() / ("moe_gguf_test_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

void write_file(const fs::path& p, const std::vector<uint8_t>& b) {
    std::ofstream o(p, std::ios::binary);
    o.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

TEST(gguf, every_metadata_value_type) {
    gguf_writer w;
    w.scalar<uint8_t>("t.u8", VT_U8, 200)
        .scalar<int8_t>("t.i8", VT_I8, -100)
        .scalar<uint16_t>("t.u16", VT_U16, 60000)
        .scalar<int16_t>("t.i16", VT_I16, -30000)
        .scalar<uint32_t>("t.u32", VT_U32, 4000000000u)
        .scalar<int32_t>("t.i32", VT_I32, -2000000000)
        .scalar<float>("t.f32", VT_F32, 0.15625f)
        .scalar<uint8_t>("t.bool", VT_BOOL, 1)
        .scalar<uint8_t>("t.bool0", VT_BOOL, 0)
        .str("t.str", "héllo")
        .str("t.empty_str", "")
        .scalar<uint64_t>("t.u64", VT_U64, 18000000000000000000ull)
        .scalar<int64_t>("t.i64", VT_I64, -9000000000000000000ll)
        .scalar<double>("t.f64", VT_F64, -2.5e300)
        .array<int32_t>("t.arr_i32", VT_I32, {1, -2, 3})
        .array<float>("t.arr_f32", VT_F32, {0.5f, -1.0f})
        .array<uint8_t>("t.arr_bool", VT_BOOL, {1, 0, 1})
        .array<uint64_t>("t.arr_empty", VT_U64, {})
        .str_array("t.arr_str", {"a", "", "ccc"});
    model_file mf = parse(w.build());
    EXPECT_EQ(mf.gguf_version, 3u);
    EXPECT_EQ(mf.alignment, 32u);
    EXPECT_TRUE(mf.tensors.empty());
    ASSERT_EQ(mf.metadata.size(), 19u);

    EXPECT_EQ(mf.meta_int("t.u8"), 200);
    EXPECT_EQ(mf.meta("t.u8")->gguf_type, uint32_t(VT_U8));
    EXPECT_EQ(mf.meta_int("t.i8"), -100);
    EXPECT_EQ(mf.meta_int("t.u16"), 60000);
    EXPECT_EQ(mf.meta_int("t.i16"), -30000);
    EXPECT_EQ(mf.meta_int("t.u32"), 4000000000ll);
    EXPECT_EQ(mf.meta_int("t.i32"), -2000000000);
    EXPECT_EQ(mf.meta_float("t.f32"), 0.15625);
    EXPECT_EQ(mf.meta_bool("t.bool"), true);
    EXPECT_EQ(mf.meta_bool("t.bool0"), false);
    EXPECT_EQ(mf.meta_string("t.str"), "héllo");
    EXPECT_EQ(mf.meta_string("t.empty_str"), "");
    EXPECT_EQ(std::get<uint64_t>(mf.meta("t.u64")->value), 18000000000000000000ull);
    EXPECT_THROW(mf.meta_int("t.u64"), error);  // above INT64_MAX: refused, not wrapped
    EXPECT_EQ(mf.meta_int("t.i64"), -9000000000000000000ll);
    EXPECT_EQ(mf.meta_float("t.f64"), -2.5e300);
    EXPECT_EQ(mf.meta_float("t.u32"), 4e9);  // floats accept integers

    auto arr = [&](const char* k) { return *std::get<std::shared_ptr<meta_array>>(mf.meta(k)->value); };
    EXPECT_EQ(mf.meta("t.arr_i32")->gguf_type, 9u);
    EXPECT_EQ(mf.meta("t.arr_i32")->elem_type, uint32_t(VT_I32));
    ASSERT_EQ(arr("t.arr_i32").size(), 3u);
    EXPECT_EQ(std::get<int64_t>(arr("t.arr_i32")[1].value), -2);
    EXPECT_EQ(std::get<double>(arr("t.arr_f32")[1].value), -1.0);
    EXPECT_EQ(std::get<bool>(arr("t.arr_bool")[2].value), true);
    EXPECT_TRUE(arr("t.arr_empty").empty());
    ASSERT_EQ(arr("t.arr_str").size(), 3u);
    EXPECT_EQ(std::get<std::string>(arr("t.arr_str")[2].value), "ccc");
    EXPECT_EQ(arr("t.arr_str")[2].gguf_type, uint32_t(VT_STRING));

    // Accessors: absent -> nullopt, wrong kind -> a clear error naming the key.
    EXPECT_EQ(mf.meta_int("no.such.key"), std::nullopt);
    EXPECT_EQ(mf.meta("no.such.key"), nullptr);
    try {
        (void)mf.meta_int("t.str");
        FAIL();
    } catch (const error& e) {
        EXPECT_NE(std::string(e.what()).find("t.str"), std::string::npos);
        EXPECT_NE(std::string(e.what()).find("expected an integer"), std::string::npos);
    }
    EXPECT_THROW(mf.meta_string("t.u8"), error);
    EXPECT_THROW(mf.meta_bool("t.str"), error);
}

TEST(gguf, tensor_table_has_absolute_offsets_and_sizes) {
    for (uint32_t align : {32u, 64u, 256u}) {
        SCOPED_TRACE(align);
        gguf_writer w;
        w.alignment = align;
        w.str("general.architecture", "llama").u32("general.alignment", align);
        w.tensor("a", 0, {5, 3})                   // F32: 60 bytes
            .tensor("b.q8", 8, {64, 2})            // Q8_0: 2 blocks x 34 x 2 = 136
            .tensor("c.q4k", 12, {512})            // Q4_K: 2 x 144 = 288
            .tensor("d.mxfp4", 39, {32, 1, 3, 2})  // 17 x 6 = 102
            .tensor("e.scalar", 0, {});            // n_dims 0: one element
        gguf_image img = w.build();
        model_file mf = parse(img);
        EXPECT_EQ(mf.alignment, align);
        ASSERT_EQ(mf.tensors.size(), 5u);
        const uint64_t want_bytes[] = {60, 136, 288, 102, 4};
        const char* want_type[] = {"F32", "Q8_0", "Q4_K", "MXFP4", "F32"};
        EXPECT_EQ(img.data_start % align, 0u);
        for (size_t i = 0; i < 5; i++) {
            const tensor_desc& t = mf.tensors[i];
            EXPECT_EQ(t.name, w.tensors[i].name);
            EXPECT_EQ(t.bytes, want_bytes[i]);
            EXPECT_EQ(type_name(t.type), want_type[i]);
            EXPECT_EQ(t.offset, img.data_start + img.rel_offsets[i]);
            EXPECT_EQ(t.file, 0);
            EXPECT_EQ(mf.find(t.name), &t);
            // The first data byte is the writer's pattern at that position of the blob.
            EXPECT_EQ(img.bytes[t.offset], uint8_t(img.rel_offsets[i] * 7 + 1));
        }
        EXPECT_EQ(mf.tensors[3].n_dims, 4);
        EXPECT_EQ(mf.tensors[3].ne[2], 3);
        EXPECT_EQ(mf.tensors[3].ne[3], 2);
        EXPECT_EQ(mf.tensors[4].n_dims, 0);
        EXPECT_EQ(mf.tensors[0].ne[2], 1);  // missing dims are 1
    }
}

TEST(gguf, version2_and_other_alignment_types) {
    gguf_writer w;
    w.version = 2;
    w.alignment = 64;
    w.scalar<uint64_t>("general.alignment", VT_U64, 64);  // not UINT32: accepted with a warning
    w.tensor("x", 1, {16});
    model_file mf = parse(w.build());
    EXPECT_EQ(mf.gguf_version, 2u);
    EXPECT_EQ(mf.alignment, 64u);
    EXPECT_EQ(mf.tensors[0].offset, 64u * ((24 + 8 + 17 + 4 + 8 + 8 + 1 + 4 + 8 + 4 + 8 + 63) / 64));
}

TEST(gguf, empty_model_and_no_tensor_padding) {
    gguf_writer w;
    gguf_image img = w.build();
    EXPECT_EQ(img.bytes.size(), 24u);  // no padding without tensors
    model_file mf = parse(img);
    EXPECT_TRUE(mf.tensors.empty());
    EXPECT_TRUE(mf.metadata.empty());
}

TEST(gguf, file_reader_matches_buffer_reader) {
    gguf_writer w;
    w.str("general.architecture", "llama").tensor("t0", 0, {8, 8}).tensor("t1", 8, {32});
    gguf_image img = w.build();
    fs::path d = temp_dir("file");
    write_file(d / "m.gguf", img.bytes);
    model_file a = read_gguf((d / "m.gguf").string());
    model_file b = open_model_file((d / "m.gguf").string());
    model_file c = open_model_file(d.string());  // directory holding one .gguf
    model_file m = parse(img);
    for (const model_file* f : {&a, &b, &c}) {
        ASSERT_EQ(f->tensors.size(), 2u);
        EXPECT_EQ(f->paths.size(), 1u);
        EXPECT_EQ(f->file_sizes[0], img.bytes.size());
        EXPECT_EQ(f->format, model_format::GGUF);
        for (size_t i = 0; i < 2; i++) {
            EXPECT_EQ(f->tensors[i].offset, m.tensors[i].offset);
            EXPECT_EQ(f->tensors[i].bytes, m.tensors[i].bytes);
        }
        EXPECT_EQ(f->meta_string("general.architecture"), "llama");
        EXPECT_TRUE(f->config.is_null());
    }
    // Sniffing: a GGUF with another extension still opens.
    write_file(d / "m.bin", img.bytes);
    EXPECT_EQ(open_model_file((d / "m.bin").string()).tensors.size(), 2u);
    fs::remove_all(d);
}

// A 150k-string vocabulary parses quickly, and a multi-GB file opens by reading only its header.
TEST(gguf, huge_vocab_and_sparse_multi_gb_file_open_fast) {
    std::vector<std::string> vocab;
    for (int i = 0; i < 150000; i++) vocab.push_back("tok_" + std::to_string(i));
    std::vector<int32_t> types(150000, 1);
    gguf_writer w;
    w.str_array("tokenizer.ggml.tokens", vocab).array<int32_t>("tokenizer.ggml.token_type", VT_I32, types);
    w.tensor("big", 0, {int64_t(1) << 20, 1024});  // 4 GiB of F32
    gguf_image img = w.build(false);
    fs::path d = temp_dir("sparse");
    fs::path p = d / "big.gguf";
    write_file(p, img.bytes);
    uint64_t total = img.data_start + (4ull << 30);
    fs::resize_file(p, total);  // sparse: costs no disk

    auto t0 = std::chrono::steady_clock::now();
    model_file mf = read_gguf(p.string());
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(s, 1.0) << "opening must read only the header";
    EXPECT_EQ(mf.file_sizes[0], total);
    EXPECT_EQ(mf.tensors[0].offset, img.data_start);
    EXPECT_EQ(mf.tensors[0].bytes, 4ull << 30);
    auto toks = std::get<std::shared_ptr<meta_array>>(mf.meta("tokenizer.ggml.tokens")->value);
    ASSERT_EQ(toks->size(), 150000u);
    EXPECT_EQ(std::get<std::string>((*toks)[149999].value), "tok_149999");

    fs::resize_file(p, total - 1);  // one byte short: the tensor no longer fits
    EXPECT_THROW(read_gguf(p.string()), error);
    fs::remove_all(d);
}

TEST(gguf, split_set_opens_from_any_shard) {
    fs::path d = temp_dir("split");
    for (int s = 0; s < 3; s++) {
        gguf_writer w;
        w.scalar<uint16_t>("split.no", VT_U16, uint16_t(s))
            .scalar<uint16_t>("split.count", VT_U16, 3)
            .scalar<int32_t>("split.tensors.count", VT_I32, 3);
        if (s == 0) w.str("general.architecture", "llama");
        if (s != 1) w.tensor("t" + std::to_string(s), 0, {4});
        if (s == 2) w.tensor("u", 0, {8});
        write_file(d / ("m-0000" + std::to_string(s + 1) + "-of-00003.gguf"), w.build().bytes);
    }
    for (int s = 1; s <= 3; s++) {
        model_file mf = open_model_file((d / ("m-0000" + std::to_string(s) + "-of-00003.gguf")).string());
        ASSERT_EQ(mf.paths.size(), 3u);
        EXPECT_EQ(fs::path(mf.paths[0]).filename(), "m-00001-of-00003.gguf");
        EXPECT_EQ(fs::path(mf.paths[2]).filename(), "m-00003-of-00003.gguf");
        ASSERT_EQ(mf.tensors.size(), 3u);
        EXPECT_EQ(mf.find("t0")->file, 0);
        EXPECT_EQ(mf.find("t2")->file, 2);
        EXPECT_EQ(mf.find("u")->file, 2);
        EXPECT_EQ(mf.meta_string("general.architecture"), "llama");  // metadata from shard 1
    }
    EXPECT_EQ(open_model_file(d.string()).paths.size(), 3u);  // a directory holding one split set
    fs::remove_all(d);
}

TEST(gguf, split_file_names) {
    auto s = parse_gguf_split_name("/m/Qwen3-30B-A3B-Q4_K_M-00002-of-00013.gguf");
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->prefix, "/m/Qwen3-30B-A3B-Q4_K_M");
    EXPECT_EQ(s->shard, 2);
    EXPECT_EQ(s->count, 13);
    EXPECT_EQ(gguf_split_path(s->prefix, 1, 13), "/m/Qwen3-30B-A3B-Q4_K_M-00001-of-00013.gguf");
    for (const char* p : {"m.gguf", "m-00001-of-00002.safetensors", "m-0001-of-00002.gguf", "m-00001-of-0000x.gguf",
                          "-00001-of-00002.gguf", "m-00001_of-00002.gguf"})
        EXPECT_FALSE(parse_gguf_split_name(p).has_value()) << p;
}

TEST(gguf, fixtures_match_python_gguf_reader) {
    auto fixtures = expected_fixtures("gguf");
    if (fixtures.empty()) GTEST_SKIP() << "no GGUF fixtures yet (scripts/make_fixtures.py)";
    for (const auto& f : fixtures) check_fixture(f);
    std::printf("compared %zu GGUF fixtures\n", fixtures.size());
}

// Split fixtures open the same whatever shard is named.
TEST(gguf, split_fixtures_open_from_last_shard) {
    int n = 0;
    for (const auto& f : expected_fixtures("gguf")) {
        std::ifstream in(f);
        auto ex = nlohmann::json::parse(in);
        if (ex["files"].size() < 2) continue;
        fs::path last = fs::path(f).parent_path() / ex["files"].back().get<std::string>();
        check_fixture(f, last.string());
        n++;
    }
    if (n == 0) GTEST_SKIP() << "no split GGUF fixture";
}

}  // namespace
}  // namespace moe
