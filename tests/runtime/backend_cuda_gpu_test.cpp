// The CUDA backend, op by op, against the CPU reference backend (runtime/backend_cpu.h) on random inputs of
// awkward sizes: row and column counts that are not multiples of any launch geometry, every dequantizable
// weight type, GQA ratios, both RoPE styles, every gating, aliasing where the contract allows it. Tolerances
// (each failure prints the worst absolute and relative error and where it was):
//  - matvec / matmul: |gpu - cpu| <= 1e-5 * sum_i |w_i x_i| per output (fp32 accumulation against the
//    reference's double; the bound rounding errors scale with, see dequant_gpu_test.cpp);
//  - rmsnorm, rope, attention, route weights: 1e-6 relative (both sides compute in double; only the order of
//    additions and the last bit of CUDA's double exp/pow/sin/cos differ);
//  - swiglu, add_gated: 1 ulp (float(double expression) with CUDA's double exp);
//  - weighted_sum, add: bit-identical (products and sums rounded one by one in the same order);
//  - route ids: identical (scores well separated, plus hand-made ties and NaNs);
//  - every op: the same bits when run twice (deterministic: no arrival-order sums).
// Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/gpu.h"
#include "runtime/backend_buffer.h"
#include "runtime/backend_cpu.h"
#include "runtime/backend_cuda.h"
#include "runtime/dequant.h"
#include "tests/runtime/dequant_random.h"

namespace moe {
namespace {

const tensor_type k_all_types[] = {tensor_type::F32,  tensor_type::F16,    tensor_type::BF16,   tensor_type::Q4_0,
                                   tensor_type::Q4_1, tensor_type::Q5_0,   tensor_type::Q5_1,   tensor_type::Q8_0,
                                   tensor_type::Q2_K, tensor_type::Q3_K,   tensor_type::Q4_K,   tensor_type::Q5_K,
                                   tensor_type::Q6_K, tensor_type::IQ4_NL, tensor_type::IQ4_XS, tensor_type::MXFP4};

std::vector<float> randn(size_t n, std::mt19937_64& rng, float sd = 1.0f) {
    std::normal_distribution<float> nd(0.0f, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng);
    return v;
}

// Compares element by element: |got - want| <= abs_tol[i] (per element) and reports the worst errors.
struct error_report {
    double max_abs = 0, max_rel = 0;
    size_t worst = 0, n_bad = 0, n_exact = 0;
};
error_report compare(const std::vector<float>& got, const std::vector<float>& want, const std::vector<double>& tol) {
    error_report r;
    for (size_t i = 0; i < want.size(); ++i) {
        const double d = std::fabs(double(got[i]) - double(want[i]));
        const double rel = d / std::max(std::fabs(double(want[i])), 1e-30);
        if (std::memcmp(&got[i], &want[i], 4) == 0) ++r.n_exact;
        if (!(d <= tol[i])) ++r.n_bad;  // NaN counts as bad
        if (d > r.max_abs || std::isnan(d)) r.max_abs = d, r.worst = i;
        r.max_rel = std::max(r.max_rel, rel);
    }
    return r;
}
#define EXPECT_CLOSE(got, want, tol, what)                                                                             \
    do {                                                                                                               \
        const error_report r_ = compare(got, want, tol);                                                               \
        EXPECT_EQ(r_.n_bad, 0u) << (what) << ": " << r_.n_bad << " of " << (want).size()                               \
                                << " outside tolerance; max abs err " << r_.max_abs << " (at " << r_.worst << ": gpu " \
                                << (got)[r_.worst] << " cpu " << (want)[r_.worst] << " tol " << (tol)[r_.worst]        \
                                << "), max rel err " << r_.max_rel << ", bit-identical " << r_.n_exact;                \
    } while (0)

std::vector<double> rel_tol(const std::vector<float>& want, double rel, double floor_abs = 0.0) {
    std::vector<double> t(want.size());
    double mx = 0;
    for (float v : want) mx = std::max(mx, double(std::fabs(v)));
    for (size_t i = 0; i < want.size(); ++i) t[i] = std::max(rel * std::fabs(double(want[i])), floor_abs * mx);
    return t;
}

class backend_cuda_gpu : public ::testing::Test {
public:
    void SetUp() override {
        if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << gpu_description();
        cpu = std::make_unique<backend_cpu>(1 << 16);
        gpu = make_backend_cuda();
    }
    template <typename T>
    backend_array<T> up(const std::vector<T>& v, backend* be = nullptr) {
        backend& b = be ? *be : *gpu;
        backend_array<T> a(b, v.size());
        b.upload(a.data(), v.data(), v.size() * sizeof(T));
        return a;
    }
    template <typename T>
    std::vector<T> down(const backend_array<T>& a, size_t n = 0) {
        // Through the array's own backend: another backend's download would not wait for this one's stream.
        std::vector<T> v(n ? n : a.size());
        a.owner()->download(v.data(), a.data(), v.size() * sizeof(T));
        return v;
    }
    std::unique_ptr<backend_cpu> cpu;
    std::unique_ptr<backend> gpu;
};

// y = W x on both backends for raw weights of type t; tolerance 1e-5 * sum |w x| per row.
void check_products(backend_cuda_gpu& f, backend& gpu, backend_cpu& cpu, tensor_type t, int64_t n_cols, int64_t n_rows,
                    int64_t n_tok, uint64_t seed) {
    std::mt19937_64 rng(seed);
    const auto raw = test::random_tensor(t, n_cols * n_rows, rng);
    const auto X = randn(size_t(n_cols * n_tok), rng);
    std::vector<float> want(static_cast<size_t>(n_rows * n_tok));
    if (n_tok == 1)
        cpu.matvec(t, raw.data(), X.data(), want.data(), n_cols, n_rows);
    else
        cpu.matmul(t, raw.data(), X.data(), want.data(), n_cols, n_rows, n_tok);
    // The bound: sum_i |w_i x_i| per (token, row), from the dequantized weights.
    std::vector<double> tol(want.size());
    std::vector<float> w(static_cast<size_t>(n_cols));
    const auto& info = type_info(t);
    const size_t row_bytes = size_t(n_cols / info.block_elems * info.block_bytes);
    for (int64_t r = 0; r < n_rows; ++r) {
        dequantize_row(t, raw.data() + size_t(r) * row_bytes, w.data(), n_cols);
        for (int64_t i = 0; i < n_tok; ++i) {
            double mag = 0;
            for (int64_t c = 0; c < n_cols; ++c) mag += std::fabs(double(w[size_t(c)]) * X[size_t(i * n_cols + c)]);
            tol[size_t(i * n_rows + r)] = 1e-5 * mag + 1e-30;
        }
    }
    auto dW = f.up(raw, &gpu);
    auto dX = f.up(X, &gpu);
    backend_array<float> dY(gpu, want.size());
    if (n_tok == 1)
        gpu.matvec(t, dW.data(), dX.data(), dY.data(), n_cols, n_rows);
    else
        gpu.matmul(t, dW.data(), dX.data(), dY.data(), n_cols, n_rows, n_tok);
    const auto got = f.down(dY);
    const std::string what = std::string(n_tok == 1 ? "matvec " : "matmul ") + std::string(type_name(t)) + " " +
                             std::to_string(n_rows) + "x" + std::to_string(n_cols) + " n_tok " + std::to_string(n_tok);
    EXPECT_CLOSE(got, want, tol, what);
    // Deterministic: the same call gives the same bits.
    backend_array<float> dY2(gpu, want.size());
    if (n_tok == 1)
        gpu.matvec(t, dW.data(), dX.data(), dY2.data(), n_cols, n_rows);
    else
        gpu.matmul(t, dW.data(), dX.data(), dY2.data(), n_cols, n_rows, n_tok);
    EXPECT_EQ(0, std::memcmp(f.down(dY2).data(), got.data(), got.size() * 4)) << what << ": not deterministic";
}

TEST_F(backend_cuda_gpu, memory_ops_round_trip) {
    EXPECT_EQ(gpu->name(), "cuda");
    EXPECT_FALSE(gpu->host_memory());
    backend_array<float> a(*gpu, 1001), b(*gpu, 1001);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % 256, 0u);
    const auto zeros = down(a);
    EXPECT_TRUE(std::all_of(zeros.begin(), zeros.end(), [](float v) { return v == 0.0f; })) << "alloc zero-fills";
    std::mt19937_64 rng(1);
    const auto v = randn(1001, rng);
    gpu->upload(a.data(), v.data(), v.size() * 4);
    gpu->copy(b.data() + 1, a.data(), 1000 * 4);
    const auto got = down(b);
    EXPECT_EQ(got[0], 0.0f);
    EXPECT_EQ(0, std::memcmp(got.data() + 1, v.data(), 1000 * 4));
    gpu->synchronize();
}

TEST_F(backend_cuda_gpu, matvec_every_type_matches_cpu) {
    uint64_t seed = 1;
    for (tensor_type t : k_all_types) {
        const int64_t be = type_info(t).block_elems;
        const int64_t cols_1[] = {1, 33, 1000, 4097};
        const int64_t cols_32[] = {32, 96, 1184, 4128};
        const int64_t cols_256[] = {256, 768, 2816, 4864};
        const int64_t* cols = be == 1 ? cols_1 : be == 32 ? cols_32 : cols_256;
        for (int i = 0; i < 4; ++i)
            for (int64_t rows : {int64_t(1), int64_t(5), int64_t(131)})
                check_products(*this, *gpu, *cpu, t, cols[i], rows, 1, seed++);
    }
}

// Batched products: below matmul_min_tokens the per-token kernel, above it cuBLAS (after dequantizing row chunks
// into a workspace; a tiny workspace here forces many chunks, the last one partial).
TEST_F(backend_cuda_gpu, matmul_every_type_matches_cpu) {
    backend_cuda_config cfg;
    cfg.matmul_min_tokens = 4;
    cfg.matmul_workspace_bytes = 7 * 4864 * 4;  // 7 rows of the widest matrix below
    auto small_ws = make_backend_cuda(cfg);
    uint64_t seed = 100;
    for (tensor_type t : k_all_types) {
        const int64_t be = type_info(t).block_elems;
        const int64_t cols = be == 1 ? 1000 : be == 32 ? 1184 : 4864;
        for (int64_t n_tok : {int64_t(2), int64_t(4), int64_t(17)}) {
            check_products(*this, *gpu, *cpu, t, cols, 131, n_tok, seed++);
            check_products(*this, *small_ws, *cpu, t, cols, 131, n_tok, seed++);
        }
    }
}

TEST_F(backend_cuda_gpu, rmsnorm_and_rows_match_cpu) {
    std::mt19937_64 rng(7);
    for (int64_t n : {int64_t(1), int64_t(7), int64_t(128), int64_t(4097)}) {
        for (bool with_w : {false, true}) {
            const auto x = randn(size_t(n), rng, 3.0f);
            const auto w = randn(size_t(n), rng);
            std::vector<float> want(static_cast<size_t>(n));
            cpu->rmsnorm(x.data(), with_w ? w.data() : nullptr, want.data(), n, 1e-6f);
            auto dx = up(x), dw = up(w);
            backend_array<float> dy(*gpu, size_t(n));
            gpu->rmsnorm(dx.data(), with_w ? dw.data() : nullptr, dy.data(), n, 1e-6f);
            EXPECT_CLOSE(down(dy), want, rel_tol(want, 1e-6), "rmsnorm n " + std::to_string(n));
            gpu->rmsnorm(dx.data(), with_w ? dw.data() : nullptr, dx.data(), n, 1e-6f);  // in place
            EXPECT_CLOSE(down(dx), want, rel_tol(want, 1e-6), "rmsnorm in place n " + std::to_string(n));
        }
    }
    // Per-head norms: 5 rows of 128 (and 3 rows of 72) with one weight vector.
    for (int64_t n : {int64_t(128), int64_t(72)}) {
        const int64_t rows = n == 128 ? 5 : 3;
        const auto x = randn(size_t(n * rows), rng);
        const auto w = randn(size_t(n), rng);
        std::vector<float> want(x.size());
        cpu->rmsnorm_rows(x.data(), w.data(), want.data(), n, rows, 1e-5f);
        auto dx = up(x), dw = up(w);
        gpu->rmsnorm_rows(dx.data(), dw.data(), dx.data(), n, rows, 1e-5f);
        EXPECT_CLOSE(down(dx), want, rel_tol(want, 1e-6), "rmsnorm_rows n " + std::to_string(n));
    }
}

TEST_F(backend_cuda_gpu, rope_both_styles_match_cpu) {
    std::mt19937_64 rng(11);
    struct shape {
        int heads, head_dim, n_rot;
    };
    for (rope_style style : {rope_style::NORM, rope_style::NEOX})
        for (shape s : {shape{1, 6, 6}, shape{3, 64, 64}, shape{32, 128, 128}, shape{5, 128, 64}})
            for (int pos : {0, 1, 17, 4095})
                for (float base : {10000.0f, 1000000.0f}) {
                    const auto x = randn(size_t(s.heads * s.head_dim), rng);
                    std::vector<float> want = x;
                    cpu->rope(want.data(), s.heads, s.head_dim, s.n_rot, pos, base, style);
                    auto dx = up(x);
                    gpu->rope(dx.data(), s.heads, s.head_dim, s.n_rot, pos, base, style);
                    EXPECT_CLOSE(down(dx), want, rel_tol(want, 1e-6, 1e-7),
                                 std::string(style == rope_style::NORM ? "NORM" : "NEOX") + " heads " +
                                     std::to_string(s.heads) + " hd " + std::to_string(s.head_dim) + " n_rot " +
                                     std::to_string(s.n_rot) + " pos " + std::to_string(pos));
                }
}

TEST_F(backend_cuda_gpu, attention_gqa_matches_cpu) {
    std::mt19937_64 rng(13);
    struct shape {
        int n_head, n_head_kv, hd_k, hd_v;
    };
    for (shape s : {shape{1, 1, 64, 64}, shape{4, 4, 16, 16}, shape{8, 2, 128, 128}, shape{12, 4, 48, 40},
                    shape{32, 4, 128, 128}, shape{6, 1, 33, 70}})
        for (int n_kv : {1, 2, 33, 300, 1025}) {
            const auto q = randn(size_t(s.n_head * s.hd_k), rng);
            const auto k = randn(size_t(n_kv * s.n_head_kv * s.hd_k), rng);
            const auto v = randn(size_t(n_kv * s.n_head_kv * s.hd_v), rng);
            const float scale = float(1.0 / std::sqrt(double(s.hd_k)));
            std::vector<float> want(static_cast<size_t>(s.n_head * s.hd_v)),
                scores(static_cast<size_t>(s.n_head * n_kv));
            cpu->attention(q.data(), k.data(), v.data(), want.data(), scores.data(), s.n_head, s.n_head_kv, s.hd_k,
                           s.hd_v, n_kv, scale);
            auto dq = up(q), dk = up(k), dv = up(v);
            backend_array<float> dout(*gpu, want.size()), dsc(*gpu, scores.size());
            gpu->attention(dq.data(), dk.data(), dv.data(), dout.data(), dsc.data(), s.n_head, s.n_head_kv, s.hd_k,
                           s.hd_v, n_kv, scale);
            const auto got = down(dout);
            // out is a convex combination of V rows: errors scale with max |v|.
            EXPECT_CLOSE(got, want, rel_tol(want, 1e-6, 1e-6),
                         "attention heads " + std::to_string(s.n_head) + "/" + std::to_string(s.n_head_kv) + " hd " +
                             std::to_string(s.hd_k) + "/" + std::to_string(s.hd_v) + " n_kv " + std::to_string(n_kv));
            gpu->attention(dq.data(), dk.data(), dv.data(), dout.data(), dsc.data(), s.n_head, s.n_head_kv, s.hd_k,
                           s.hd_v, n_kv, scale);
            EXPECT_EQ(0, std::memcmp(down(dout).data(), got.data(), got.size() * 4)) << "attention: not deterministic";
        }
}

// Runs route on both backends and compares ids exactly and weights within 1e-6 relative.
void check_route(backend_cuda_gpu& f, backend& gpu, backend_cpu& cpu, const std::vector<float>& logits, int k,
                 gating_func g, bool norm, float scale, const std::string& what) {
    const int E = int(logits.size());
    std::vector<float> probs(static_cast<size_t>(E)), w_cpu(static_cast<size_t>(k));
    std::vector<int> id_cpu(static_cast<size_t>(k));
    cpu.route(logits.data(), probs.data(), E, k, g, norm, scale, id_cpu.data(), w_cpu.data());
    auto dl = f.up(logits, &gpu);
    backend_array<float> dp(gpu, size_t(E)), dw(gpu, size_t(k));
    backend_array<int> di(gpu, size_t(k));
    gpu.route(dl.data(), dp.data(), E, k, g, norm, scale, di.data(), dw.data());
    std::vector<int> id_gpu(static_cast<size_t>(k));
    std::vector<float> w_gpu(static_cast<size_t>(k));
    gpu.download(id_gpu.data(), di.data(), size_t(k) * 4);
    gpu.download(w_gpu.data(), dw.data(), size_t(k) * 4);
    EXPECT_EQ(id_gpu, id_cpu) << what;
    std::vector<double> tol(static_cast<size_t>(k));
    for (int r = 0; r < k; ++r) tol[size_t(r)] = 1e-6 * std::fabs(double(w_cpu[size_t(r)])) + 1e-30;
    bool nan_ok = true;
    for (int r = 0; r < k; ++r)
        if (std::isnan(w_cpu[size_t(r)])) nan_ok = nan_ok && std::isnan(w_gpu[size_t(r)]);
    if (std::none_of(w_cpu.begin(), w_cpu.end(), [](float v) { return std::isnan(v); }))
        EXPECT_CLOSE(w_gpu, w_cpu, tol, what);
    else
        EXPECT_TRUE(nan_ok) << what;
}

TEST_F(backend_cuda_gpu, route_every_gating_matches_cpu) {
    std::mt19937_64 rng(17);
    for (int E : {8, 60, 64, 128, 257})
        for (int k : {1, 2, 4, 8})
            for (gating_func g : {gating_func::SOFTMAX, gating_func::SIGMOID, gating_func::SOFTMAX_WEIGHT})
                for (bool norm : {false, true})
                    for (float scale : {1.0f, 2.5f}) {
                        // Well-separated scores (a shuffled ramp plus small noise): the selection is unambiguous.
                        std::vector<int> perm(static_cast<size_t>(E));
                        std::iota(perm.begin(), perm.end(), 0);
                        std::shuffle(perm.begin(), perm.end(), rng);
                        std::uniform_real_distribution<float> noise(-0.01f, 0.01f);
                        std::vector<float> logits(static_cast<size_t>(E));
                        for (int e = 0; e < E; ++e)
                            logits[size_t(e)] = 0.1f * float(perm[size_t(e)] - E / 2) + noise(rng);
                        check_route(*this, *gpu, *cpu, logits, std::min(k, E), g, norm, scale,
                                    "route E " + std::to_string(E) + " k " + std::to_string(k) + " gating " +
                                        std::to_string(int(g)) + " norm " + std::to_string(norm));
                    }
}

TEST_F(backend_cuda_gpu, route_ties_and_nans_follow_cpu) {
    // All equal: ranks go to the lowest ids.
    check_route(*this, *gpu, *cpu, std::vector<float>(40, 0.5f), 4, gating_func::SOFTMAX, true, 1.0f, "all tied");
    // Ties between some: 3.0 at ids 33, 5, 70 -> 5, 33, 70; then 2.0 at 1 and 64 -> 1, 64.
    std::vector<float> l(80, 0.0f);
    l[33] = l[5] = l[70] = 3.0f;
    l[64] = l[1] = 2.0f;
    for (gating_func g : {gating_func::SOFTMAX, gating_func::SIGMOID, gating_func::SOFTMAX_WEIGHT})
        check_route(*this, *gpu, *cpu, l, 5, g, false, 1.0f, "partial ties gating " + std::to_string(int(g)));
    // NaN scores are never taken over a number (sigmoid and raw scores keep them per expert).
    std::vector<float> n(36, -1.0f);
    n[0] = n[3] = n[31] = NAN;
    n[7] = 4.0f, n[20] = 3.0f;
    for (gating_func g : {gating_func::SIGMOID, gating_func::SOFTMAX_WEIGHT})
        check_route(*this, *gpu, *cpu, n, 4, g, false, 1.0f, "NaN scores gating " + std::to_string(int(g)));
    // Only NaNs left: the lowest ids among them, as the CPU's scan.
    check_route(*this, *gpu, *cpu, n, 36, gating_func::SIGMOID, false, 1.0f, "every expert incl. NaNs");
}

TEST_F(backend_cuda_gpu, elementwise_ops_match_cpu) {
    std::mt19937_64 rng(19);
    for (int64_t n : {int64_t(1), int64_t(255), int64_t(257), int64_t(100003)}) {
        const auto g = randn(size_t(n), rng, 4.0f), u = randn(size_t(n), rng), y0 = randn(size_t(n), rng);
        const std::string sz = " n " + std::to_string(n);
        {  // swiglu, out aliasing gate: within 1 ulp
            std::vector<float> want(static_cast<size_t>(n));
            cpu->swiglu(g.data(), u.data(), want.data(), n);
            auto dg = up(g), du = up(u);
            gpu->swiglu(dg.data(), du.data(), dg.data(), n);
            EXPECT_CLOSE(down(dg), want, rel_tol(want, 2.4e-7, 1e-30), "swiglu" + sz);
        }
        {  // add: bit-identical
            std::vector<float> want = y0;
            cpu->add(want.data(), u.data(), n);
            auto dy = up(y0), du = up(u);
            gpu->add(dy.data(), du.data(), n);
            EXPECT_EQ(0, std::memcmp(down(dy).data(), want.data(), want.size() * 4)) << "add" << sz;
        }
        {  // add_gated: within 1 ulp of the scaled term
            for (float logit : {-3.0f, 0.0f, 0.7f}) {
                std::vector<float> want = y0;
                cpu->add_gated(want.data(), u.data(), &logit, n);
                auto dy = up(y0), du = up(u), dl = up(std::vector<float>{logit});
                gpu->add_gated(dy.data(), du.data(), dl.data(), n);
                std::vector<double> tol(static_cast<size_t>(n));
                for (size_t i = 0; i < tol.size(); ++i)
                    tol[i] = 2.4e-7 * (std::fabs(double(u[i])) + std::fabs(double(want[i]))) + 1e-30;
                EXPECT_CLOSE(down(dy), want, tol, "add_gated" + sz);
            }
        }
        for (int k : {1, 2, 8, backend::max_weighted_k}) {  // weighted_sum: bit-identical
            std::vector<std::vector<float>> rows;
            std::vector<backend_array<float>> drows;
            std::vector<const float*> hp, dp;
            for (int r = 0; r < k; ++r) {
                rows.push_back(randn(size_t(n), rng));
                drows.push_back(up(rows.back()));
                hp.push_back(rows.back().data());
                dp.push_back(drows.back().data());
            }
            const auto w = randn(size_t(k), rng);
            std::vector<float> want(static_cast<size_t>(n));
            cpu->weighted_sum(hp.data(), w.data(), k, want.data(), n);
            auto dw = up(w);
            backend_array<float> dout(*gpu, size_t(n));
            gpu->weighted_sum(dp.data(), dw.data(), k, dout.data(), n);
            EXPECT_EQ(0, std::memcmp(down(dout).data(), want.data(), want.size() * 4)) << "weighted_sum k " << k << sz;
        }
    }
}

}  // namespace
}  // namespace moe
