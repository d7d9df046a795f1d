// Prefetch never changes the answer, end to end: greedy generation with the reference fixture models (every one
// the forward pass supports) gives the same tokens and bit-identical logits at every decode step for prefetch
// none / spec / history / both, depth 1 and 2, at the smallest workable, tight, middle and unlimited expert
// budgets, on a cold cache and again on a warm one. And the prefetcher does something: at a middle budget spec
// prefetch brings some of the needed experts (recall > 0), and the statistics hold together (every used prefetch
// was a prefetch load; nothing is counted as failed).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/error.h"
#include "runtime/engine.h"
#include "runtime/sampler.h"

namespace moe {
namespace {

const std::string k_ref = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/ref/";

struct run_result {
    std::vector<int> tokens;
    std::vector<float> logits;  // every step's logits, concatenated
};

// Two sequences (the second on the cache the first left behind), greedy, n tokens each.
run_result generate(engine& eng, int n) {
    run_result out;
    const size_t V = size_t(eng.desc().n_vocab);
    for (std::vector<int> prompt : {std::vector<int>{1, 17, 42, 99, 5, 77, 3, 120}, std::vector<int>{1, 5, 9}}) {
        for (int& t : prompt) t %= int(V);
        sampler s(sampler_config{});
        eng.reset();
        const float* logits = eng.prefill(prompt);
        for (int i = 0;; ++i) {
            out.logits.insert(out.logits.end(), logits, logits + V);
            out.tokens.push_back(s.sample(std::span<const float>(logits, V)));
            if (i + 1 == n) break;
            logits = eng.decode(out.tokens.back());
        }
    }
    return out;
}

engine_config config(uint64_t budget, prefetch_mode mode, int depth) {
    engine_config c;
    c.n_ctx = 64;
    c.expert_budget_bytes = budget;
    c.prefetch.mode = mode;
    c.prefetch.depth = depth;
    return c;
}

TEST(prefetcher_e2e, tokens_and_logits_are_identical_for_every_mode_depth_and_budget) {
    int n_models = 0;
    for (const char* name : {"mixtral-f32.gguf", "qwen3moe-f32.gguf", "olmoe-f32.gguf", "qwen2moe-f32.gguf",
                             "deepseek2-f32.gguf", "gpt-oss-f32.gguf"}) {
        const std::string path = k_ref + name;
        std::unique_ptr<engine> ref;
        try {
            ref = std::make_unique<engine>(path, config(0, prefetch_mode::NONE, 1));
        } catch (const error& e) {
            std::printf("[ skip     ] %s: %s\n", name, e.what());  // an architecture the forward pass refuses
            continue;
        }
        ++n_models;
        SCOPED_TRACE(name);
        const run_result want = generate(*ref, 10);
        const model_desc& d = ref->desc();
        const uint64_t slot = engine::slot_bytes_for(d), K = uint64_t(d.n_experts_used);
        const uint64_t n_all = uint64_t(d.layout.n_moe_layers) * uint64_t(d.n_experts);
        const uint64_t middle = slot * (n_all / 2);
        for (uint64_t budget : {slot * K, slot * (K + 1), slot * (K + 3), middle, uint64_t(0)})
            for (prefetch_mode mode :
                 {prefetch_mode::NONE, prefetch_mode::SPEC, prefetch_mode::HISTORY, prefetch_mode::BOTH})
                for (int depth : {1, 2}) {
                    if (mode == prefetch_mode::NONE && depth == 2) continue;
                    SCOPED_TRACE(testing::Message() << "budget " << budget << " prefetch " << prefetch_mode_name(mode)
                                                    << " depth " << depth);
                    engine eng(path, config(budget, mode, depth));
                    run_result got;
                    try {
                        got = generate(eng, 10);
                    } catch (const error& e) {
                        ADD_FAILURE() << e.what();
                        continue;
                    }
                    EXPECT_EQ(got.tokens, want.tokens);
                    ASSERT_EQ(got.logits.size(), want.logits.size());
                    EXPECT_EQ(0, std::memcmp(got.logits.data(), want.logits.data(), got.logits.size() * sizeof(float)));
                    const layer_stats t = eng.stats().total();
                    EXPECT_EQ(t.failed_loads, 0u);
                    EXPECT_LE(t.prefetch_used(), t.prefetch_loads);
                    EXPECT_LE(t.prefetch_wasted(), t.prefetch_loads);
                    EXPECT_LE(t.prefetch_unused_evictions, t.evictions);
                    if (mode == prefetch_mode::NONE) {
                        EXPECT_EQ(t.prefetch_loads, 0u);
                        EXPECT_TRUE(eng.prefetch_stats().empty());
                        continue;
                    }
                    prefetcher_layer_stats p;
                    for (const auto& l : eng.prefetch_stats()) p += l;
                    EXPECT_EQ(p.guesses, p.issued + p.already + p.skipped);
                    EXPECT_EQ(p.issued, t.prefetch_loads) << "every prefetch load is one the prefetcher issued";
                    EXPECT_EQ(p.needed, uint64_t(18) * uint64_t(d.layout.n_moe_layers) * K) << "18 decode steps";
                    if (budget == slot * K) {
                        EXPECT_EQ(p.issued, 0u) << "the smallest budget has no slot to spare";
                    }
                    if (budget == middle && mode == prefetch_mode::SPEC) {
                        EXPECT_GT(t.prefetch_recall(), 0.0);
                        EXPECT_GT(p.prediction_recall(), 0.0);
                    }
                    std::printf(
                        "[ pf       ] %-18s budget %7llu (%3u slots) %-7s depth %d: recall %5.1f%% precision %5.1f%% "
                        "prediction %5.1f%% hit rate %5.1f%% loads %3llu (pf %3llu) wasted %llu\n",
                        name, (unsigned long long)budget, eng.n_expert_slots(),
                        std::string(prefetch_mode_name(mode)).c_str(), depth, 100.0 * t.prefetch_recall(),
                        100.0 * t.prefetch_precision(), 100.0 * p.prediction_recall(), 100.0 * t.hit_rate(),
                        (unsigned long long)t.loads, (unsigned long long)t.prefetch_loads,
                        (unsigned long long)t.prefetch_wasted());
                }
    }
    EXPECT_GE(n_models, 2);
}

}  // namespace
}  // namespace moe
