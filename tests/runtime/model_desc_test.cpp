// describe_model against the committed fixtures (whose expected.json was computed in Python by reading the files
// back with gguf.GGUFReader / a safetensors header parse, see scripts/make_fixtures.py), the layout invariants
// (every expert range inside its tensor; the experts of a merged tensor tile it exactly), and hand-built
// model_file objects for the cases no well-formed fixture can show: missing tensors, contradicting widths.
#include "runtime/model_desc.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"
#include "runtime/model_file.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace moe {
namespace {

fs::path fixtures_dir() {
    return fs::path(MOE_SOURCE_DIR) / "tests" / "fixtures";
}

struct fixture {
    std::string model;  // path of the model entry (file or index.json)
    json expected;
};

std::vector<fixture> model_fixtures() {
    std::vector<fixture> out;
    for (const auto& e : fs::recursive_directory_iterator(fixtures_dir())) {
        std::string p = e.path().string();
        const std::string suffix = ".expected.json";
        if (p.size() <= suffix.size() || p.compare(p.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
        std::ifstream in(p);
        json j = json::parse(in);
        if (!j.contains("model")) continue;
        out.push_back({p.substr(0, p.size() - suffix.size()), std::move(j)});
    }
    std::sort(out.begin(), out.end(), [](const fixture& a, const fixture& b) { return a.model < b.model; });
    return out;
}

std::string expect_error(const model_file& f) {
    try {
        describe_model(f);
    } catch (const error& e) {
        return e.what();
    }
    ADD_FAILURE() << "describe_model accepted a bad model";
    return "";
}

TEST(model_desc_fixtures, there_are_enough_fixtures) {
    // Guards against a silently empty loop below (wrong directory, fixtures not generated).
    EXPECT_GE(model_fixtures().size(), 12u);
}

TEST(model_desc_fixtures, description_matches_python_reference) {
    for (const auto& fx : model_fixtures()) {
        SCOPED_TRACE(fx.model);
        model_file f = open_model_file(fx.model);
        model_desc d = describe_model(f);
        const json& m = fx.expected["model"];
        EXPECT_EQ(arch_name(d.architecture), m["architecture"].get<std::string>());
        EXPECT_EQ(d.n_layers, m["n_layers"].get<int>());
        EXPECT_EQ(d.layout.n_moe_layers, m["n_moe_layers"].get<int>());
        EXPECT_EQ(d.n_experts, m["n_experts"].get<int>());
        EXPECT_EQ(d.layout.n_experts, m["n_experts"].get<int>());
        EXPECT_EQ(d.n_experts_used, m["n_experts_used"].get<int>());
        EXPECT_EQ(d.layout.max_expert_bytes, m["expert_bytes"].get<uint64_t>());
        EXPECT_EQ(d.layout.total_bytes, m["total_expert_bytes"].get<uint64_t>());
        EXPECT_EQ(d.resident_bytes, m["resident_bytes"].get<uint64_t>());
        EXPECT_EQ(d.n_ff_exp, m["n_ff_exp"].get<int>());
        EXPECT_EQ(d.n_shared_experts, m["n_shared_experts"].get<int>());
        EXPECT_EQ(d.layout.experts.size(), size_t(d.layout.n_moe_layers) * size_t(d.n_experts));
        EXPECT_EQ(d.layout.moe_layers.size(), size_t(d.layout.n_moe_layers));
    }
}

TEST(model_desc_fixtures, expert_ranges_lie_in_their_tensors_and_tile_them) {
    for (const auto& fx : model_fixtures()) {
        SCOPED_TRACE(fx.model);
        model_file f = open_model_file(fx.model);
        model_desc d = describe_model(f);
        // The tensor table of the Python reference, independent of our reader.
        std::map<std::string, json> ref;
        for (const auto& t : fx.expected["tensors"]) ref[t["name"].get<std::string>()] = t;

        std::map<std::string, std::vector<std::pair<uint64_t, uint64_t>>> per_tensor;
        for (int ml = 0; ml < d.layout.n_moe_layers; ++ml) {
            for (int e = 0; e < d.n_experts; ++e) {
                const expert_entry& ee = d.layout.at(ml, e);
                ASSERT_EQ(ee.moe_layer, ml);
                ASSERT_EQ(ee.expert, e);
                EXPECT_EQ(ee.layer, d.layout.moe_layers[size_t(ml)]);
                ASSERT_FALSE(ee.ranges.empty());
                uint64_t sum = 0;
                for (const auto& r : ee.ranges) {
                    ASSERT_TRUE(ref.count(r.tensor)) << r.tensor;
                    const json& t = ref[r.tensor];
                    uint64_t t_off = t["offset"].get<uint64_t>(), t_bytes = t["bytes"].get<uint64_t>();
                    EXPECT_EQ(r.file, t["file"].get<int>()) << r.tensor;
                    EXPECT_EQ(std::string(type_name(r.type)), t["type"].get<std::string>()) << r.tensor;
                    EXPECT_GE(r.offset, t_off) << r.tensor;
                    EXPECT_LE(r.offset + r.bytes, t_off + t_bytes) << r.tensor;
                    EXPECT_GT(r.bytes, 0u);
                    // the tensor name says which layer it belongs to
                    EXPECT_NE(r.tensor.find("." + std::to_string(ee.layer) + "."), std::string::npos) << r.tensor;
                    per_tensor[r.tensor].push_back({r.offset, r.bytes});
                    sum += r.bytes;
                }
                EXPECT_EQ(sum, ee.bytes);
                // gate before up before down (or gate_up then down), biases last
                EXPECT_TRUE(ee.ranges[0].part == expert_part::GATE || ee.ranges[0].part == expert_part::GATE_UP);
            }
        }
        for (auto& [name, ranges] : per_tensor) {
            SCOPED_TRACE(name);
            std::sort(ranges.begin(), ranges.end());
            uint64_t pos = ref[name]["offset"].get<uint64_t>();
            for (const auto& [off, bytes] : ranges) {
                EXPECT_EQ(off, pos) << "gap or overlap";
                pos = off + bytes;
            }
            EXPECT_EQ(pos, ref[name]["offset"].get<uint64_t>() + ref[name]["bytes"].get<uint64_t>());
        }
    }
}

TEST(model_desc_fixtures, mixtral_q8_0_hand_computed) {
    model_file f = open_model_file((fixtures_dir() / "mixtral-tiny-q8_0.gguf").string());
    model_desc d = describe_model(f);
    EXPECT_EQ(d.architecture, arch::LLAMA);
    EXPECT_EQ(d.rope, rope_style::NORM);  // the converter permuted q/k, so GGUF Mixtral uses adjacent pairs
    EXPECT_EQ(d.gating, gating_func::SOFTMAX);
    EXPECT_TRUE(d.norm_topk);
    EXPECT_EQ(d.n_embd, 64);
    EXPECT_EQ(d.n_head, 4);
    EXPECT_EQ(d.n_head_kv, 2);
    EXPECT_EQ(d.n_vocab, 128);
    // Q8_0: 34 bytes per 32 weights. gate/up {64, 32} per expert: 32 rows * 2 blocks * 34 = 2176; down {32, 64}:
    // 64 rows * 1 block * 34 = 2176.
    const expert_entry& ee = d.layout.at(1, 3);
    ASSERT_EQ(ee.ranges.size(), 3u);
    EXPECT_EQ(ee.bytes, 3u * 2176u);
    const tensor_desc* gate = f.find("blk.1.ffn_gate_exps.weight");
    ASSERT_NE(gate, nullptr);
    EXPECT_EQ(ee.ranges[0].part, expert_part::GATE);
    EXPECT_EQ(ee.ranges[0].offset, gate->offset + 3 * 2176);
    EXPECT_EQ(ee.ranges[1].part, expert_part::UP);
    EXPECT_EQ(ee.ranges[2].part, expert_part::DOWN);
    EXPECT_EQ(ee.ranges[2].tensor, "blk.1.ffn_down_exps.weight");
    EXPECT_EQ(ee.ranges[0].type, tensor_type::Q8_0);
}

TEST(model_desc_fixtures, per_architecture_routing) {
    auto desc = [](const char* name) { return describe_model(open_model_file((fixtures_dir() / name).string())); };
    model_desc q3 = desc("qwen3moe-tiny-f32.gguf");
    EXPECT_EQ(q3.rope, rope_style::NEOX);
    EXPECT_TRUE(q3.norm_topk);
    EXPECT_EQ(q3.head_dim_k, 32);  // key_length, not n_embd / n_head = 16

    model_desc q2 = desc("qwen2moe-tiny-f16.gguf");
    EXPECT_FALSE(q2.norm_topk);
    EXPECT_EQ(q2.n_shared_experts, 1);
    EXPECT_EQ(q2.n_ff_shexp, 64);

    model_desc ol = desc("olmoe-tiny-q8_0.gguf");
    EXPECT_FALSE(ol.norm_topk);
    EXPECT_EQ(ol.rope, rope_style::NEOX);

    model_desc ds = desc("deepseek2-tiny-f16.gguf");
    EXPECT_EQ(ds.gating, gating_func::SIGMOID);
    EXPECT_TRUE(ds.norm_topk);
    EXPECT_DOUBLE_EQ(ds.weights_scale, 2.5);
    EXPECT_EQ(ds.n_leading_dense, 1);
    EXPECT_EQ(ds.layout.moe_layers, (std::vector<int>{1, 2}));
    EXPECT_EQ(ds.layout.at(0, 0).layer, 1);
    EXPECT_EQ(ds.n_shared_experts, 2);
    EXPECT_EQ(ds.n_ff_shexp, 64);
    EXPECT_EQ(ds.rope, rope_style::NORM);
    EXPECT_EQ(ds.head_dim_k, 32);  // key_length_mla

    model_desc go = desc("gpt-oss-tiny-mxfp4.gguf");
    EXPECT_EQ(go.gating, gating_func::SOFTMAX_WEIGHT);
    const expert_entry& e = go.layout.at(1, 2);
    ASSERT_EQ(e.ranges.size(), 6u);  // gate, up, down, then the three bias rows
    EXPECT_EQ(e.ranges[0].type, tensor_type::MXFP4);
    EXPECT_EQ(e.ranges[3].part, expert_part::GATE_BIAS);
    EXPECT_EQ(e.ranges[3].bytes, 32u * 4u);  // one F32 row of width n_ff_exp
    EXPECT_EQ(e.ranges[5].part, expert_part::DOWN_BIAS);
    EXPECT_EQ(e.ranges[5].bytes, 64u * 4u);

    model_desc hf = desc("mixtral-tiny-hf");
    EXPECT_EQ(hf.architecture, arch::LLAMA);
    EXPECT_EQ(hf.rope, rope_style::NEOX);  // raw HF weights rotate halves
    EXPECT_EQ(hf.layout.at(0, 1).ranges[0].tensor, "model.layers.0.block_sparse_moe.experts.1.w1.weight");
    EXPECT_EQ(hf.layout.at(0, 1).ranges[2].tensor, "model.layers.0.block_sparse_moe.experts.1.w2.weight");
    EXPECT_EQ(hf.layout.at(0, 1).ranges[2].type, tensor_type::F16);

    model_desc gh = desc("gpt-oss-tiny-hf");
    EXPECT_EQ(gh.architecture, arch::GPT_OSS);
    EXPECT_EQ(gh.gating, gating_func::SOFTMAX_WEIGHT);
    const expert_entry& g = gh.layout.at(1, 3);
    ASSERT_EQ(g.ranges.size(), 6u);
    EXPECT_EQ(g.ranges[0].part, expert_part::GATE_UP);
    EXPECT_EQ(g.ranges[0].type, tensor_type::U8);
    EXPECT_EQ(g.ranges[0].bytes, 2u * 32 * 64 / 2);  // 2f rows of d 4-bit codes
    EXPECT_EQ(g.ranges[1].part, expert_part::GATE_UP_SCALES);
    EXPECT_EQ(g.ranges[1].bytes, 2u * 32 * 64 / 32);  // one E8M0 byte per 32 codes
    EXPECT_EQ(g.ranges[2].part, expert_part::DOWN);
    EXPECT_EQ(g.ranges[3].part, expert_part::DOWN_SCALES);
    EXPECT_EQ(g.ranges[4].part, expert_part::GATE_UP_BIAS);
    EXPECT_EQ(g.ranges[4].bytes, 2u * 32 * 2);  // BF16 row of width 2f
    EXPECT_EQ(g.ranges[5].part, expert_part::DOWN_BIAS);
    model_file gf = open_model_file((fixtures_dir() / "gpt-oss-tiny-hf").string());
    const tensor_desc* gub = gf.find("model.layers.1.mlp.experts.gate_up_proj_blocks");
    ASSERT_NE(gub, nullptr);
    EXPECT_EQ(g.ranges[0].offset, gub->offset + 3 * 2048u);

    model_desc legacy = desc("mixtral-legacy-tiny-f16.gguf");
    EXPECT_EQ(legacy.layout.at(1, 2).ranges[1].tensor, "blk.1.ffn_up.2.weight");
}

// RoPE scaling, from both formats, against the values the fixture writers put there (scripts/make_fixtures.py,
// scripts/make_reference_logits.py): the GGUF keys, and transformers 5's rope_parameters, which also carries
// rope_theta (a reader looking only at the top-level key silently gets the 10000 default).
TEST(model_desc_fixtures, rope_scaling_from_gguf_and_config_json) {
    const fs::path ref = fixtures_dir() / "ref";
    const model_desc none = describe_model(open_model_file((ref / "mixtral-f32.gguf").string()));
    EXPECT_EQ(none.rope_scale.type, rope_scaling_type::NONE);

    const model_desc ds = describe_model(open_model_file((fixtures_dir() / "deepseek2-tiny-f16.gguf").string()));
    EXPECT_EQ(ds.rope_scale.type, rope_scaling_type::YARN);
    EXPECT_DOUBLE_EQ(ds.rope_scale.factor, 40.0);
    EXPECT_EQ(ds.rope_scale.orig_ctx, 4096);
    EXPECT_NEAR(ds.rope_scale.mscale_all_dim, 0.707, 1e-6);  // yarn_log_multiplier 0.0707 = 0.1 * mscale_all_dim

    for (const char* f : {"deepseek2-f32.gguf", "deepseek2-hf"}) {
        const model_desc d = describe_model(open_model_file((ref / f).string()));
        EXPECT_EQ(d.rope_scale.type, rope_scaling_type::YARN) << f;
        EXPECT_DOUBLE_EQ(d.rope_scale.factor, 4.0) << f;
        EXPECT_EQ(d.rope_scale.orig_ctx, 64) << f;
        EXPECT_NEAR(d.rope_scale.mscale_all_dim, 0.707, 1e-6) << f;
        EXPECT_DOUBLE_EQ(d.rope_freq_base, 10000.0) << f;
    }
    for (const char* f : {"gpt-oss-f32.gguf", "gpt-oss-hf"}) {
        const model_desc d = describe_model(open_model_file((ref / f).string()));
        EXPECT_EQ(d.rope_scale.type, rope_scaling_type::YARN) << f;
        EXPECT_DOUBLE_EQ(d.rope_scale.factor, 32.0) << f;
        EXPECT_EQ(d.rope_scale.orig_ctx, 4096) << f;
        EXPECT_DOUBLE_EQ(d.rope_freq_base, 150000.0) << f;  // inside rope_parameters in the config.json
    }
}

TEST(model_desc_fixtures, dense_model_is_refused) {
    model_file f = open_model_file((fixtures_dir() / "dense-tiny-f16.gguf").string());
    std::string msg = expect_error(f);
    EXPECT_NE(msg.find("not a Mixture-of-Experts"), std::string::npos) << msg;
    EXPECT_NE(msg.find("llama.expert_count"), std::string::npos) << msg;
}

// ---- hand-built model files ---------------------------------------------------------------------------------

meta_value u32(uint64_t v) {
    return meta_value{4, 0, v};
}
meta_value str(std::string s) {
    return meta_value{8, 0, std::move(s)};
}

struct builder {
    model_file f;
    uint64_t next = 1024;
    explicit builder(model_format fmt = model_format::GGUF) {
        f.format = fmt;
        f.paths = {"synthetic.model"};
    }
    builder& tensor(const std::string& name, tensor_type type, std::vector<int64_t> ne) {
        tensor_desc t;
        t.name = name;
        t.type = type;
        t.n_dims = int(ne.size());
        for (size_t i = 0; i < ne.size(); ++i) t.ne[i] = ne[i];
        t.offset = next;
        t.bytes = *tensor_nbytes(type, t.ne, t.n_dims);
        next += (t.bytes + 31) / 32 * 32;
        f.index[name] = f.tensors.size();
        f.tensors.push_back(t);
        return *this;
    }
    builder& drop(const std::string& name) {
        auto it =
            std::find_if(f.tensors.begin(), f.tensors.end(), [&](const tensor_desc& t) { return t.name == name; });
        EXPECT_NE(it, f.tensors.end());
        f.tensors.erase(it);
        f.index.clear();
        for (size_t i = 0; i < f.tensors.size(); ++i) f.index[f.tensors[i].name] = i;
        return *this;
    }
};

// A 2-layer Mixtral-shaped GGUF table: d=64, n_ff=32, 4 experts, top-2.
builder mixtral(int64_t ff_meta = 32, int64_t down_ff = 32) {
    builder b;
    auto& m = b.f.metadata;
    m["general.architecture"] = str("llama");
    m["llama.block_count"] = u32(2);
    m["llama.embedding_length"] = u32(64);
    m["llama.feed_forward_length"] = u32(uint64_t(ff_meta));
    m["llama.attention.head_count"] = u32(4);
    m["llama.expert_count"] = u32(4);
    m["llama.expert_used_count"] = u32(2);
    b.tensor("token_embd.weight", tensor_type::F32, {64, 100});
    for (int il = 0; il < 2; ++il) {
        std::string p = "blk." + std::to_string(il) + ".";
        b.tensor(p + "attn_q.weight", tensor_type::F32, {64, 64});
        b.tensor(p + "ffn_gate_inp.weight", tensor_type::F32, {64, 4});
        b.tensor(p + "ffn_gate_exps.weight", tensor_type::Q8_0, {64, 32, 4});
        b.tensor(p + "ffn_up_exps.weight", tensor_type::Q4_0, {64, 32, 4});
        b.tensor(p + "ffn_down_exps.weight", tensor_type::F16, {down_ff, 64, 4});
    }
    return b;
}

TEST(model_desc_synthetic, mixed_types_per_part) {
    model_desc d = describe_model(mixtral().f);
    // gate Q8_0 32 rows * 2 blocks * 34, up Q4_0 32 * 2 * 18, down F16 32 * 64 * 2
    EXPECT_EQ(d.layout.max_expert_bytes, 2176u + 1152u + 4096u);
    EXPECT_EQ(d.layout.total_bytes, 8u * (2176u + 1152u + 4096u));
    EXPECT_EQ(d.resident_bytes, 64u * 100 * 4 + 2 * (64u * 64 * 4 + 64u * 4 * 4));
    EXPECT_EQ(d.layout.at(0, 2).ranges[1].type, tensor_type::Q4_0);
}

TEST(model_desc_synthetic, missing_router_is_named) {
    builder b = mixtral();
    b.drop("blk.1.ffn_gate_inp.weight");
    std::string msg = expect_error(b.f);
    EXPECT_NE(msg.find("blk.1.ffn_gate_inp.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("synthetic.model"), std::string::npos) << msg;
}

TEST(model_desc_synthetic, missing_up_projection_is_named) {
    builder b = mixtral();
    b.drop("blk.0.ffn_up_exps.weight");
    std::string msg = expect_error(b.f);
    EXPECT_NE(msg.find("blk.0.ffn_up_exps.weight"), std::string::npos) << msg;
}

TEST(model_desc_synthetic, width_mismatch_with_metadata_names_both_values) {
    std::string msg = expect_error(mixtral(/*ff_meta=*/64).f);
    EXPECT_NE(msg.find("llama.feed_forward_length"), std::string::npos) << msg;
    EXPECT_NE(msg.find("64"), std::string::npos) << msg;
    EXPECT_NE(msg.find("32"), std::string::npos) << msg;
}

TEST(model_desc_synthetic, down_width_contradicting_gate_is_refused) {
    std::string msg = expect_error(mixtral(32, /*down_ff=*/64).f);
    EXPECT_NE(msg.find("blk.0.ffn_down_exps.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("{64, 64, 4}"), std::string::npos) << msg;
}

TEST(model_desc_synthetic, expert_tensor_beyond_block_count_is_refused) {
    builder b = mixtral();
    b.tensor("blk.2.ffn_down_exps.weight", tensor_type::F16, {32, 64, 4});
    std::string msg = expect_error(b.f);
    EXPECT_NE(msg.find("blk.2.ffn_down_exps.weight"), std::string::npos) << msg;
}

TEST(model_desc_synthetic, router_shape_checked) {
    builder b = mixtral();
    b.drop("blk.0.ffn_gate_inp.weight");
    b.tensor("blk.0.ffn_gate_inp.weight", tensor_type::F32, {64, 5});
    std::string msg = expect_error(b.f);
    EXPECT_NE(msg.find("blk.0.ffn_gate_inp.weight"), std::string::npos) << msg;
}

TEST(model_desc_synthetic, bad_counts_and_keys) {
    builder b = mixtral();
    b.f.metadata["llama.expert_used_count"] = u32(5);
    EXPECT_NE(expect_error(b.f).find("top-k"), std::string::npos);

    builder c = mixtral();
    c.f.metadata.erase("llama.block_count");
    EXPECT_NE(expect_error(c.f).find("llama.block_count"), std::string::npos);

    builder a = mixtral();
    a.f.metadata["general.architecture"] = str("mamba");
    EXPECT_NE(expect_error(a.f).find("'mamba'"), std::string::npos);

    builder s = mixtral();
    s.f.metadata["llama.expert_count"] = str("four");
    EXPECT_THROW(describe_model(s.f), error);
}

TEST(model_desc_synthetic, fused_gate_up_deepseek) {
    builder b;
    auto& m = b.f.metadata;
    m["general.architecture"] = str("deepseek2");
    m["deepseek2.block_count"] = u32(2);
    m["deepseek2.embedding_length"] = u32(64);
    m["deepseek2.attention.head_count"] = u32(4);
    m["deepseek2.expert_count"] = u32(8);
    m["deepseek2.expert_used_count"] = u32(2);
    m["deepseek2.expert_shared_count"] = u32(1);
    m["deepseek2.leading_dense_block_count"] = u32(1);
    m["deepseek2.expert_feed_forward_length"] = u32(32);
    b.tensor("blk.0.ffn_gate.weight", tensor_type::F32, {64, 96});
    b.tensor("blk.0.ffn_up.weight", tensor_type::F32, {64, 96});
    b.tensor("blk.0.ffn_down.weight", tensor_type::F32, {96, 64});
    b.tensor("blk.1.ffn_gate_inp.weight", tensor_type::F32, {64, 8});
    b.tensor("blk.1.ffn_gate_up_exps.weight", tensor_type::Q8_0, {64, 64, 8});
    b.tensor("blk.1.ffn_down_exps.weight", tensor_type::Q8_0, {32, 64, 8});
    b.tensor("blk.1.ffn_gate_shexp.weight", tensor_type::F32, {64, 32});
    model_desc d = describe_model(b.f);
    EXPECT_EQ(d.layout.n_moe_layers, 1);
    EXPECT_EQ(d.layout.moe_layers[0], 1);
    const expert_entry& e = d.layout.at(0, 5);
    ASSERT_EQ(e.ranges.size(), 2u);
    EXPECT_EQ(e.ranges[0].part, expert_part::GATE_UP);
    EXPECT_EQ(e.ranges[0].bytes, 64u * 2 * 34);
    EXPECT_EQ(e.ranges[0].offset, b.f.find("blk.1.ffn_gate_up_exps.weight")->offset + 5 * 64u * 2 * 34);
    EXPECT_EQ(e.ranges[1].part, expert_part::DOWN);
    EXPECT_EQ(d.n_ff_exp, 32);

    // a router in a layer the metadata calls dense is a contradiction
    b.f.metadata["deepseek2.leading_dense_block_count"] = u32(2);
    EXPECT_NE(expect_error(b.f).find("leading"), std::string::npos);
}

// HF per-expert tensors, PyTorch shape [out, in] = ne {in, out}.
builder qwen2_hf(bool with_config = true) {
    builder b(model_format::SAFETENSORS);
    if (with_config)
        b.f.config = json{{"model_type", "qwen2_moe"},
                          {"num_hidden_layers", 2},
                          {"hidden_size", 64},
                          {"num_attention_heads", 4},
                          {"num_experts", 2},
                          {"num_experts_per_tok", 1},
                          {"moe_intermediate_size", 32},
                          {"shared_expert_intermediate_size", 48},
                          {"norm_topk_prob", false},
                          {"mlp_only_layers", json::array({0})}};
    b.tensor("model.embed_tokens.weight", tensor_type::BF16, {64, 50});
    b.tensor("model.layers.0.mlp.gate_proj.weight", tensor_type::BF16, {64, 128});  // dense layer 0
    b.tensor("model.layers.0.mlp.down_proj.weight", tensor_type::BF16, {128, 64});
    b.tensor("model.layers.1.mlp.gate.weight", tensor_type::F32, {64, 2});
    for (int e = 0; e < 2; ++e) {
        std::string p = "model.layers.1.mlp.experts." + std::to_string(e) + ".";
        b.tensor(p + "down_proj.weight", tensor_type::BF16, {32, 64});
        b.tensor(p + "gate_proj.weight", tensor_type::BF16, {64, 32});
        b.tensor(p + "up_proj.weight", tensor_type::F16, {64, 32});
    }
    b.tensor("model.layers.1.mlp.shared_expert.gate_proj.weight", tensor_type::BF16, {64, 48});
    b.tensor("model.layers.1.mlp.shared_expert_gate.weight", tensor_type::BF16, {64, 1});
    return b;
}

TEST(model_desc_synthetic, hf_qwen2_moe_dense_layer_and_shared_expert) {
    builder b = qwen2_hf();
    model_desc d = describe_model(b.f);
    EXPECT_EQ(d.architecture, arch::QWEN2MOE);
    EXPECT_EQ(d.layout.moe_layers, (std::vector<int>{1}));
    EXPECT_EQ(d.n_shared_experts, 1);
    EXPECT_EQ(d.n_ff_shexp, 48);
    EXPECT_EQ(d.layout.max_expert_bytes, 3u * 64 * 32 * 2);
    const expert_entry& e = d.layout.at(0, 1);
    EXPECT_EQ(e.ranges[0].tensor, "model.layers.1.mlp.experts.1.gate_proj.weight");
    EXPECT_EQ(e.ranges[1].tensor, "model.layers.1.mlp.experts.1.up_proj.weight");
    EXPECT_EQ(e.ranges[2].tensor, "model.layers.1.mlp.experts.1.down_proj.weight");
    uint64_t resident = 64u * 50 * 2 + 2 * 64u * 128 * 2 + 64u * 2 * 4 + 64u * 48 * 2 + 64u * 2;
    EXPECT_EQ(d.resident_bytes, resident);
}

TEST(model_desc_synthetic, hf_errors) {
    EXPECT_NE(expect_error(qwen2_hf(false).f).find("config.json"), std::string::npos);

    builder w = qwen2_hf();
    w.f.config["moe_intermediate_size"] = 16;
    std::string msg = expect_error(w.f);
    EXPECT_NE(msg.find("moe_intermediate_size"), std::string::npos) << msg;
    EXPECT_NE(msg.find("16"), std::string::npos) << msg;

    builder x = qwen2_hf();
    x.drop("model.layers.1.mlp.experts.1.up_proj.weight");
    EXPECT_NE(expect_error(x.f).find("model.layers.1.mlp.experts.1.up_proj.weight"), std::string::npos);

    builder s = qwen2_hf();
    s.f.config["shared_expert_intermediate_size"] = 64;
    EXPECT_NE(expect_error(s.f).find("shared_expert_intermediate_size"), std::string::npos);

    builder g;
    g.f.format = model_format::SAFETENSORS;
    g.f.config = json{{"model_type", "gpt_oss"},  {"num_hidden_layers", 1}, {"hidden_size", 64},
                      {"num_attention_heads", 4}, {"num_local_experts", 4}, {"num_experts_per_tok", 2}};
    g.tensor("model.layers.0.mlp.router.weight", tensor_type::BF16, {64, 4});
    EXPECT_NE(expect_error(g.f).find("model.layers.0.mlp.experts.gate_up_proj_blocks"), std::string::npos);
}

TEST(model_desc_synthetic, hf_fused_v5_experts_are_sliced) {
    builder b(model_format::SAFETENSORS);
    b.f.config = json{{"model_type", "qwen3_moe"},  {"num_hidden_layers", 1}, {"hidden_size", 64},
                      {"num_attention_heads", 4},   {"num_experts", 4},       {"num_experts_per_tok", 2},
                      {"moe_intermediate_size", 32}};
    b.tensor("model.layers.0.mlp.gate.weight", tensor_type::F32, {64, 4});
    b.tensor("model.layers.0.mlp.experts.gate_up_proj", tensor_type::BF16, {64, 64, 4});
    b.tensor("model.layers.0.mlp.experts.down_proj", tensor_type::BF16, {32, 64, 4});
    model_desc d = describe_model(b.f);
    const expert_entry& e = d.layout.at(0, 3);
    ASSERT_EQ(e.ranges.size(), 2u);
    EXPECT_EQ(e.ranges[0].part, expert_part::GATE_UP);
    EXPECT_EQ(e.ranges[0].offset, b.f.find("model.layers.0.mlp.experts.gate_up_proj")->offset + 3 * 64u * 64 * 2);
    EXPECT_EQ(e.bytes, 64u * 64 * 2 + 32u * 64 * 2);
}

}  // namespace
}  // namespace moe
