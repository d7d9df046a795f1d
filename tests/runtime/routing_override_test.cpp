// The routing override of the forward pass (benchmarks: a recorded trace replayed in place of the router) on the
// tiny reference Mixtral (2 MoE layers x 4 experts, top-2): the observer sees the override's rows (short rows
// filled from the router's picks), the logits stay bit-identical at every expert budget, replaying the router's
// own choices changes nothing, and a trace of another shape, or without rows for some layer, is refused.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cache/trace.h"
#include "common/error.h"
#include "runtime/engine.h"
#include "runtime/model_desc.h"
#include "runtime/model_file.h"
#include "runtime/trace_routing.h"

namespace moe {
namespace {

const std::string k_model = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/ref/mixtral-f32.gguf";

struct seen {
    int pos, layer;
    std::vector<int> experts;
    std::vector<float> weights;
};

std::vector<int> prompt_of(const model_desc& d, size_t n) {
    std::vector<int> p(n);
    for (size_t i = 0; i < n; ++i) p[i] = int((i * 37 + 11) % size_t(d.n_vocab));
    return p;
}

engine_config config(uint64_t budget, int n_batch) {
    engine_config c;
    c.expert_budget_bytes = budget;
    c.n_batch = n_batch;
    return c;
}

// Rows the override gives: two experts for most (token, layer) pairs, one for every third (filled by the router).
std::vector<int> fixed_row(int pos, int layer) {
    const int a = (pos + 3 * layer) % 4;
    if (pos % 3 == 2) return {a};
    return {a, (a + 1 + pos % 2) % 4};
}

std::vector<float> run_logits(const engine_config& cfg, const std::vector<int>& prompt, const routing_override& ovr,
                              std::vector<seen>* obs = nullptr) {
    engine e(k_model, cfg);
    e.get_session().set_routing_override(ovr);
    if (obs)
        e.set_routing_observer([obs](int pos, int layer, std::span<const int> ex, std::span<const float> w) {
            obs->push_back({pos, layer, {ex.begin(), ex.end()}, {w.begin(), w.end()}});
        });
    std::vector<float> out(prompt.size() * size_t(e.desc().n_vocab));
    e.logits(prompt, out);
    return out;
}

TEST(routing_override, observer_sees_the_override_rows) {
    const model_desc d = describe_model(open_model_file(k_model));
    ASSERT_EQ(d.layout.n_moe_layers, 2);
    ASSERT_EQ(d.n_experts, 4);
    ASSERT_EQ(d.n_experts_used, 2);
    const std::vector<int> prompt = prompt_of(d, 9);
    std::vector<seen> obs;
    const routing_override ovr = [](int pos, int layer, std::vector<int>& ex) { ex = fixed_row(pos, layer); };
    run_logits(config(0, 4), prompt, ovr, &obs);
    ASSERT_EQ(obs.size(), prompt.size() * 2);
    for (const seen& s : obs) {
        const std::vector<int> want = fixed_row(s.pos, s.layer);
        ASSERT_EQ(s.experts.size(), 2u);
        if (want.size() == 2) {
            EXPECT_EQ(s.experts, want) << "pos " << s.pos << " layer " << s.layer;
        } else {
            EXPECT_EQ(s.experts[0], want[0]) << "pos " << s.pos << " layer " << s.layer;
            EXPECT_NE(s.experts[1], want[0]);
        }
        for (float w : s.weights) EXPECT_TRUE(w > 0.0f && w <= 1.0f);
        if (d.norm_topk) {
            EXPECT_NEAR(s.weights[0] + s.weights[1], float(d.weights_scale), 1e-5);
        }
    }
}

TEST(routing_override, logits_are_bit_identical_at_every_budget) {
    const model_desc d = describe_model(open_model_file(k_model));
    const std::vector<int> prompt = prompt_of(d, 11);
    const routing_override ovr = [](int pos, int layer, std::vector<int>& ex) { ex = fixed_row(pos, layer); };
    const std::vector<float> full = run_logits(config(0, 4), prompt, ovr);
    const std::vector<float> small = run_logits(config(engine::min_budget_for(d), 4), prompt, ovr);
    ASSERT_EQ(full.size(), small.size());
    EXPECT_EQ(0, std::memcmp(full.data(), small.data(), full.size() * sizeof(float)));
    // The override does change the answer (it is not the router's routing).
    const std::vector<float> router = run_logits(config(0, 4), prompt, routing_override{});
    EXPECT_NE(0, std::memcmp(full.data(), router.data(), full.size() * sizeof(float)));
}

TEST(routing_override, replaying_the_routers_own_trace_changes_nothing) {
    const model_desc d = describe_model(open_model_file(k_model));
    const std::vector<int> prompt = prompt_of(d, 10);
    std::vector<seen> obs;
    const std::vector<float> want = run_logits(config(0, 3), prompt, routing_override{}, &obs);
    routing_trace t;
    t.model = "recorded";
    t.n_layers = uint32_t(d.layout.n_moe_layers);
    t.n_experts = uint32_t(d.n_experts);
    t.top_k = uint32_t(d.n_experts_used);
    for (const seen& s : obs) {
        trace_row r;
        r.token = uint32_t(s.pos);
        r.layer = uint32_t(s.layer);
        for (int e : s.experts) r.experts.push_back(uint32_t(e));
        t.rows.push_back(r);
    }
    for (uint64_t budget : {uint64_t(0), engine::min_budget_for(d)}) {
        std::vector<seen> replay;
        const std::vector<float> got =
            run_logits(config(budget, 3), prompt, trace_routing_override(t, d, "recorded"), &replay);
        ASSERT_EQ(got.size(), want.size());
        EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float))) << "budget " << budget;
        ASSERT_EQ(replay.size(), obs.size());
        for (size_t i = 0; i < obs.size(); ++i) {
            EXPECT_EQ(replay[i].experts, obs[i].experts);
            EXPECT_EQ(replay[i].weights, obs[i].weights);
        }
    }
}

// The router's own experts in the other rank order: the weights recomputed from the router logits are the
// router's, swapped (the host follows the router's arithmetic).
TEST(routing_override, weights_are_the_routers_probabilities) {
    const model_desc d = describe_model(open_model_file(k_model));
    const std::vector<int> prompt = prompt_of(d, 7);
    std::vector<seen> obs;
    run_logits(config(0, 4), prompt, routing_override{}, &obs);
    const auto reversed = [&obs](int pos, int layer, std::vector<int>& ex) {
        for (const seen& s : obs)
            if (s.pos == pos && s.layer == layer) ex.assign(s.experts.rbegin(), s.experts.rend());
    };
    std::vector<seen> got;
    run_logits(config(0, 4), prompt, reversed, &got);
    ASSERT_EQ(got.size(), obs.size());
    for (size_t i = 0; i < obs.size(); ++i) {
        EXPECT_EQ(got[i].experts, std::vector<int>(obs[i].experts.rbegin(), obs[i].experts.rend()));
        EXPECT_EQ(got[i].weights, std::vector<float>(obs[i].weights.rbegin(), obs[i].weights.rend()));
    }
}

TEST(routing_override, trace_cursors_wrap_per_layer) {
    const model_desc d = describe_model(open_model_file(k_model));
    routing_trace t;
    t.n_layers = 2, t.n_experts = 4, t.top_k = 2;
    // Layer 1's rows interleaved with layer 0's: each layer takes its own in file order.
    t.rows.push_back({0, 0, 1, {3, 2}, {}});
    t.rows.push_back({0, 0, 0, {0, 1}, {}});
    t.rows.push_back({0, 1, 0, {2, 3}, {}});
    std::vector<seen> obs;
    run_logits(config(0, 2), prompt_of(d, 5), trace_routing_override(t, d, "t"), &obs);
    ASSERT_EQ(obs.size(), 10u);
    for (const seen& s : obs) {
        const std::vector<int> want =
            s.layer == 1 ? std::vector<int>{3, 2} : (s.pos % 2 == 0 ? std::vector<int>{0, 1} : std::vector<int>{2, 3});
        EXPECT_EQ(s.experts, want) << "pos " << s.pos << " layer " << s.layer;
    }
}

TEST(routing_override, refuses_a_trace_of_another_shape) {
    const model_desc d = describe_model(open_model_file(k_model));
    routing_trace t;
    t.n_layers = 2, t.n_experts = 8, t.top_k = 2;
    t.rows.push_back({0, 0, 0, {0, 1}, {}});
    t.rows.push_back({0, 0, 1, {0, 1}, {}});
    try {
        trace_routing_override(t, d, "wide.trace");
        FAIL() << "accepted a trace of 8 experts";
    } catch (const error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("wide.trace"), std::string::npos) << msg;
        EXPECT_NE(msg.find("2 MoE layers x 8 experts, top-2"), std::string::npos) << msg;
        EXPECT_NE(msg.find("2 MoE layers x 4 experts, top-2"), std::string::npos) << msg;
    }
    t.n_experts = 4, t.top_k = 1;
    EXPECT_THROW(trace_routing_override(t, d, "t"), error);
    t.top_k = 2, t.n_layers = 3;
    EXPECT_THROW(trace_routing_override(t, d, "t"), error);
    // No row for layer 1.
    t.n_layers = 2;
    t.rows.pop_back();
    try {
        trace_routing_override(t, d, "half.trace");
        FAIL() << "accepted a trace without rows for layer 1";
    } catch (const error& e) {
        EXPECT_NE(std::string(e.what()).find("no row for MoE layer 1"), std::string::npos) << e.what();
    }
    // The committed hand-written trace has the model's shape.
    const routing_trace tiny = read_trace(std::string(MOE_SOURCE_DIR) + "/tests/fixtures/traces/tiny.trace");
    EXPECT_NO_THROW(trace_routing_override(tiny, d, "tiny.trace"));
}

TEST(routing_override, refuses_bad_rows_from_the_override) {
    const model_desc d = describe_model(open_model_file(k_model));
    const std::vector<int> prompt = prompt_of(d, 3);
    for (const std::vector<int>& bad : {std::vector<int>{}, std::vector<int>{4}, std::vector<int>{1, 1},
                                        std::vector<int>{0, 1, 2}, std::vector<int>{-1}}) {
        engine e(k_model, config(0, 4));
        e.get_session().set_routing_override([&](int, int, std::vector<int>& ex) { ex = bad; });
        std::vector<float> out(prompt.size() * size_t(d.n_vocab));
        EXPECT_THROW(e.logits(prompt, out), error) << bad.size();
    }
}

}  // namespace
}  // namespace moe
