// Continuous batching in the forward pass: several sequences advanced together in one step (decode rows of some,
// prompt chunks of others, sequences joining late) give each sequence the logits it gets alone, bit for bit on
// the CPU, at the smallest expert budget where every step evicts; and a malformed step is refused before anything
// changes.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "common/error.h"
#include "runtime/engine.h"
#include "runtime/forward.h"

namespace moe {
namespace {

const std::string k_fx = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/";

std::vector<std::vector<int>> sequences() {
    return {{1, 17, 42, 99, 5, 77, 3, 120},
            {2, 9, 9, 31, 64, 8, 100, 7},
            {5, 4, 3, 2, 1, 0, 6, 11},
            {120, 60, 30, 15, 7, 3, 1, 90}};
}

// Each sequence's every-position logits, decoded alone token by token.
std::vector<std::vector<float>> alone(const std::string& path, const engine_config& cfg) {
    std::vector<std::vector<float>> out;
    for (const std::vector<int>& s : sequences()) {
        engine e(path, cfg);
        const size_t V = size_t(e.desc().n_vocab);
        out.emplace_back(s.size() * V);
        for (size_t i = 0; i < s.size(); ++i) std::memcpy(out.back().data() + i * V, e.decode(s[i]), V * 4);
    }
    return out;
}

void check_batched_matches_alone(const std::string& path) {
    const model_desc d = describe_model(open_model_file(path));
    engine_config cfg;
    cfg.n_ctx = 16;
    cfg.expert_budget_bytes = engine::min_budget_for(d);
    const std::vector<std::vector<float>> want = alone(path, cfg);

    const model m(path, model_config_of(cfg));
    offloader off(offload_layout_of(m.file(), m.desc()), offload_config_of(cfg, m));
    forward_pass fwd(m, off, forward_config{16, 12, 4});
    // Chunk sizes per step: sequence 0 prefills at once, 1 in two chunks, 2 token by token, 3 joins at step 2.
    const std::vector<std::vector<int>> chunks = {{8}, {3, 5}, {1, 1, 1, 1, 1, 1, 1, 1}, {0, 0, 4, 1, 1, 1, 1}};
    const auto seqs = sequences();
    std::vector<size_t> done(seqs.size(), 0);
    const size_t V = size_t(d.n_vocab);
    int n_checked = 0;
    for (size_t step = 0; step < 8; ++step) {
        std::vector<seq_tokens> batch;
        for (size_t s = 0; s < seqs.size(); ++s) {
            const int n = step < chunks[s].size() ? chunks[s][step] : 0;
            if (n == 0) continue;
            batch.push_back(seq_tokens{int(s), std::span<const int>(seqs[s]).subspan(done[s], size_t(n))});
        }
        if (batch.empty()) continue;
        const float* logits = fwd.eval_batch(batch);
        for (size_t i = 0; i < batch.size(); ++i) {
            const size_t s = size_t(batch[i].seq);
            done[s] += batch[i].tokens.size();
            EXPECT_EQ(fwd.n_past(int(s)), int(done[s]));
            EXPECT_EQ(0, std::memcmp(logits + i * V, want[s].data() + (done[s] - 1) * V, V * 4))
                << path << ": sequence " << s << " at position " << done[s] - 1 << " (step " << step << ")";
            ++n_checked;
        }
    }
    EXPECT_EQ(n_checked, 1 + 2 + 8 + 5);
    EXPECT_GT(off.stats().total().evictions, 0u) << "the budget was meant to make the sequences compete";

    // A sequence that is reset starts over and gets its first logits again.
    fwd.reset(2);
    const seq_tokens again{2, std::span<const int>(seqs[2]).first(1)};
    EXPECT_EQ(0, std::memcmp(fwd.eval_batch(std::span<const seq_tokens>(&again, 1)), want[2].data(), V * 4));
}

TEST(forward_batch, sequences_stepped_together_match_each_alone) {
    check_batched_matches_alone(k_fx + "ref/mixtral-f32.gguf");
}

TEST(forward_batch, quantized_and_qk_normed_models_match_too) {
    check_batched_matches_alone(k_fx + "llamacpp/mixtral-kq.gguf");
    check_batched_matches_alone(k_fx + "qwen3moe-tiny-q8_0.gguf");
}

TEST(forward_batch, malformed_steps_are_refused_and_change_nothing) {
    const std::string path = k_fx + "ref/mixtral-f32.gguf";
    const model m(path, model_config{});
    engine_config cfg;
    offloader off(offload_layout_of(m.file(), m.desc()), offload_config_of(cfg, m));
    forward_pass fwd(m, off, forward_config{8, 4, 2});
    const std::vector<int> a = {1, 2, 3}, b = {4, 5};
    const std::vector<seq_tokens> twice = {{0, a}, {0, b}};
    EXPECT_THROW(fwd.eval_batch(twice), error);
    const std::vector<seq_tokens> too_many = {{0, a}, {1, b}};  // 5 rows > n_batch 4
    EXPECT_THROW(fwd.eval_batch(too_many), error);
    const std::vector<seq_tokens> no_such = {{2, a}};
    EXPECT_THROW(fwd.eval_batch(no_such), error);
    const std::vector<seq_tokens> empty_seq = {{0, std::span<const int>()}};
    EXPECT_THROW(fwd.eval_batch(empty_seq), error);
    const std::vector<int> bad = {1, m.desc().n_vocab};
    const std::vector<seq_tokens> bad_token = {{1, bad}};
    EXPECT_THROW(fwd.eval_batch(bad_token), error);
    EXPECT_THROW(fwd.eval_batch({}), error);
    EXPECT_EQ(fwd.n_past(0), 0);
    EXPECT_EQ(fwd.n_past(1), 0);
    // The context of one sequence fills up on its own.
    const std::vector<int> four = {1, 2, 3, 4};
    const std::vector<seq_tokens> fill = {{1, four}};
    fwd.eval_batch(fill);
    fwd.eval_batch(fill);
    EXPECT_EQ(fwd.n_past(1), 8);
    const std::vector<seq_tokens> both = {{0, b}, {1, b}};
    EXPECT_THROW(fwd.eval_batch(both), error);
    EXPECT_EQ(fwd.n_past(0), 0) << "a refused step changes no sequence";
}

}  // namespace
}  // namespace moe
