// Greedy generation (engine + sampler, the loop `moe run` runs) against independent references:
//  - the first generated token after every prefix of every reference prompt equals the argmax of Hugging Face
//    transformers' logits at that position (tests/fixtures/ref: ref.json / ref.bin);
//  - every later token equals the argmax of a teacher-forced evaluation of prompt + generated tokens in batches
//    (engine::logits: a different code path from prefill + one-token decodes);
//  - the tokens are identical whatever the expert budget (smallest, middle, unlimited), policy and prefetch.
// The token lists pinned here are the ones tests/runtime/tests_run.cmake expects from the `moe run` CLI.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/engine.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer.h"

namespace moe {
namespace {

const std::string k_fx = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/";

int argmax(const float* l, int n) {
    return int(std::max_element(l, l + n) - l);
}

std::vector<int> generate(engine& eng, const std::vector<int>& prompt, int n) {
    sampler s(sampler_config{});
    eng.reset();
    const float* logits = eng.prefill(prompt);
    std::vector<int> out;
    while (true) {
        out.push_back(s.sample(std::span<const float>(logits, size_t(eng.desc().n_vocab))));
        if (int(out.size()) == n) return out;
        logits = eng.decode(out.back());
    }
}

engine_config config(uint64_t budget, const std::string& policy = "lru", bool prefetch = false) {
    engine_config c;
    c.n_ctx = 64;
    c.expert_budget_bytes = budget;
    c.policy = policy;
    c.prefetch.mode = prefetch ? prefetch_mode::SPEC : prefetch_mode::NONE;
    return c;
}

// Teacher forcing: evaluate prompt + gen[:-1] in one call; the argmax after position p-1+i must be gen[i].
void expect_teacher_forced(engine& eng, const std::vector<int>& prompt, const std::vector<int>& gen) {
    std::vector<int> all = prompt;
    all.insert(all.end(), gen.begin(), gen.end() - 1);
    const int V = eng.desc().n_vocab;
    std::vector<float> logits(all.size() * size_t(V));
    eng.logits(all, logits);
    for (size_t i = 0; i < gen.size(); ++i)
        EXPECT_EQ(argmax(logits.data() + (prompt.size() - 1 + i) * size_t(V), V), gen[i]) << "generated token " << i;
}

TEST(generate, first_token_after_every_prefix_is_the_transformers_argmax) {
    std::ifstream jf(k_fx + "ref/ref.json");
    ASSERT_TRUE(jf.good());
    const nlohmann::json j = nlohmann::json::parse(jf);
    std::ifstream bf(k_fx + "ref/ref.bin", std::ios::binary);
    const std::vector<char> blob((std::istreambuf_iterator<char>(bf)), std::istreambuf_iterator<char>());
    int checked = 0;
    for (const auto& m : j["models"]) {
        // deepseek2 and gpt-oss references are committed ahead of their forward pass (forward_test checks the refusal)
        const std::string path = k_fx + "ref/" + m["gguf"].get<std::string>();
        const model_desc d = describe_model(open_model_file(path));
        if (!forward_supported(d.architecture) || d.rope_scale.type != rope_scaling_type::NONE) continue;
        engine eng(path, config(0));
        const int V = m["n_vocab"];
        size_t off = m["logits_offset"];
        for (const auto& p : m["prompts"]) {
            const std::vector<int> prompt = p.get<std::vector<int>>();
            std::vector<float> ref(prompt.size() * size_t(V));
            ASSERT_LE((off + ref.size()) * 4, blob.size());
            std::memcpy(ref.data(), blob.data() + off * 4, ref.size() * 4);
            off += ref.size();
            for (size_t n = 1; n <= prompt.size(); ++n) {
                const std::vector<int> prefix(prompt.begin(), prompt.begin() + long(n));
                EXPECT_EQ(generate(eng, prefix, 1)[0], argmax(ref.data() + (n - 1) * size_t(V), V))
                    << m["name"] << " prefix of " << n << " tokens";
                ++checked;
            }
        }
    }
    EXPECT_EQ(checked, 4 * (8 + 7));
}

struct case_def {
    std::string model;
    std::vector<int> prompt;  // empty: encode `text`
    std::string text;
    int n = 0;
    std::vector<int> want;
    std::vector<uint64_t> budgets;  // smallest, middle (0 = unlimited is always added)
};

const std::vector<case_def>& cases() {
    static const std::vector<case_def> c = {
        {"ref/mixtral-f32.gguf",
         {1, 17, 42, 99, 5, 77, 3, 120},
         "",
         8,
         {11, 37, 52, 18, 77, 67, 11, 18},
         {24 << 10, 36 << 10, 60 << 10}},
        {"ref/qwen3moe-f32.gguf",
         {1, 17, 42, 99, 5, 77, 3, 120},
         "",
         8,
         {108, 108, 108, 108, 6, 80, 108, 114},
         {16 << 10, 40 << 10}},
        {"mixtral-tiny-f32.gguf",
         {},
         "Hello world",
         16,
         {94, 106, 80, 38, 94, 106, 80, 38, 38, 38, 38, 38, 38, 38, 38, 38},
         {48 << 10, 72 << 10, 120 << 10}},
    };
    return c;
}

TEST(generate, greedy_tokens_match_teacher_forcing_and_every_cache_setting) {
    for (const case_def& c : cases()) {
        SCOPED_TRACE(c.model);
        std::vector<int> prompt = c.prompt;
        if (prompt.empty()) {
            const tokenizer tok = tokenizer::from_file(k_fx + c.model);
            for (int32_t t : tok.encode(c.text)) prompt.push_back(int(t));
            ASSERT_EQ(prompt.size(), 11u);
        }
        engine ref_eng(k_fx + c.model, config(0));
        const std::vector<int> gen = generate(ref_eng, prompt, c.n);
        EXPECT_EQ(gen, c.want);
        expect_teacher_forced(ref_eng, prompt, gen);

        std::vector<uint64_t> budgets = c.budgets;
        budgets.push_back(0);
        for (uint64_t b : budgets)
            for (const char* policy : {"lru", "lru-layer", "lfu", "lfu-recent"})
                for (bool pf : {false, true}) {
                    // lru-layer needs every layer's share of the slots to hold its top_k (moe run refuses less),
                    // and twice that with speculative prefetch (moe run turns prefetch off below it).
                    if (!std::strcmp(policy, "lru-layer") && b != 0) {
                        const model_desc& d = ref_eng.desc();
                        const uint64_t share = b / engine::slot_bytes_for(d) / uint64_t(d.layout.n_moe_layers);
                        if (share < uint64_t(d.n_experts_used) * (pf ? 2 : 1)) continue;
                    }
                    SCOPED_TRACE(testing::Message() << "budget " << b << " policy " << policy << " prefetch " << pf);
                    engine eng(k_fx + c.model, config(b, policy, pf));
                    EXPECT_EQ(generate(eng, prompt, c.n), gen);
                    EXPECT_EQ(generate(eng, prompt, c.n), gen);  // a second sequence on a warm cache
                }
    }
}

}  // namespace
}  // namespace moe
