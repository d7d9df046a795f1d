// API version 2 additions to the offloading half of the C API: the host tier under a context's expert tier
// (options->host_budget_bytes, moe_get_level_stats) with hit/miss counts of both levels computed by hand and the
// expert bytes checked against the fixture's tensor table (expected.json, written by gguf-py); the model's
// hyper-parameters in moe_model_info; resident tensors (moe_model_get_tensor_info / moe_model_read_tensor_f32)
// against the raw file bytes and an F16 decoding written out here.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/api/moe_runtime.h"
#include "runtime/api/moe_runtime.hpp"

namespace {

const std::string k_fx = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/";
const std::string k_mixtral = k_fx + "mixtral-tiny-f32.gguf";  // 2 layers x 4 experts of 24 KiB, top-2
constexpr uint64_t k_slot = 24576;

std::vector<uint8_t> file_bytes(const std::string& path, uint64_t offset, uint64_t n) {
    std::ifstream f(path, std::ios::binary);
    f.seekg(std::streamoff(offset));
    std::vector<uint8_t> out(n);
    f.read(reinterpret_cast<char*>(out.data()), std::streamsize(n));
    EXPECT_EQ(uint64_t(f.gcount()), n) << path;
    return out;
}

nlohmann::json expected(const std::string& model) {
    std::ifstream f(model + ".expected.json");
    return nlohmann::json::parse(f);
}

const nlohmann::json& tensor(const nlohmann::json& exp, const std::string& name) {
    for (const auto& t : exp["tensors"])
        if (t["name"] == name) return t;
    static const nlohmann::json none;
    ADD_FAILURE() << "no tensor " << name << " in expected.json";
    return none;
}

// Expert e of layer l as the cache packs it (gate, up, down slices of the stacked tensors), from the file.
std::vector<uint8_t> expert_from_file(const nlohmann::json& exp, int layer, int e) {
    std::vector<uint8_t> out;
    for (const char* part : {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"}) {
        const auto& t = tensor(exp, "blk." + std::to_string(layer) + "." + part + ".weight");
        const uint64_t slice = t["bytes"].get<uint64_t>() / 4;
        const auto b = file_bytes(k_mixtral, t["offset"].get<uint64_t>() + uint64_t(e) * slice, slice);
        out.insert(out.end(), b.begin(), b.end());
    }
    return out;
}

TEST(capi_host_tier, scripted_sequence_counts_on_both_levels_and_exact_bytes) {
    moe_rt::model m(k_mixtral);
    moe_options o = moe_rt::default_options();
    o.expert_budget_bytes = 2 * k_slot;
    o.host_budget_bytes = 3 * k_slot + 100;  // 3 slots: the rest of a slot is never reserved
    o.prefetch_in_flight = 0;
    o.reader = MOE_READER_PREAD;
    moe_rt::context c(m, o);
    const moe_context_info info = c.info();
    EXPECT_EQ(info.n_slots, 2u);
    EXPECT_EQ(info.host_n_slots, 3u);
    EXPECT_EQ(info.host_budget_bytes, 3 * k_slot + 100);

    const nlohmann::json exp = expected(k_mixtral);
    const int A = 0, B = 1, C = 2, D = 3;
    for (int e : {A, B, A, C, B, D, A, C}) {
        moe_rt::handle h = c.acquire(0, e);
        auto [p, n] = h.data();
        ASSERT_EQ(n, k_slot);
        const std::vector<uint8_t> want = expert_from_file(exp, 0, e);
        EXPECT_EQ(0, std::memcmp(p, want.data(), n)) << "expert " << e;
    }
    // By hand (both levels LRU; the host level sees the expert level's misses, in order):
    //  A miss/miss, B miss/miss, A hit, C miss (evicts B)/miss, B miss (evicts A)/HIT,
    //  D miss (evicts C)/miss (evicts A), A miss (evicts B)/miss (evicts C), C miss (evicts D)/miss (evicts B).
    const moe_stats top = c.level_stats(MOE_LEVEL_EXPERT), low = c.level_stats(MOE_LEVEL_HOST);
    EXPECT_EQ(top.hits, 1u);
    EXPECT_EQ(top.misses, 7u);
    EXPECT_EQ(top.evictions, 5u);
    EXPECT_EQ(top.bytes_loaded, 7 * k_slot);
    EXPECT_EQ(low.hits, 1u);
    EXPECT_EQ(low.misses, 6u);
    EXPECT_EQ(low.evictions, 3u);
    EXPECT_EQ(low.bytes_loaded, 6 * k_slot);  // the file was read 6 times
    // The layer view and the old total agree with the level view.
    EXPECT_EQ(c.level_stats(MOE_LEVEL_HOST, 0).misses, 6u);
    EXPECT_EQ(c.level_stats(MOE_LEVEL_HOST, 1).misses, 0u);
    EXPECT_EQ(c.stats().misses, top.misses);
    EXPECT_LE(c.info().host_high_water_bytes, 3 * k_slot);
    EXPECT_LE(c.info().high_water_bytes, 2 * k_slot);

    moe_stats s{};
    s.struct_size = sizeof(s);
    EXPECT_EQ(moe_get_level_stats(c.get(), 2, -1, &s), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_get_level_stats(c.get(), MOE_LEVEL_HOST, 2, &s), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_get_level_stats(c.get(), MOE_LEVEL_HOST, -2, &s), MOE_ERR_OUT_OF_RANGE);
}

TEST(capi_host_tier, without_a_host_tier_the_host_level_is_out_of_range) {
    moe_rt::model m(k_mixtral);
    moe_options o = moe_rt::default_options();
    o.expert_budget_bytes = 2 * k_slot;
    moe_rt::context c(m, o);
    EXPECT_EQ(c.info().host_n_slots, 0u);
    moe_stats s{};
    s.struct_size = sizeof(s);
    EXPECT_EQ(moe_get_level_stats(c.get(), MOE_LEVEL_HOST, -1, &s), MOE_ERR_OUT_OF_RANGE);
    EXPECT_NE(std::string(moe_last_error()).find("no host tier"), std::string::npos) << moe_last_error();
    // Too small a host tier: fewer slots than the expert tier above it.
    o.expert_budget_bytes = 3 * k_slot;
    o.host_budget_bytes = 3 * k_slot - 1;
    moe_context* ctx = nullptr;
    EXPECT_EQ(moe_context_create(m.get(), &o, &ctx), MOE_ERR_BUDGET);
    EXPECT_NE(std::string(moe_last_error()).find("at least " + std::to_string(3 * k_slot) + " bytes"),
              std::string::npos)
        << moe_last_error();
    EXPECT_EQ(ctx, nullptr);
}

TEST(capi_model, hyper_parameters_match_the_metadata) {
    moe_rt::model m(k_mixtral);
    const moe_model_info i = m.info();
    const nlohmann::json md = expected(k_mixtral)["metadata"];
    auto meta = [&](const std::string& k) { return md[k]; };
    EXPECT_EQ(i.n_blocks, meta("llama.block_count").get<int>());
    EXPECT_EQ(i.n_vocab, 128);
    EXPECT_EQ(i.n_head, meta("llama.attention.head_count").get<int>());
    EXPECT_EQ(i.n_head_kv, meta("llama.attention.head_count_kv").get<int>());
    EXPECT_EQ(i.head_dim_k, 64 / 4);
    EXPECT_EQ(i.n_rot, meta("llama.rope.dimension_count").get<int>());
    EXPECT_EQ(i.rope_style, 0);  // GGUF llama: adjacent pairs
    EXPECT_FLOAT_EQ(i.rope_freq_base, meta("llama.rope.freq_base").get<float>());
    EXPECT_FLOAT_EQ(i.rms_eps, meta("llama.attention.layer_norm_rms_epsilon").get<float>());
    EXPECT_EQ(i.gating, 0);
    EXPECT_EQ(i.norm_topk, 1);                               // Mixtral renormalises its top-2
    const moe_rt::model qm(k_fx + "ref/qwen3moe-f32.gguf");  // info's strings live as long as the model
    const moe_model_info q = qm.info();
    EXPECT_EQ(q.rope_style, 1);  // qwen3moe: NEOX halves
    EXPECT_STREQ(q.arch, "qwen3moe");
}

TEST(capi_model, resident_tensors_read_as_f32) {
    moe_rt::model m(k_mixtral);
    const nlohmann::json exp = expected(k_mixtral);
    const auto& t = tensor(exp, "blk.1.attn_k.weight");
    const moe_tensor_info ti = m.tensor_info("blk.1.attn_k.weight");
    EXPECT_STREQ(ti.type, "F32");
    EXPECT_EQ(ti.n_dims, 2);
    EXPECT_EQ(ti.ne[0], t["ne"][0].get<int64_t>());
    EXPECT_EQ(ti.ne[1], t["ne"][1].get<int64_t>());
    EXPECT_EQ(ti.n_elements, uint64_t(ti.ne[0] * ti.ne[1]));
    EXPECT_EQ(ti.file_offset, t["offset"].get<uint64_t>());
    EXPECT_EQ(ti.bytes, t["bytes"].get<uint64_t>());
    const std::vector<float> v = m.read_tensor("blk.1.attn_k.weight");
    const std::vector<uint8_t> raw = file_bytes(k_mixtral, ti.file_offset, ti.bytes);
    ASSERT_EQ(v.size() * 4, raw.size());
    EXPECT_EQ(0, std::memcmp(v.data(), raw.data(), raw.size()));

    // F16, decoded by hand from the file's half floats.
    const std::string f16 = k_fx + "qwen2moe-tiny-f16.gguf";
    moe_rt::model h(f16);
    const moe_tensor_info hi = h.tensor_info("blk.0.attn_q.weight");
    EXPECT_STREQ(hi.type, "F16");
    const std::vector<float> got = h.read_tensor("blk.0.attn_q.weight");
    const std::vector<uint8_t> half = file_bytes(f16, hi.file_offset, hi.bytes);
    ASSERT_EQ(got.size() * 2, half.size());
    for (size_t i = 0; i < got.size(); ++i) {
        const uint16_t b = uint16_t(half[2 * i] | (half[2 * i + 1] << 8));
        const int sign = b >> 15, ex = (b >> 10) & 31, man = b & 1023;
        float want = ex == 0 ? std::ldexp(float(man), -24) : std::ldexp(float(1024 + man), ex - 25);
        if (sign) want = -want;
        ASSERT_EQ(got[i], want) << "element " << i;  // ex == 31 (inf/nan) does not occur in the fixture
    }

    // Errors.
    moe_tensor_info none{};
    none.struct_size = sizeof(none);
    EXPECT_EQ(moe_model_get_tensor_info(m.get(), "blk.9.nothing.weight", &none), MOE_ERR_UNKNOWN_NAME);
    EXPECT_NE(std::string(moe_last_error()).find("blk.9.nothing.weight"), std::string::npos) << moe_last_error();
    std::vector<float> small(10);
    EXPECT_EQ(moe_model_read_tensor_f32(m.get(), "blk.1.attn_k.weight", small.data(), small.size()),
              MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_model_read_tensor_f32(m.get(), nullptr, small.data(), small.size()), MOE_ERR_INVALID_ARGUMENT);
}

}  // namespace
