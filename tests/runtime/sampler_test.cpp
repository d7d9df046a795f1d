// The sampler against hand-computed distributions: temperature 0 is argmax (lowest id on ties), llama.cpp's
// repetition penalty (positive logits divided, negative multiplied, each distinct recent token once), top-k /
// top-p / min-p cut-offs on the pre-temperature softmax, temperature reshaping what survives, draws that follow
// the distribution, and one seed giving one sequence.
#include "runtime/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/error.h"

namespace moe {
namespace {

// logits 0, ln 2, ln 4, ln 1 = 0 for id 3: softmax (T = 1) is 1/8, 2/8, 4/8, 1/8.
const std::vector<float> k_logits = {0.0f, float(std::log(2.0)), float(std::log(4.0)), 0.0f};

sampler make(float temp, int top_k = 0, float top_p = 1.0f, float min_p = 0.0f, float rp = 1.0f, uint64_t seed = 1) {
    sampler_config c;
    c.temperature = temp;
    c.top_k = top_k;
    c.top_p = top_p;
    c.min_p = min_p;
    c.repeat_penalty = rp;
    c.seed = seed;
    return sampler(c);
}

void expect_dist(const std::vector<token_prob>& got, const std::vector<token_prob>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
        EXPECT_EQ(got[i].id, want[i].id) << "rank " << i;
        EXPECT_NEAR(got[i].p, want[i].p, 1e-6) << "rank " << i;
    }
}

TEST(sampler, greedy_is_argmax_lowest_id_on_ties) {
    sampler s = make(0.0f);
    EXPECT_EQ(s.sample(k_logits), 2);
    const std::vector<float> tie = {1.0f, 5.0f, 5.0f, -3.0f};
    EXPECT_EQ(s.sample(tie), 1);
    expect_dist(s.distribution(tie), {{1, 1.0f}});
    // A negative temperature is greedy too.
    EXPECT_EQ(make(-1.0f).sample(k_logits), 2);
}

TEST(sampler, temperature_one_is_softmax) {
    expect_dist(make(1.0f).distribution(k_logits), {{2, 0.5f}, {1, 0.25f}, {0, 0.125f}, {3, 0.125f}});
}

TEST(sampler, temperature_two_flattens) {
    // logits / 2 -> weights 1, sqrt 2, 2, 1 (sum 4 + sqrt 2).
    const double s = 4.0 + std::sqrt(2.0);
    expect_dist(make(2.0f).distribution(k_logits),
                {{2, float(2.0 / s)}, {1, float(std::sqrt(2.0) / s)}, {0, float(1.0 / s)}, {3, float(1.0 / s)}});
}

TEST(sampler, top_k_keeps_the_k_most_likely) {
    expect_dist(make(1.0f, 2).distribution(k_logits), {{2, 4.0f / 6.0f}, {1, 2.0f / 6.0f}});
    expect_dist(make(1.0f, 1).distribution(k_logits), {{2, 1.0f}});
    // top-k larger than the vocab keeps everything.
    EXPECT_EQ(make(1.0f, 100).distribution(k_logits).size(), 4u);
}

TEST(sampler, top_p_keeps_the_smallest_prefix_reaching_p) {
    expect_dist(make(1.0f, 0, 0.5f).distribution(k_logits), {{2, 1.0f}});                           // 0.5 >= 0.5
    expect_dist(make(1.0f, 0, 0.6f).distribution(k_logits), {{2, 4.0f / 6.0f}, {1, 2.0f / 6.0f}});  // 0.75 >= 0.6
    // 0.875 >= 0.8: three kept; the tie between ids 0 and 3 keeps the lower id.
    expect_dist(make(1.0f, 0, 0.8f).distribution(k_logits), {{2, 4.0f / 7.0f}, {1, 2.0f / 7.0f}, {0, 1.0f / 7.0f}});
}

TEST(sampler, min_p_drops_tokens_below_a_fraction_of_the_best) {
    // best p = 0.5; min-p 0.3 -> cut 0.15: 0.25 stays, 0.125 goes.
    expect_dist(make(1.0f, 0, 1.0f, 0.3f).distribution(k_logits), {{2, 4.0f / 6.0f}, {1, 2.0f / 6.0f}});
    // min-p 0.2 -> cut 0.1: everything stays.
    EXPECT_EQ(make(1.0f, 0, 1.0f, 0.2f).distribution(k_logits).size(), 4u);
    // min-p 0.6 -> cut 0.3: only the best.
    expect_dist(make(1.0f, 0, 1.0f, 0.6f).distribution(k_logits), {{2, 1.0f}});
}

TEST(sampler, cutoffs_use_the_softmax_before_temperature) {
    // top-p 0.6 keeps ids 2 and 1 (as at T = 1); T = 2 then spreads them: weights 2 and sqrt 2.
    const double s = 2.0 + std::sqrt(2.0);
    expect_dist(make(2.0f, 0, 0.6f).distribution(k_logits), {{2, float(2.0 / s)}, {1, float(std::sqrt(2.0) / s)}});
}

TEST(sampler, repetition_penalty_follows_llama_cpp) {
    std::vector<float> l = {2.0f, -2.0f, 1.0f, 0.5f, 0.0f};
    const std::vector<int> recent = {0, 1, 0, 4};  // 0 twice: penalised once
    sampler::apply_repetition_penalty(l, recent, 2.0f);
    EXPECT_FLOAT_EQ(l[0], 1.0f);   // positive: divided
    EXPECT_FLOAT_EQ(l[1], -4.0f);  // negative: multiplied
    EXPECT_FLOAT_EQ(l[2], 1.0f);   // not recent
    EXPECT_FLOAT_EQ(l[3], 0.5f);
    EXPECT_FLOAT_EQ(l[4], 0.0f);
}

TEST(sampler, repetition_penalty_changes_the_greedy_pick_within_the_window) {
    sampler_config c;
    c.repeat_penalty = 4.0f;
    c.repeat_last_n = 2;
    sampler s(c);
    EXPECT_EQ(s.sample(k_logits), 2);
    s.accept(2);  // ln 4 / 4 = 0.35 < ln 2 = 0.69: id 1 wins
    EXPECT_EQ(s.sample(k_logits), 1);
    s.accept(1);  // ln 2 / 4 = 0.17; id 2 still penalised: 0.35 wins
    EXPECT_EQ(s.sample(k_logits), 2);
    s.accept(7);
    s.accept(8);  // the window of 2 no longer holds 2 or 1
    EXPECT_EQ(s.sample(k_logits), 2);
}

TEST(sampler, draws_follow_the_distribution) {
    sampler s = make(1.0f, 0, 1.0f, 0.0f, 1.0f, 42);
    const int n = 40000;
    std::vector<int> count(4, 0);
    for (int i = 0; i < n; ++i) ++count[size_t(s.sample(k_logits))];
    const double want[4] = {0.125, 0.25, 0.5, 0.125};
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(double(count[size_t(i)]) / n, want[i], 0.01) << "id " << i;
}

TEST(sampler, same_seed_same_tokens) {
    std::vector<float> l(64);
    for (size_t i = 0; i < l.size(); ++i) l[i] = float(std::sin(double(i) * 0.7)) * 3.0f;
    auto run = [&](uint64_t seed) {
        sampler s = make(0.9f, 40, 0.95f, 0.02f, 1.1f, seed);
        std::vector<int> out;
        for (int i = 0; i < 200; ++i) {
            out.push_back(s.sample(l));
            s.accept(out.back());
        }
        return out;
    };
    const std::vector<int> a = run(7);
    EXPECT_EQ(a, run(7));
    EXPECT_NE(a, run(8));
}

TEST(sampler, rejects_out_of_range_settings) {
    EXPECT_THROW(make(1.0f, 0, 0.0f), error);
    EXPECT_THROW(make(1.0f, 0, 1.0f, 1.5f), error);
    EXPECT_THROW(make(1.0f, 0, 1.0f, 0.0f, 0.0f), error);
}

}  // namespace
}  // namespace moe
