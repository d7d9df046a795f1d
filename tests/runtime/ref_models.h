// The reference models of tests/fixtures/ref (scripts/make_reference_logits.py): tiny random Mixtral, Qwen3-MoE,
// OLMoE and Qwen2-MoE with transformers' logits for each prompt, the error measure the forward tests use, and
// the engine run over every prompt of a model that they compare.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/engine.h"
#include "runtime/model_desc.h"
#include "runtime/model_file.h"
#include "runtime/resident_weights.h"

namespace moe::test {

inline const std::string k_ref_dir = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/ref/";

struct ref_model {
    std::string name, gguf, hf, gguf_q8_0;  // hf / gguf_q8_0: empty when not committed for this model
    int n_vocab = 0;
    std::vector<std::vector<int>> prompts;
    std::vector<std::vector<float>> logits;       // per prompt: (n_tok, n_vocab)
    std::vector<std::vector<float>> q8_0_logits;  // the same for the Q8_0 variant (transformers on its weights)
};

inline std::vector<ref_model> load_refs() {
    std::ifstream jf(k_ref_dir + "ref.json");
    EXPECT_TRUE(jf.good()) << "missing " << k_ref_dir << "ref.json";
    nlohmann::json j = nlohmann::json::parse(jf);
    std::ifstream bf(k_ref_dir + "ref.bin", std::ios::binary);
    std::vector<char> blob((std::istreambuf_iterator<char>(bf)), std::istreambuf_iterator<char>());
    auto read = [&](size_t& off, size_t n) {
        std::vector<float> l(n);
        EXPECT_LE((off + n) * 4, blob.size());
        if ((off + n) * 4 <= blob.size()) std::memcpy(l.data(), blob.data() + off * 4, n * 4);
        off += n;
        return l;
    };
    std::vector<ref_model> out;
    for (const auto& m : j["models"]) {
        // deepseek2 and gpt-oss references are committed ahead of their forward pass (forward_test checks the refusal)
        const model_desc d = describe_model(open_model_file(k_ref_dir + m["gguf"].get<std::string>()));
        if (!forward_supported(d.architecture) || d.rope_scale.type != rope_scaling_type::NONE) continue;
        ref_model r;
        r.name = m["name"];
        r.gguf = k_ref_dir + m["gguf"].get<std::string>();
        if (m["hf"].is_string()) r.hf = k_ref_dir + m["hf"].get<std::string>();
        r.n_vocab = m["n_vocab"];
        size_t off = m["logits_offset"].get<size_t>();
        for (const auto& p : m["prompts"]) {
            r.prompts.push_back(p.get<std::vector<int>>());
            r.logits.push_back(read(off, r.prompts.back().size() * size_t(r.n_vocab)));
        }
        if (m.contains("gguf_q8_0") && m["gguf_q8_0"].is_string()) {
            r.gguf_q8_0 = k_ref_dir + m["gguf_q8_0"].get<std::string>();
            size_t q = m["q8_0_logits_offset"].get<size_t>();
            for (const auto& pr : r.prompts) r.q8_0_logits.push_back(read(q, pr.size() * size_t(r.n_vocab)));
        }
        out.push_back(std::move(r));
    }
    return out;
}

// Worst per-position relative error over a prompt: max over positions of max|a-b| / max|b|.
inline double max_rel_error(const std::vector<float>& ours, const std::vector<float>& ref, int n_vocab) {
    double worst = 0.0;
    for (size_t p = 0; p * size_t(n_vocab) < ref.size(); ++p) {
        double diff = 0.0, scale = 0.0;
        for (int i = 0; i < n_vocab; ++i) {
            const size_t k = p * size_t(n_vocab) + size_t(i);
            diff = std::max(diff, double(std::fabs(ours[k] - ref[k])));
            scale = std::max(scale, double(std::fabs(ref[k])));
        }
        worst = std::max(worst, diff / scale);
    }
    return worst;
}

// Every prompt of m through e (from position 0 each, all positions' logits): per prompt (n_tok, n_vocab).
inline std::vector<std::vector<float>> run_all(engine& e, const ref_model& m) {
    std::vector<std::vector<float>> out;
    for (const auto& p : m.prompts) {
        std::vector<float> l(p.size() * size_t(m.n_vocab));
        e.logits(p, l);
        out.push_back(std::move(l));
    }
    return out;
}

}  // namespace moe::test
