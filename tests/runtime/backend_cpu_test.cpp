// The CPU reference backend, op by op, against hand-computed values or the naive formula written out in the test:
// matvec over F32/F16/BF16/Q8_0, RMSNorm, RoPE in both conventions (and the llama.cpp converter identity between
// them), grouped-query attention, routing (softmax / sigmoid / softmax over the selected, renormalisation, scale,
// ties), SwiGLU and the rank-ordered weighted sum.
#include "runtime/backend_cpu.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "runtime/dequant.h"

namespace moe {
namespace {

TEST(backend_cpu, matvec_f32_hand_case) {
    backend_cpu be;
    const float W[] = {1, 2, 3, -1, 0, 0.5f};  // 2 rows x 3 cols
    const float x[] = {1, -1, 2};
    float y[2];
    be.matvec(tensor_type::F32, W, x, y, 3, 2);
    EXPECT_FLOAT_EQ(y[0], 1 - 2 + 6);
    EXPECT_FLOAT_EQ(y[1], -1 + 0 + 1);
    float Y[4];
    const float X[] = {1, -1, 2, 0, 1, 0};
    be.matmul(tensor_type::F32, W, X, Y, 3, 2, 2);
    EXPECT_FLOAT_EQ(Y[0], 5);
    EXPECT_FLOAT_EQ(Y[1], 0);
    EXPECT_FLOAT_EQ(Y[2], 2);
    EXPECT_FLOAT_EQ(Y[3], 0);
}

TEST(backend_cpu, matvec_half_types_and_q8_0) {
    backend_cpu be(64);
    // Values exactly representable in F16 and BF16, so the expected products are exact.
    const float w[] = {0.5f, -2.0f, 1.25f, 4.0f, -0.75f, 3.0f, 0.125f, -1.0f};
    const float x[] = {1.0f, 2.0f, -4.0f, 0.5f};
    const float want[] = {0.5f - 4.0f - 5.0f + 2.0f, -0.75f + 6.0f - 0.5f - 0.5f};
    uint16_t h[8], b[8];
    for (int i = 0; i < 8; ++i) h[i] = f32_to_fp16(w[i]), b[i] = f32_to_bf16(w[i]);
    float y[2];
    be.matvec(tensor_type::F16, h, x, y, 4, 2);
    EXPECT_FLOAT_EQ(y[0], want[0]);
    EXPECT_FLOAT_EQ(y[1], want[1]);
    be.matvec(tensor_type::BF16, b, x, y, 4, 2);
    EXPECT_FLOAT_EQ(y[0], want[0]);
    EXPECT_FLOAT_EQ(y[1], want[1]);

    // Q8_0: one block of 32 = fp16 scale d, then 32 int8 quants; value = d * q.
    uint8_t blk[34];
    const uint16_t d = f32_to_fp16(0.25f);
    std::memcpy(blk, &d, 2);  // little-endian host
    float xs[32], expect = 0.0f;
    for (int i = 0; i < 32; ++i) {
        const int8_t q = int8_t(i - 16);
        std::memcpy(blk + 2 + i, &q, 1);
        xs[i] = float(i % 3) - 1.0f;
        expect += 0.25f * float(q) * xs[i];
    }
    float yq;
    be.matvec(tensor_type::Q8_0, blk, xs, &yq, 32, 1);
    EXPECT_FLOAT_EQ(yq, expect);
}

// Rows are split over threads, never a reduction: any thread count gives the same bits as one thread, and the
// product is the naive double-accumulated dot product.
TEST(backend_cpu, matvec_threads_are_bit_identical) {
    const int64_t cols = 96, rows = 257;  // rows not a multiple of the thread count
    std::vector<float> W(static_cast<size_t>(cols * rows)), x(static_cast<size_t>(cols));
    for (size_t i = 0; i < W.size(); ++i) W[i] = std::sin(0.37f * float(i)) * 0.5f;
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::cos(0.11f * float(i));
    std::vector<uint8_t> q8(size_t(rows) * size_t(cols / 32) * 34);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t b = 0; b < cols / 32; ++b) {
            uint8_t* blk = q8.data() + (size_t(r) * size_t(cols / 32) + size_t(b)) * 34;
            const uint16_t d = f32_to_fp16(0.01f * float(1 + (r + b) % 7));
            std::memcpy(blk, &d, 2);
            for (int i = 0; i < 32; ++i) blk[2 + i] = uint8_t(int8_t((r * 31 + b * 7 + i * 13) % 255 - 127));
        }
    backend_cpu one(cols, 1);
    std::vector<float> want(static_cast<size_t>(rows)), want_q(static_cast<size_t>(rows));
    one.matvec(tensor_type::F32, W.data(), x.data(), want.data(), cols, rows);
    one.matvec(tensor_type::Q8_0, q8.data(), x.data(), want_q.data(), cols, rows);
    for (int64_t r = 0; r < rows; ++r) {
        double acc = 0.0;
        for (int64_t c = 0; c < cols; ++c) acc += double(W[size_t(r * cols + c)]) * double(x[size_t(c)]);
        EXPECT_EQ(want[size_t(r)], float(acc));
    }
    for (int n_threads : {2, 3, 8}) {
        backend_cpu many(cols, n_threads, 1);
        EXPECT_EQ(many.n_threads(), n_threads);
        std::vector<float> got(static_cast<size_t>(rows)), got_q(static_cast<size_t>(rows));
        for (int rep = 0; rep < 3; ++rep) {  // the pool is reused across calls
            many.matvec(tensor_type::F32, W.data(), x.data(), got.data(), cols, rows);
            many.matvec(tensor_type::Q8_0, q8.data(), x.data(), got_q.data(), cols, rows);
            EXPECT_EQ(0, std::memcmp(got.data(), want.data(), want.size() * sizeof(float))) << n_threads;
            EXPECT_EQ(0, std::memcmp(got_q.data(), want_q.data(), want_q.size() * sizeof(float))) << n_threads;
        }
        float tiny[2];
        many.matvec(tensor_type::F32, W.data(), x.data(), tiny, cols, 2);  // fewer rows than threads
        EXPECT_EQ(tiny[1], want[1]);
    }
}

TEST(backend_cpu, rmsnorm_hand_case) {
    backend_cpu be;
    const float x[] = {3, 4};
    const float w[] = {1, 2};
    float y[2];
    be.rmsnorm(x, w, y, 2, 0.0f);  // mean square 12.5
    const float inv = 1.0f / std::sqrt(12.5f);
    EXPECT_FLOAT_EQ(y[0], 3 * inv);
    EXPECT_FLOAT_EQ(y[1], 8 * inv);
    be.rmsnorm(x, nullptr, y, 2, 7.5f);  // eps inside the root: sqrt(12.5 + 7.5) = sqrt(20)
    EXPECT_FLOAT_EQ(y[0], 3 / std::sqrt(20.0f));
    float z[] = {3, 4};
    be.rmsnorm(z, w, z, 2, 0.0f);  // in place
    EXPECT_FLOAT_EQ(z[1], 8 * inv);
}

TEST(backend_cpu, rope_norm_and_neox_hand_cases) {
    backend_cpu be;
    // head_dim 4, n_rot 4, base 10000, pos 1: theta_0 = 1, theta_1 = 10000^(-1/2) = 0.01.
    const double c0 = std::cos(1.0), s0 = std::sin(1.0), c1 = std::cos(0.01), s1 = std::sin(0.01);
    float a[] = {1, 0, 0, 1};
    be.rope(a, 1, 4, 4, 1, 10000.0f, rope_style::NORM);  // pairs (0,1) by theta_0 and (2,3) by theta_1
    EXPECT_NEAR(a[0], c0, 1e-6);
    EXPECT_NEAR(a[1], s0, 1e-6);
    EXPECT_NEAR(a[2], -s1, 1e-6);
    EXPECT_NEAR(a[3], c1, 1e-6);
    float b[] = {1, 0, 0, 1};
    be.rope(b, 1, 4, 4, 1, 10000.0f, rope_style::NEOX);  // pairs (0,2) by theta_0 and (1,3) by theta_1
    EXPECT_NEAR(b[0], c0, 1e-6);
    EXPECT_NEAR(b[2], s0, 1e-6);
    EXPECT_NEAR(b[1], -s1, 1e-6);
    EXPECT_NEAR(b[3], c1, 1e-6);
    // Position 0 is the identity; dims beyond n_rot are left alone; heads are independent.
    float c[] = {1, 2, 3, 4, 5, 6, 7, 8};
    be.rope(c, 2, 4, 2, 0, 10000.0f, rope_style::NEOX);
    for (int i = 0; i < 8; ++i) EXPECT_EQ(c[i], float(i + 1));
    float e[] = {1, 2, 3, 4, 1, 2, 3, 4};
    be.rope(e, 2, 4, 2, 3, 10000.0f, rope_style::NORM);
    EXPECT_NEAR(e[0], std::cos(3.0) - 2 * std::sin(3.0), 1e-5);
    EXPECT_EQ(e[2], 3.0f);
    EXPECT_EQ(e[3], 4.0f);
    EXPECT_EQ(e[4], e[0]);
}

TEST(backend_cpu, rope_norm_on_converter_permuted_rows_equals_neox) {
    // llama.cpp's converter permutes q/k rows per head: new[2i] = old[i], new[2i+1] = old[i + hd/2]. Then NORM on
    // the permuted vector is NEOX on the original one, permuted the same way.
    backend_cpu be;
    const int hd = 8, H = 2;
    float orig[H * hd], perm[H * hd];
    for (int i = 0; i < H * hd; ++i) orig[i] = std::sin(1.7f * float(i) + 0.3f);
    for (int h = 0; h < H; ++h)
        for (int i = 0; i < hd / 2; ++i) {
            perm[h * hd + 2 * i] = orig[h * hd + i];
            perm[h * hd + 2 * i + 1] = orig[h * hd + i + hd / 2];
        }
    be.rope(orig, H, hd, hd, 5, 10000.0f, rope_style::NEOX);
    be.rope(perm, H, hd, hd, 5, 10000.0f, rope_style::NORM);
    for (int h = 0; h < H; ++h)
        for (int i = 0; i < hd / 2; ++i) {
            EXPECT_FLOAT_EQ(perm[h * hd + 2 * i], orig[h * hd + i]);
            EXPECT_FLOAT_EQ(perm[h * hd + 2 * i + 1], orig[h * hd + i + hd / 2]);
        }
}

TEST(backend_cpu, attention_gqa_hand_case) {
    backend_cpu be;
    // 4 query heads, 2 kv heads (heads 0,1 -> kv 0; heads 2,3 -> kv 1), head dim 2, two cached positions.
    const float q[] = {1, 0, 0, 1, 2, 0, 0, 0};
    // k_cache (n_kv=2, n_head_kv=2, 2)
    const float k[] = {1, 0, 0, 1,    // t=0: kv0 = (1,0), kv1 = (0,1)
                       0, 1, 1, 0};   // t=1: kv0 = (0,1), kv1 = (1,0)
    const float v[] = {1, 2, 10, 20,  // t=0
                       3, 4, 30, 40};
    float out[8], scores[8];
    be.attention(q, k, v, out, scores, 4, 2, 2, 2, 2, 1.0f);
    auto mix = [](double s0, double s1, double v0, double v1) {
        const double e0 = std::exp(s0), e1 = std::exp(s1);
        return (e0 * v0 + e1 * v1) / (e0 + e1);
    };
    // head 0: q=(1,0) . kv0 keys: t0 1, t1 0
    EXPECT_NEAR(out[0], mix(1, 0, 1, 3), 1e-6);
    EXPECT_NEAR(out[1], mix(1, 0, 2, 4), 1e-6);
    // head 1: q=(0,1): t0 0, t1 1
    EXPECT_NEAR(out[2], mix(0, 1, 1, 3), 1e-6);
    // head 2: q=(2,0) . kv1 keys: t0 0, t1 2
    EXPECT_NEAR(out[4], mix(0, 2, 10, 30), 1e-5);
    EXPECT_NEAR(out[5], mix(0, 2, 20, 40), 1e-5);
    // head 3: q = 0: uniform average of kv1 values
    EXPECT_NEAR(out[6], 20.0, 1e-5);
    EXPECT_NEAR(out[7], 30.0, 1e-5);
    // Scale multiplies the scores; one position returns its value whatever the scores.
    be.attention(q, k, v, out, scores, 4, 2, 2, 2, 2, 0.5f);
    EXPECT_NEAR(out[4], mix(0, 1, 10, 30), 1e-5);
    be.attention(q, k, v, out, scores, 4, 2, 2, 2, 1, 1.0f);
    EXPECT_FLOAT_EQ(out[0], 1.0f);
    EXPECT_FLOAT_EQ(out[5], 20.0f);
}

TEST(backend_cpu, routing_softmax_renorm_topk) {
    backend_cpu be;
    // probs proportional to 1, 2, 4, 1 -> 1/8, 2/8, 4/8, 1/8
    const float logits[] = {0.0f, std::log(2.0f), std::log(4.0f), 0.0f};
    float probs[4], w[2];
    int ids[2];
    be.route(logits, probs, 4, 2, gating_func::SOFTMAX, false, 1.0f, ids, w);
    EXPECT_EQ(ids[0], 2);
    EXPECT_EQ(ids[1], 1);
    EXPECT_NEAR(w[0], 0.5, 1e-6);
    EXPECT_NEAR(w[1], 0.25, 1e-6);
    be.route(logits, probs, 4, 2, gating_func::SOFTMAX, true, 1.0f, ids, w);  // renormalised: 4/6, 2/6
    EXPECT_NEAR(w[0], 4.0 / 6.0, 1e-6);
    EXPECT_NEAR(w[1], 2.0 / 6.0, 1e-6);
    be.route(logits, probs, 4, 2, gating_func::SOFTMAX, true, 2.5f, ids, w);  // scaled after renormalising
    EXPECT_NEAR(w[0], 2.5 * 4.0 / 6.0, 1e-6);
    // top-1 of the same logits
    be.route(logits, probs, 4, 1, gating_func::SOFTMAX, true, 1.0f, ids, w);
    EXPECT_EQ(ids[0], 2);
    EXPECT_FLOAT_EQ(w[0], 1.0f);
}

TEST(backend_cpu, routing_sigmoid_and_softmax_weight) {
    backend_cpu be;
    const float logits[] = {0.0f, 2.0f, -1.0f, 1.0f};
    float probs[4], w[2];
    int ids[2];
    be.route(logits, probs, 4, 2, gating_func::SIGMOID, false, 1.0f, ids, w);
    EXPECT_EQ(ids[0], 1);
    EXPECT_EQ(ids[1], 3);
    EXPECT_NEAR(w[0], 1.0 / (1.0 + std::exp(-2.0)), 1e-6);
    EXPECT_NEAR(w[1], 1.0 / (1.0 + std::exp(-1.0)), 1e-6);
    be.route(logits, probs, 4, 2, gating_func::SIGMOID, true, 1.0f, ids, w);
    const double a = 1.0 / (1.0 + std::exp(-2.0)), b = 1.0 / (1.0 + std::exp(-1.0));
    EXPECT_NEAR(w[0], a / (a + b), 1e-6);
    // gpt-oss: top-k on the raw logits, softmax over the selected only.
    be.route(logits, probs, 4, 2, gating_func::SOFTMAX_WEIGHT, false, 1.0f, ids, w);
    EXPECT_EQ(ids[0], 1);
    EXPECT_EQ(ids[1], 3);
    EXPECT_NEAR(w[0], std::exp(1.0) / (std::exp(1.0) + 1.0), 1e-6);
    EXPECT_NEAR(w[1], 1.0 / (std::exp(1.0) + 1.0), 1e-6);
}

TEST(backend_cpu, routing_ties_go_to_the_lower_id) {
    backend_cpu be;
    const float logits[] = {0.5f, 1.0f, 1.0f, 1.0f, 0.0f};
    float probs[5], w[3];
    int ids[3];
    be.route(logits, probs, 5, 2, gating_func::SOFTMAX, true, 1.0f, ids, w);
    EXPECT_EQ(ids[0], 1);
    EXPECT_EQ(ids[1], 2);
    EXPECT_FLOAT_EQ(w[0], 0.5f);
    be.route(logits, probs, 5, 3, gating_func::SIGMOID, false, 1.0f, ids, w);
    EXPECT_EQ(ids[0], 1);
    EXPECT_EQ(ids[1], 2);
    EXPECT_EQ(ids[2], 3);
    // A NaN score is never picked over a number.
    const float nan_logits[] = {NAN, 0.0f, -1.0f};
    float p3[3];
    be.route(nan_logits, p3, 3, 2, gating_func::SOFTMAX_WEIGHT, false, 1.0f, ids, w);
    EXPECT_EQ(ids[0], 1);
    EXPECT_EQ(ids[1], 2);
}

TEST(backend_cpu, swiglu_hand_case) {
    backend_cpu be;
    const float g[] = {0.0f, 1.0f, -1.0f, 20.0f};
    const float u[] = {2.0f, 3.0f, 4.0f, 0.5f};
    float out[4];
    be.swiglu(g, u, out, 4);
    EXPECT_FLOAT_EQ(out[0], 0.0f);
    EXPECT_NEAR(out[1], 3.0 / (1.0 + std::exp(-1.0)), 1e-6);
    EXPECT_NEAR(out[2], 4.0 * -1.0 / (1.0 + std::exp(1.0)), 1e-6);
    EXPECT_NEAR(out[3], 0.5 * 20.0 / (1.0 + std::exp(-20.0)), 1e-5);
}

TEST(backend_cpu, weighted_sum_is_in_rank_order) {
    backend_cpu be;
    // In float, (1e8 + 1) - 1e8 == 0 but (1e8 - 1e8) + 1 == 1: the result shows the summation order.
    const float y0[] = {1e8f, 2.0f}, y1[] = {1.0f, 3.0f}, y2[] = {-1e8f, 4.0f};
    const float* ys[] = {y0, y1, y2};
    const float w[] = {1.0f, 1.0f, 1.0f};
    float out[2];
    be.weighted_sum(ys, w, 3, out, 2);
    EXPECT_EQ(out[0], 0.0f);
    EXPECT_EQ(out[1], 9.0f);
    const float* ys2[] = {y0, y2, y1};
    be.weighted_sum(ys2, w, 3, out, 2);
    EXPECT_EQ(out[0], 1.0f);
    const float w2[] = {0.5f, 0.25f};
    be.weighted_sum(ys, w2, 2, out, 2);
    EXPECT_FLOAT_EQ(out[1], 0.5f * 2.0f + 0.25f * 3.0f);
    float acc[] = {1.0f, 2.0f};
    be.add(acc, out, 2);
    EXPECT_FLOAT_EQ(acc[1], 2.0f + 1.75f);
}

}  // namespace
}  // namespace moe
