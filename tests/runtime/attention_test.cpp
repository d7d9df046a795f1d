// The CPU backend's attention (backend_cpu::attention / attention_batch): a hand-checked causal batch, the
// two-pass softmax written out (exactly its bits while the context fits one block of positions, within double
// rounding beyond), and the invariant the forward pass rests on: the same bits for every thread count, every
// batch split and the per-token entry point, at contexts that span several blocks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "runtime/backend_cpu.h"

namespace moe {
namespace {

constexpr int k_block = backend_cpu::attention_block_positions;

struct shape {
    int n_head, n_head_kv, hd_k, hd_v;
};

// A KV cache of n_pos positions and queries for all of them, random but with a position-dependent drift in the
// keys so the softmax is peaked and its max moves from block to block.
struct attn_data {
    shape s;
    int n_pos;
    std::vector<float> q, k, v;
};

attn_data make_data(shape s, int n_pos, uint64_t seed) {
    attn_data d{s, n_pos, {}, {}, {}};
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    d.q.resize(size_t(n_pos) * size_t(s.n_head) * size_t(s.hd_k));
    d.k.resize(size_t(n_pos) * size_t(s.n_head_kv) * size_t(s.hd_k));
    d.v.resize(size_t(n_pos) * size_t(s.n_head_kv) * size_t(s.hd_v));
    for (auto& x : d.q) x = nd(rng);
    for (size_t i = 0; i < d.k.size(); ++i) {
        const int pos = int(i / (size_t(s.n_head_kv) * size_t(s.hd_k)));
        d.k[i] = nd(rng) * (1.0f + 2.0f * float(pos % 700) / 700.0f);
    }
    for (auto& x : d.v) x = nd(rng);
    return d;
}

float scale_of(const shape& s) {
    return float(1.0 / std::sqrt(double(s.hd_k)));
}

// Outputs (n_tok, n_head, hd_v) of tokens at positions [pos0, pos0 + n_tok), in one attention_batch call.
std::vector<float> run_batch(backend_cpu& be, const attn_data& d, int pos0, int n_tok) {
    const shape& s = d.s;
    std::vector<float> out(size_t(n_tok) * size_t(s.n_head) * size_t(s.hd_v), NAN);
    std::vector<float> scores(size_t(s.n_head) * size_t(pos0 + n_tok), NAN);
    be.attention_batch(d.q.data() + size_t(pos0) * size_t(s.n_head) * size_t(s.hd_k), d.k.data(), d.v.data(),
                       out.data(), scores.data(), s.n_head, s.n_head_kv, s.hd_k, s.hd_v, pos0, n_tok, scale_of(s));
    return out;
}

// The same tokens through attention(), one token at a time (a decode).
std::vector<float> run_per_token(backend_cpu& be, const attn_data& d, int pos0, int n_tok) {
    const shape& s = d.s;
    const size_t row_q = size_t(s.n_head) * size_t(s.hd_k), row_o = size_t(s.n_head) * size_t(s.hd_v);
    std::vector<float> out(size_t(n_tok) * row_o, NAN);
    for (int t = 0; t < n_tok; ++t) {
        const int n_kv = pos0 + t + 1;
        std::vector<float> scores(size_t(s.n_head) * size_t(n_kv), NAN);
        be.attention(d.q.data() + size_t(pos0 + t) * row_q, d.k.data(), d.v.data(), out.data() + size_t(t) * row_o,
                     scores.data(), s.n_head, s.n_head_kv, s.hd_k, s.hd_v, n_kv, scale_of(s));
    }
    return out;
}

// Every position [0, n_pos) prefilled in chunks of n_batch tokens.
std::vector<float> run_chunked(backend_cpu& be, const attn_data& d, int n_batch) {
    std::vector<float> all;
    for (int pos0 = 0; pos0 < d.n_pos; pos0 += n_batch) {
        const auto part = run_batch(be, d, pos0, std::min(n_batch, d.n_pos - pos0));
        all.insert(all.end(), part.begin(), part.end());
    }
    return all;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The straightforward formula, one (position, head) at a time: scores rounded to float as the backend does,
// then a two-pass softmax with every sum in double and in position order.
std::vector<float> reference(const attn_data& d, int pos) {
    const shape& s = d.s;
    const int n_kv = pos + 1, group = s.n_head / s.n_head_kv;
    std::vector<float> out(size_t(s.n_head) * size_t(s.hd_v));
    std::vector<double> sc(static_cast<size_t>(n_kv));
    for (int h = 0; h < s.n_head; ++h) {
        const float* q = d.q.data() + (size_t(pos) * size_t(s.n_head) + size_t(h)) * size_t(s.hd_k);
        const int kh = h / group;
        double mx = -INFINITY;
        for (int t = 0; t < n_kv; ++t) {
            const float* k = d.k.data() + (size_t(t) * size_t(s.n_head_kv) + size_t(kh)) * size_t(s.hd_k);
            double dot = 0.0;
            for (int i = 0; i < s.hd_k; ++i) dot += double(q[i]) * double(k[i]);
            sc[size_t(t)] = double(float(dot * scale_of(s)));
            mx = std::max(mx, sc[size_t(t)]);
        }
        double sum = 0.0;
        for (int t = 0; t < n_kv; ++t) sum += std::exp(sc[size_t(t)] - mx);
        for (int i = 0; i < s.hd_v; ++i) {
            double acc = 0.0;
            for (int t = 0; t < n_kv; ++t)
                acc += std::exp(sc[size_t(t)] - mx) *
                       double(d.v[(size_t(t) * size_t(s.n_head_kv) + size_t(kh)) * size_t(s.hd_v) + size_t(i)]);
            out[size_t(h) * size_t(s.hd_v) + size_t(i)] = float(acc / sum);
        }
    }
    return out;
}

TEST(backend_cpu_attention, batch_hand_case_is_causal) {
    backend_cpu be;
    // 2 query heads sharing 1 kv head, head dim 2, three cached positions; two query tokens at positions 1 and 2.
    const float k[] = {1, 0, 0, 1, 1, 1};    // t=0 (1,0), t=1 (0,1), t=2 (1,1)
    const float v[] = {1, 2, 3, 4, 10, 20};  // t=0 (1,2), t=1 (3,4), t=2 (10,20)
    const float q[] = {1, 0, 0, 2,           // token at position 1: head 0 (1,0), head 1 (0,2)
                       0, 0, 1, 1};          // token at position 2: head 0 zero, head 1 (1,1)
    float out[8], scores[6];
    be.attention_batch(q, k, v, out, scores, 2, 1, 2, 2, 1, 2, 1.0f);
    auto mix2 = [](double s0, double s1, double v0, double v1) {
        const double e0 = std::exp(s0), e1 = std::exp(s1);
        return (e0 * v0 + e1 * v1) / (e0 + e1);
    };
    auto mix3 = [](double s0, double s1, double s2, double v0, double v1, double v2) {
        const double e0 = std::exp(s0), e1 = std::exp(s1), e2 = std::exp(s2);
        return (e0 * v0 + e1 * v1 + e2 * v2) / (e0 + e1 + e2);
    };
    // Position 1 sees t = 0, 1 only. Head 0: scores 1, 0. Head 1: scores 0, 2.
    EXPECT_NEAR(out[0], mix2(1, 0, 1, 3), 1e-6);
    EXPECT_NEAR(out[1], mix2(1, 0, 2, 4), 1e-6);
    EXPECT_NEAR(out[2], mix2(0, 2, 1, 3), 1e-6);
    EXPECT_NEAR(out[3], mix2(0, 2, 2, 4), 1e-6);
    // Position 2 sees all three. Head 0: q = 0, the plain average. Head 1: scores 1, 1, 2.
    EXPECT_NEAR(out[4], (1 + 3 + 10) / 3.0, 1e-6);
    EXPECT_NEAR(out[5], (2 + 4 + 20) / 3.0, 1e-6);
    EXPECT_NEAR(out[6], mix3(1, 1, 2, 1, 3, 10), 1e-5);
    EXPECT_NEAR(out[7], mix3(1, 1, 2, 2, 4, 20), 1e-5);
    // Scale multiplies every score.
    be.attention_batch(q, k, v, out, scores, 2, 1, 2, 2, 1, 2, 0.5f);
    EXPECT_NEAR(out[2], mix2(0, 1, 1, 3), 1e-6);
    EXPECT_NEAR(out[7], mix3(0.5, 0.5, 1, 2, 4, 20), 1e-5);
    // A single token at position 0 returns its value whatever the scores.
    be.attention_batch(q, k, v, out, scores, 2, 1, 2, 2, 0, 1, 1.0f);
    EXPECT_FLOAT_EQ(out[0], 1.0f);
    EXPECT_FLOAT_EQ(out[3], 2.0f);
}

// A later position's keys and values never reach an earlier token of the same batch.
TEST(backend_cpu_attention, batch_ignores_positions_after_each_token) {
    const shape s{4, 2, 8, 8};
    attn_data d = make_data(s, 40, 7);
    backend_cpu be;
    const auto before = run_batch(be, d, 10, 30);
    for (size_t i = size_t(25) * size_t(s.n_head_kv) * size_t(s.hd_k); i < d.k.size(); ++i) d.k[i] = 1e3f;
    for (size_t i = size_t(25) * size_t(s.n_head_kv) * size_t(s.hd_v); i < d.v.size(); ++i) d.v[i] = -1e3f;
    const auto after = run_batch(be, d, 10, 30);
    const size_t row = size_t(s.n_head) * size_t(s.hd_v);
    // Tokens at positions 10..24 (the first 15 of the batch) are untouched; position 25 onwards changes.
    EXPECT_EQ(0, std::memcmp(before.data(), after.data(), 15 * row * sizeof(float)));
    EXPECT_NE(0, std::memcmp(before.data() + 15 * row, after.data() + 15 * row, row * sizeof(float)));
}

// Within one block of positions the result is exactly the two-pass softmax, bit for bit; across blocks (the
// online merge) it agrees to double rounding, far below float resolution.
TEST(backend_cpu_attention, matches_the_two_pass_formula) {
    const shape s{4, 2, 16, 12};
    const int n_pos = 3 * k_block + 123;
    const attn_data d = make_data(s, n_pos, 11);
    backend_cpu be;
    for (int pos : {0, 1, 37, k_block - 1}) {
        EXPECT_TRUE(same_bits(run_batch(be, d, pos, 1), reference(d, pos))) << "position " << pos;
    }
    for (int pos : {k_block, k_block + 1, 2 * k_block + 5, n_pos - 1}) {
        const auto got = run_batch(be, d, pos, 1), want = reference(d, pos);
        for (size_t i = 0; i < got.size(); ++i)
            ASSERT_NEAR(got[i], want[i], 2e-6 * (1.0 + std::fabs(want[i]))) << "position " << pos << " [" << i << "]";
    }
}

// The invariant: for each (token, head) the same bits whatever the thread count (1, 2, 3; every call forced
// onto the pool), whatever the batch split, and through the per-token entry point, at a context of several
// blocks. Shapes: few heads (decode on 2-3 threads splits a token's positions into blocks), many heads, and
// heads wider than the workspace held at first.
TEST(backend_cpu_attention, bit_identical_across_threads_batches_and_per_token) {
    const shape shapes[] = {{4, 2, 16, 16}, {8, 8, 8, 4}, {2, 1, 8, 264}};
    for (const shape& s : shapes) {
        const int n_pos = 2 * k_block + 77;
        const attn_data d = make_data(s, n_pos, 3);
        const std::string what = "heads " + std::to_string(s.n_head) + "/" + std::to_string(s.n_head_kv) + " hd " +
                                 std::to_string(s.hd_k) + "/" + std::to_string(s.hd_v);
        backend_cpu one(0, 1);
        const auto want = run_chunked(one, d, n_pos);  // one batch of every position, one thread
        for (int n_threads : {1, 2, 3}) {
            backend_cpu be(0, n_threads, 1);
            for (int n_batch : {1, 7, 32, n_pos})
                EXPECT_TRUE(same_bits(run_chunked(be, d, n_batch), want))
                    << what << " threads " << n_threads << " n_batch " << n_batch;
            // Decode-like calls late in the context: one token each, through both entry points.
            for (int pos : {k_block - 1, k_block, n_pos - 1}) {
                const size_t row = size_t(s.n_head) * size_t(s.hd_v);
                const std::vector<float> slice(want.begin() + std::ptrdiff_t(size_t(pos) * row),
                                               want.begin() + std::ptrdiff_t(size_t(pos + 1) * row));
                EXPECT_TRUE(same_bits(run_batch(be, d, pos, 1), slice))
                    << what << " threads " << n_threads << " batch of one at " << pos;
                EXPECT_TRUE(same_bits(run_per_token(be, d, pos, 1), slice))
                    << what << " threads " << n_threads << " attention() at " << pos;
            }
        }
    }
}

// A long context (several thousand positions, a dozen blocks) against the formula, and its bits on 1 and 3
// threads, in a decode call and in a prefill chunk that ends there.
TEST(backend_cpu_attention, long_context_against_the_formula) {
    const shape s{4, 2, 16, 16};
    const int n_pos = 6000;
    const attn_data d = make_data(s, n_pos, 5);
    backend_cpu one(0, 1), three(0, 3, 1);
    const auto got = run_batch(one, d, n_pos - 1, 1), want = reference(d, n_pos - 1);
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 2e-6 * (1.0 + std::fabs(want[i]))) << i;
    EXPECT_TRUE(same_bits(run_batch(three, d, n_pos - 1, 1), got));
    const auto chunk = run_batch(three, d, n_pos - 32, 32);
    EXPECT_TRUE(same_bits(std::vector<float>(chunk.end() - std::ptrdiff_t(got.size()), chunk.end()), got));
    EXPECT_TRUE(same_bits(run_batch(one, d, n_pos - 32, 32), chunk));
}

}  // namespace
}  // namespace moe
