// The backend memory interface on the CPU (runtime/backend.h): alloc is zero-filled and aligned, upload /
// download / copy move exactly the bytes asked for, backend_array frees and moves; the two operations added with
// it (rmsnorm_rows, add_gated) equal what the forward pass computed before them (per-row rmsnorm; the sigmoid
// gate written out); and the engine's backend choice: CPU by default, AUTO falls back to the CPU without a GPU
// (same logits), CUDA without a GPU is a clear error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/gpu.h"
#include "runtime/backend_buffer.h"
#include "runtime/backend_cpu.h"
#include "runtime/backend_cuda.h"
#include "runtime/engine.h"

namespace moe {
namespace {

TEST(backend_memory, cpu_alloc_upload_download_copy) {
    backend_cpu be;
    EXPECT_TRUE(be.host_memory());
    backend_array<float> a(be, 1001), b(be, 1001);
    EXPECT_EQ(a.size(), 1001u);
    EXPECT_EQ(a.bytes(), 1001u * 4);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % 256, 0u);
    for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a.data()[i], 0.0f) << "alloc zero-fills";
    std::vector<float> v(1001);
    for (size_t i = 0; i < v.size(); ++i) v[i] = float(i) * 0.5f - 7.0f;
    be.upload(a.data(), v.data(), v.size() * 4);
    be.copy(b.data() + 1, a.data(), 1000 * 4);
    std::vector<float> got(1001, -1.0f);
    be.download(got.data(), b.data(), got.size() * 4);
    be.synchronize();
    EXPECT_EQ(got[0], 0.0f);
    EXPECT_EQ(0, std::memcmp(got.data() + 1, v.data(), 1000 * 4));
    // Moves hand the memory over; the moved-from array owns nothing.
    float* p = a.data();
    backend_array<float> c = std::move(a);
    EXPECT_EQ(c.data(), p);
    EXPECT_EQ(a.data(), nullptr);
    EXPECT_EQ(a.size(), 0u);
    c = std::move(b);
    EXPECT_EQ(c.size(), 1001u);
    backend_array<int> empty(be, 0);  // zero elements still give a valid pointer
    EXPECT_NE(empty.data(), nullptr);
}

TEST(backend_memory, rmsnorm_rows_and_add_gated_equal_the_forms_they_replace) {
    backend_cpu be;
    std::mt19937_64 rng(3);
    std::normal_distribution<float> nd(0.0f, 2.0f);
    const int64_t n = 24, rows = 5;
    std::vector<float> x(static_cast<size_t>(n * rows)), w(static_cast<size_t>(n));
    for (auto& v : x) v = nd(rng);
    for (auto& v : w) v = nd(rng);
    std::vector<float> want = x, got = x;
    for (int64_t r = 0; r < rows; ++r) be.rmsnorm(want.data() + r * n, w.data(), want.data() + r * n, n, 1e-6f);
    be.rmsnorm_rows(got.data(), w.data(), got.data(), n, rows, 1e-6f);
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), want.size() * 4));

    for (float g : {-2.5f, 0.0f, 1.25f}) {
        std::vector<float> y(static_cast<size_t>(n)), y2(static_cast<size_t>(n));
        for (size_t i = 0; i < y.size(); ++i) y[i] = y2[i] = nd(rng);
        const float s = float(1.0 / (1.0 + std::exp(-double(g))));
        for (int64_t i = 0; i < n; ++i) y2[size_t(i)] += s * x[size_t(i)];
        be.add_gated(y.data(), x.data(), &g, n);
        EXPECT_EQ(0, std::memcmp(y.data(), y2.data(), y.size() * 4)) << "gate " << g;
    }
}

TEST(backend_memory, engine_backend_choice) {
    const std::string model = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/ref/mixtral-f32.gguf";
    engine_config cfg;
    cfg.n_ctx = 8;
    EXPECT_EQ(cfg.backend, backend_kind::CPU);
    engine cpu(model, cfg);
    EXPECT_EQ(cpu.backend_name(), "cpu");
    EXPECT_GT(cpu.resident_bytes(), 0u);
    if (gpu_count() > 0) GTEST_SKIP() << "a GPU is present: the no-GPU fallbacks are not testable here";
    EXPECT_FALSE(cuda_backend_available());
    cfg.backend = backend_kind::CUDA;
    try {
        engine e(model, cfg);
        FAIL() << "CUDA backend without a GPU accepted";
    } catch (const error& ex) {
        EXPECT_NE(std::string(ex.what()).find("CUDA backend"), std::string::npos) << ex.what();
    }
    cfg.backend = backend_kind::AUTO;
    engine autob(model, cfg);
    EXPECT_EQ(autob.backend_name(), "cpu");
    const std::vector<int> toks{1, 5, 9};
    const size_t V = size_t(cpu.desc().n_vocab);
    std::vector<float> a(toks.size() * V), b(toks.size() * V);
    cpu.logits(toks, a);
    autob.logits(toks, b);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4));
}

}  // namespace
}  // namespace moe
