// moe gen's library (runtime/model_gen.h, runtime/gguf_writer.h): the small shape is written to a temp dir and read
// back through the model reader (open_model_file, describe_model) -- architecture, counts, tensor types and the
// expert layout's byte ranges, computed here by hand from the shapes and the ggml block sizes -- then decoded
// (values finite, of the intended magnitude) and run (finite logits). The big shapes are only planned.
#include "runtime/model_gen.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/error.h"
#include "runtime/dequant.h"
#include "runtime/engine.h"
#include "runtime/model_desc.h"
#include "runtime/model_file.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

// Block sizes written out from the ggml formats (docs/model-formats.md §2.1), not taken from the library.
constexpr uint64_t k_q4k_block = 144, k_q6k_block = 210, k_qk = 256;

struct temp_dir {
    fs::path path;
    explicit temp_dir(const std::string& tag)
        : path(fs::temp_directory_path() / ("moe_model_gen_test_" + tag + "_" + std::to_string(::getpid()))) {
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~temp_dir() { fs::remove_all(path); }
};

std::vector<uint8_t> read_all(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

std::vector<uint8_t> read_range(const std::string& path, uint64_t off, uint64_t n) {
    std::vector<uint8_t> b(n);
    const int fd = ::open(path.c_str(), O_RDONLY);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::pread(fd, b.data(), n, off_t(off)), ssize_t(n));
    ::close(fd);
    return b;
}

struct moments {
    double mean = 0, rms = 0;
    bool finite = true;
};
moments stats(const std::vector<float>& v) {
    moments m;
    double s = 0, s2 = 0;
    for (float x : v) {
        m.finite = m.finite && std::isfinite(x);
        s += x, s2 += double(x) * x;
    }
    m.mean = s / double(v.size());
    m.rms = std::sqrt(s2 / double(v.size()));
    return m;
}

std::vector<float> decode(tensor_type t, const std::vector<uint8_t>& raw) {
    const auto& info = type_info(t);
    const int64_t n = int64_t(raw.size() / info.block_bytes * info.block_elems);
    std::vector<float> out(static_cast<size_t>(n));
    dequantize_row(t, raw.data(), out.data(), n);
    return out;
}

gguf_write_options small_chunks(int threads) {
    gguf_write_options o;
    o.threads = threads;
    o.chunk_bytes = 64 << 10;  // many chunks and pieces cut through tensors and blocks
    return o;
}

TEST(ModelGen, SmallShapeReadsBackAsDescribed) {
    temp_dir dir("small");
    const std::string path = (dir.path / "small.gguf").string();
    const gen_plan plan = plan_model({"qwen3-moe-small", 7, 0, 0, std::nullopt});
    const gguf_write_result r = generate_model(plan, path, small_chunks(3));
    EXPECT_EQ(r.bytes, fs::file_size(path));
    EXPECT_EQ(r.bytes, plan.gguf.file_bytes());
    EXPECT_FALSE(fs::exists(path + ".tmp"));

    const model_file f = open_model_file(path);
    EXPECT_EQ(f.meta_string("general.architecture"), "qwen3moe");
    EXPECT_EQ(f.meta_string("general.name"), "qwen3-moe-small (random weights)");
    EXPECT_EQ(f.meta_int("general.alignment"), 32);
    EXPECT_EQ(f.meta("tokenizer.ggml.tokens"), nullptr);  // no tokenizer: run with token ids
    const model_desc d = describe_model(f);
    EXPECT_EQ(d.architecture, arch::QWEN3MOE);
    EXPECT_EQ(d.n_layers, 2);
    EXPECT_EQ(d.n_embd, 256);
    EXPECT_EQ(d.n_experts, 8);
    EXPECT_EQ(d.n_experts_used, 2);
    EXPECT_EQ(d.n_ff_exp, 256);
    EXPECT_EQ(d.n_head, 4);
    EXPECT_EQ(d.n_head_kv, 2);
    EXPECT_EQ(d.head_dim_k, 64);
    EXPECT_EQ(d.n_vocab, 1024);
    EXPECT_DOUBLE_EQ(d.rope_freq_base, 1e6);
    EXPECT_NEAR(d.rms_eps, 1e-6, 1e-12);

    // The types of a Q4_K_M Qwen3-30B-A3B.
    auto type_of = [&](const std::string& n) {
        const tensor_desc* t = f.find(n);
        EXPECT_NE(t, nullptr) << n;
        return t ? t->type : tensor_type::U8;
    };
    for (int il = 0; il < 2; il++) {
        const std::string b = "blk." + std::to_string(il) + ".";
        EXPECT_EQ(type_of(b + "ffn_gate_exps.weight"), tensor_type::Q4_K);
        EXPECT_EQ(type_of(b + "ffn_up_exps.weight"), tensor_type::Q4_K);
        EXPECT_EQ(type_of(b + "ffn_down_exps.weight"), tensor_type::Q6_K);
        EXPECT_EQ(type_of(b + "attn_q.weight"), tensor_type::Q4_K);
        EXPECT_EQ(type_of(b + "attn_k.weight"), tensor_type::Q4_K);
        EXPECT_EQ(type_of(b + "attn_v.weight"), tensor_type::Q6_K);
        EXPECT_EQ(type_of(b + "attn_output.weight"), tensor_type::Q4_K);
        for (const char* n : {"attn_norm", "ffn_norm", "attn_q_norm", "attn_k_norm", "ffn_gate_inp"})
            EXPECT_EQ(type_of(b + n + ".weight"), tensor_type::F32) << n;
    }
    EXPECT_EQ(type_of("token_embd.weight"), tensor_type::Q4_K);
    EXPECT_EQ(type_of("output.weight"), tensor_type::Q6_K);
    EXPECT_EQ(type_of("output_norm.weight"), tensor_type::F32);

    // Expert bytes by hand: gate/up {256, 256} Q4_K = 256 rows of one 144-byte block; down {256, 256} Q6_K = 256
    // rows of one 210-byte block.
    const uint64_t gate = 256 * (256 / k_qk) * k_q4k_block, down = 256 * (256 / k_qk) * k_q6k_block;
    const uint64_t expert = 2 * gate + down;
    EXPECT_EQ(expert, 127488u);
    const expert_layout& L = d.layout;
    ASSERT_EQ(L.n_moe_layers, 2);
    EXPECT_EQ(L.max_expert_bytes, expert);
    EXPECT_EQ(L.total_bytes, 2 * 8 * expert);
    EXPECT_EQ(L.total_bytes, plan.expert_bytes);
    const expert_entry& e = L.at(1, 5);
    ASSERT_EQ(e.ranges.size(), 3u);
    EXPECT_EQ(e.ranges[0].offset, f.find("blk.1.ffn_gate_exps.weight")->offset + 5 * gate);
    EXPECT_EQ(e.ranges[1].offset, f.find("blk.1.ffn_up_exps.weight")->offset + 5 * gate);
    EXPECT_EQ(e.ranges[2].offset, f.find("blk.1.ffn_down_exps.weight")->offset + 5 * down);
    EXPECT_EQ(e.ranges[2].bytes, down);

    // Decoded values: finite, centred, RMS ~0.02 (trained-weight scale) for every matrix type in the file.
    for (const auto& rg : e.ranges) {
        const moments m = stats(decode(rg.type, read_range(path, rg.offset, rg.bytes)));
        EXPECT_TRUE(m.finite) << rg.tensor;
        EXPECT_GT(m.rms, 0.012) << rg.tensor;
        EXPECT_LT(m.rms, 0.03) << rg.tensor;
        EXPECT_LT(std::abs(m.mean), 0.003) << rg.tensor;
    }
    for (const char* n : {"token_embd.weight", "output.weight", "blk.0.attn_q.weight", "blk.0.attn_v.weight"}) {
        const tensor_desc& t = *f.find(n);
        const moments m = stats(decode(t.type, read_range(path, t.offset, t.bytes)));
        EXPECT_TRUE(m.finite) << n;
        EXPECT_GT(m.rms, 0.012) << n;
        EXPECT_LT(m.rms, 0.03) << n;
    }
    {
        const tensor_desc& t = *f.find("blk.0.attn_norm.weight");
        const std::vector<float> v = decode(t.type, read_range(path, t.offset, t.bytes));
        for (float x : v) EXPECT_TRUE(x > 0.7f && x < 1.3f) << x;
        EXPECT_NEAR(stats(v).mean, 1.0, 0.02);
    }
    {
        const tensor_desc& t = *f.find("blk.1.ffn_gate_inp.weight");
        const moments m = stats(decode(t.type, read_range(path, t.offset, t.bytes)));
        EXPECT_NEAR(m.rms, 0.02, 0.003);
        EXPECT_LT(std::abs(m.mean), 0.002);
    }

    // A forward pass over the file: finite logits that are not all the same.
    engine_config cfg;
    cfg.backend = backend_kind::CPU;
    engine eng(path, cfg);
    const std::vector<int> tokens = {1, 2, 3};
    std::vector<float> logits(tokens.size() * 1024);
    eng.logits(tokens, logits);
    float lo = logits[0], hi = logits[0];
    for (float x : logits) {
        ASSERT_TRUE(std::isfinite(x));
        lo = std::min(lo, x), hi = std::max(hi, x);
    }
    EXPECT_GT(hi - lo, 1e-3f);
}

TEST(ModelGen, BytesDependOnlyOnTheSeed) {
    temp_dir dir("seed");
    const gen_plan plan = plan_model({"qwen3-moe-small", 3, 1, 0, std::nullopt});
    const fs::path a = dir.path / "a.gguf", b = dir.path / "b.gguf", c = dir.path / "c.gguf";
    gguf_write_options one;
    one.threads = 1;
    one.direct = false;
    generate_model(plan, a.string(), one);
    generate_model(plan, b.string(), small_chunks(4));
    EXPECT_EQ(read_all(a), read_all(b));  // any thread count, chunk size or O_DIRECT: the same file
    const gen_plan other = plan_model({"qwen3-moe-small", 4, 1, 0, std::nullopt});
    generate_model(other, c.string(), one);
    EXPECT_NE(read_all(a), read_all(c));
}

TEST(ModelGen, ExpertTypeOverridesDecodeToTheSameScale) {
    for (const char* name : {"q8_0", "Q4_0", "mxfp4", "q6_k", "f16", "bf16"}) {
        const auto t = parse_gen_type(name);
        ASSERT_TRUE(t) << name;
        gen_options o{"qwen3-moe-small", 1, 1, 0, t};
        const gen_plan p = plan_model(o);
        EXPECT_EQ(p.shape.n_layers, 1);
        size_t idx = 0;
        while (p.gguf.tensors()[idx].name != "blk.0.ffn_down_exps.weight") idx++;
        const gguf_tensor_spec& s = p.gguf.tensors()[idx];
        EXPECT_EQ(s.type, *t);
        std::vector<uint8_t> raw(s.bytes);
        // Two halves filled separately, split inside a block: the same bytes as one fill.
        const uint64_t cut = s.bytes / 2 + 7;
        gen_fill_tensor(p, idx, 0, cut, raw.data());
        gen_fill_tensor(p, idx, cut, s.bytes, raw.data() + cut);
        std::vector<uint8_t> whole(s.bytes);
        gen_fill_tensor(p, idx, 0, s.bytes, whole.data());
        EXPECT_EQ(raw, whole) << name;
        const moments m = stats(decode(*t, raw));
        EXPECT_TRUE(m.finite) << name;
        EXPECT_GT(m.rms, 0.012) << name;
        EXPECT_LT(m.rms, 0.03) << name;
        EXPECT_LT(std::abs(m.mean), 0.003) << name;
    }
    EXPECT_FALSE(parse_gen_type("q5_k"));
    EXPECT_FALSE(parse_gen_type("nope"));
}

TEST(ModelGen, RealShapesArePlannedWithTheirSizes) {
    // Qwen3-30B-A3B: gate/up {2048, 768, 128} Q4_K = 768 rows x 8 blocks x 144 B per expert, down {768, 2048, 128}
    // Q6_K = 2048 rows x 3 blocks x 210 B; 48 layers x 128 experts.
    const gen_plan q = plan_model({"qwen3-30b-a3b", 1, 0, 0, std::nullopt});
    const uint64_t q_expert = 2 * 768 * (2048 / k_qk) * k_q4k_block + 2048 * (768 / k_qk) * k_q6k_block;
    EXPECT_EQ(q_expert, 3059712u);
    EXPECT_EQ(q.expert_bytes, 48 * 128 * q_expert);
    EXPECT_EQ(q.gguf.tensors().size(), 2 + 48 * 12 + 1u);
    EXPECT_GT(q.gguf.file_bytes(), 17'000'000'000u);
    EXPECT_LT(q.gguf.file_bytes(), 20'000'000'000u);
    // Mixtral-8x7B: three {4096, 14336} Q4_K matrices per expert (down {14336, 4096}), 32 layers x 8 experts.
    const gen_plan m = plan_model({"mixtral-8x7b", 1, 0, 0, std::nullopt});
    const uint64_t m_expert = 2 * 14336 * (4096 / k_qk) * k_q4k_block + 4096 * (14336 / k_qk) * k_q4k_block;
    EXPECT_EQ(m.expert_bytes, 32 * 8 * m_expert);
    EXPECT_GT(m.gguf.file_bytes(), 25'000'000'000u);
    EXPECT_LT(m.gguf.file_bytes(), 27'000'000'000u);
    // Overrides.
    const gen_plan small = plan_model({"mixtral-8x7b", 1, 3, 512, parse_gen_type("q8_0")});
    EXPECT_EQ(small.shape.n_layers, 3);
    EXPECT_EQ(small.shape.n_vocab, 512);
    EXPECT_EQ(small.expert_bytes, 3 * 8 * 3 * uint64_t(14336) * (4096 / 32) * 34);
}

TEST(ModelGen, Refusals) {
    EXPECT_THROW(plan_model({"qwen4-huge", 1, 0, 0, std::nullopt}), usage_error);
    EXPECT_THROW(plan_model({"qwen3-moe-small", 1, -1, 0, std::nullopt}), usage_error);
    EXPECT_THROW(plan_model({"qwen3-moe-small", 1, 0, -5, std::nullopt}), usage_error);
    EXPECT_THROW(plan_model({"qwen3-moe-small", 1, 0, 0, tensor_type::Q5_K}), usage_error);

    temp_dir dir("refuse");
    const std::string path = (dir.path / "m.gguf").string();
    const gen_plan p = plan_model({"qwen3-moe-small", 1, 1, 0, std::nullopt});
    generate_model(p, path, {});
    // An existing file stays as it is unless overwriting is asked for.
    const auto before = read_all(path);
    try {
        generate_model(plan_model({"qwen3-moe-small", 2, 1, 0, std::nullopt}), path, {});
        FAIL() << "overwrote an existing file";
    } catch (const error& e) {
        EXPECT_NE(std::string(e.what()).find("already exists"), std::string::npos) << e.what();
    }
    EXPECT_EQ(read_all(path), before);
    gguf_write_options force;
    force.overwrite = true;
    generate_model(plan_model({"qwen3-moe-small", 2, 1, 0, std::nullopt}), path, force);
    EXPECT_NE(read_all(path), before);

    // A cancelled write leaves neither the file nor FILE.tmp.
    std::atomic<bool> stop{true};
    gguf_write_options cancel;
    cancel.cancel = &stop;
    const std::string other = (dir.path / "other.gguf").string();
    EXPECT_THROW(generate_model(p, other, cancel), error);
    EXPECT_FALSE(fs::exists(other));
    EXPECT_FALSE(fs::exists(other + ".tmp"));

    // A file larger than the free space is refused before anything is written (1000 Mixtral layers: ~0.8 TB).
    const gen_plan huge = plan_model({"mixtral-8x7b", 1, 1000, 0, std::nullopt});
    struct statvfs vfs {};
    ASSERT_EQ(::statvfs(dir.path.c_str(), &vfs), 0);
    if (uint64_t(vfs.f_bavail) * vfs.f_frsize >= huge.gguf.file_bytes()) GTEST_SKIP() << "this disk is too large";
    try {
        generate_model(huge, (dir.path / "huge.gguf").string(), {});
        FAIL() << "wrote a file larger than the free space";
    } catch (const error& e) {
        EXPECT_NE(std::string(e.what()).find("free"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(dir.path / "huge.gguf.tmp"));
}

}  // namespace
}  // namespace moe
