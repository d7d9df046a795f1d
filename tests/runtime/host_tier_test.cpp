// The engine's host tier (engine_config::host_budget_bytes: compute-tier cache <- tiered loader <- host cache <-
// file): the logits are memcmp-identical with and without it (a host tier only changes where bytes come from),
// both budgets are hard caps, every compute-tier load is one host access, experts the compute tier evicted come
// back from RAM (host hits) and the file is read once per expert when RAM holds them all; a host tier smaller
// than the tier above it is refused with the size it needs.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"
#include "runtime/engine.h"
#include "runtime/resident_weights.h"

namespace moe {
namespace {

const std::string k_ref = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/ref/";

std::vector<float> run_logits(engine& e, const std::vector<int>& prompt) {
    std::vector<float> out(prompt.size() * size_t(e.desc().n_vocab));
    e.logits(prompt, out);
    return out;
}

TEST(host_tier, logits_bit_identical_with_and_without_and_budgets_hold) {
    std::ifstream jf(k_ref + "ref.json");
    ASSERT_TRUE(jf.good());
    const nlohmann::json j = nlohmann::json::parse(jf);
    int n_models = 0;
    for (const auto& m : j["models"]) {
        const std::string path = k_ref + m["gguf"].get<std::string>();
        const model_desc d = describe_model(open_model_file(path));
        if (!forward_supported(d.architecture) || d.rope_scale.type != rope_scaling_type::NONE) continue;
        SCOPED_TRACE(path);
        ++n_models;
        const std::vector<int> prompt = m["prompts"][0].get<std::vector<int>>();
        const uint64_t slot = engine::slot_bytes_for(d), min = engine::min_budget_for(d);
        const uint64_t n_keys = uint64_t(d.layout.n_moe_layers) * uint64_t(d.layout.n_experts);

        engine_config base;
        base.n_ctx = 64;
        base.expert_budget_bytes = min;
        engine plain(path, base);
        const std::vector<float> want = run_logits(plain, prompt);
        EXPECT_FALSE(plain.has_host_tier());
        EXPECT_TRUE(plain.host_stats().layers.empty());
        const layer_stats plain_top = plain.stats().total();
        engine_config unlimited = base;
        unlimited.expert_budget_bytes = 0;
        engine all(path, unlimited);
        run_logits(all, prompt);
        run_logits(all, prompt);
        const uint64_t distinct = all.stats().total().loads;  // every expert the prompt uses, loaded once

        // Host tier: as small as allowed (the compute tier's slot count), in between, and room for every expert.
        for (uint64_t host : {min, min + 2 * slot + slot / 2, n_keys * slot}) {
            SCOPED_TRACE(testing::Message() << "host budget " << host);
            engine_config c = base;
            c.host_budget_bytes = host;
            engine e(path, c);
            ASSERT_TRUE(e.has_host_tier());
            EXPECT_EQ(e.n_host_slots(), uint32_t(std::min(host / slot, n_keys)));
            EXPECT_LE(uint64_t(e.n_host_slots()) * slot, host);  // the host budget is a hard cap
            EXPECT_LE(uint64_t(e.n_expert_slots()) * e.expert_slot_bytes(), min);
            for (int rep = 0; rep < 2; ++rep) {  // the second run starts from warm caches
                const std::vector<float> got = run_logits(e, prompt);
                ASSERT_EQ(got.size(), want.size());
                EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float))) << "run " << rep;
                if (rep == 0) {  // the compute tier sees the same accesses and makes the same choices
                    const layer_stats t = e.stats().total();
                    EXPECT_EQ(t.hits, plain_top.hits);
                    EXPECT_EQ(t.misses, plain_top.misses);
                    EXPECT_EQ(t.loads, plain_top.loads);
                    EXPECT_EQ(t.evictions, plain_top.evictions);
                }
            }
            const layer_stats top = e.stats().total(), low = e.host_stats().total();
            EXPECT_EQ(low.hits + low.misses, top.loads);  // each compute-tier load is one host access
            EXPECT_EQ(low.failed_loads, 0u);
            if (host >= n_keys * slot) {
                // RAM holds every expert: the file is read once per distinct expert (what an unlimited compute
                // tier loads), and every other compute-tier load is a RAM hit.
                EXPECT_EQ(low.evictions, 0u);
                EXPECT_EQ(low.loads, distinct);
                EXPECT_EQ(low.misses, distinct);
                EXPECT_EQ(low.hits, top.loads - distinct);
                EXPECT_GT(low.hits, 0u);
            }
        }
    }
    EXPECT_GE(n_models, 4);
}

TEST(host_tier, smaller_than_the_tier_above_is_refused) {
    const std::string path = k_ref + "mixtral-f32.gguf";
    const model_desc d = describe_model(open_model_file(path));
    engine_config c;
    c.n_ctx = 16;
    c.expert_budget_bytes = 3 * engine::slot_bytes_for(d);
    c.host_budget_bytes = 3 * engine::slot_bytes_for(d) - 1;
    try {
        engine e(path, c);
        FAIL() << "no exception";
    } catch (const error& err) {
        const std::string msg = err.what();
        EXPECT_NE(msg.find("mixtral-f32.gguf: host budget"), std::string::npos) << msg;
        EXPECT_NE(msg.find("needs at least " + std::to_string(3 * engine::slot_bytes_for(d)) + " bytes"),
                  std::string::npos)
            << msg;
    }
}

}  // namespace
}  // namespace moe
