// CUDA dequantization and dequant-matvec kernels against the CPU reference (runtime/dequant.h), for every type:
// dequantization must be bit-identical; the fp32-accumulating matvec must be within 1e-5 of the double-accumulated
// reference. Sizes are deliberately not multiples of the launch geometry (items per CTA, rows per CTA), sources
// sit at odd addresses, and one case is large enough to take the grid-stride loop. Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/gpu.h"
#include "runtime/dequant.h"
#include "tests/runtime/dequant_random.h"

#ifdef MOE_HAVE_CUDA
#include "runtime/cuda/dequant.cuh"
#endif

using namespace moe;

namespace {

const tensor_type k_all_types[] = {tensor_type::F32,  tensor_type::F16,    tensor_type::BF16,   tensor_type::Q4_0,
                                   tensor_type::Q4_1, tensor_type::Q5_0,   tensor_type::Q5_1,   tensor_type::Q8_0,
                                   tensor_type::Q2_K, tensor_type::Q3_K,   tensor_type::Q4_K,   tensor_type::Q5_K,
                                   tensor_type::Q6_K, tensor_type::IQ4_NL, tensor_type::IQ4_XS, tensor_type::MXFP4};

#ifdef MOE_HAVE_CUDA
// A device buffer that frees itself.
struct dev_buf {
    void* p = nullptr;
    explicit dev_buf(size_t bytes) { MOE_CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1)); }
    ~dev_buf() { cudaFree(p); }
    dev_buf(const dev_buf&) = delete;
    dev_buf& operator=(const dev_buf&) = delete;
    template <typename T>
    T* as(size_t byte_offset = 0) const {
        return reinterpret_cast<T*>(static_cast<uint8_t*>(p) + byte_offset);
    }
};

// Dequantizes n elements of `raw` on the device (from a source `shift` bytes past an aligned address) and
// checks every bit against dequantize_row.
void check_dequant(tensor_type t, int64_t n, size_t shift, uint64_t seed) {
    std::mt19937_64 rng(seed);
    const auto raw = test::random_tensor(t, n, rng);
    std::vector<float> want(static_cast<size_t>(n));
    dequantize_row(t, raw.data(), want.data(), n);

    dev_buf src(raw.size() + shift), dst(size_t(n) * 4 + 4);
    MOE_CUDA_CHECK(cudaMemcpy(src.as<uint8_t>(shift), raw.data(), raw.size(), cudaMemcpyHostToDevice));
    MOE_CUDA_CHECK(cudaMemset(dst.p, 0xFF, size_t(n) * 4 + 4));  // NaN canary, incl. one element past the end
    dequantize_cuda(t, src.as<uint8_t>(shift), dst.as<float>(), n, nullptr);
    std::vector<uint32_t> got(size_t(n) + 1);
    MOE_CUDA_CHECK(cudaMemcpy(got.data(), dst.p, got.size() * 4, cudaMemcpyDeviceToHost));

    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++) {
        uint32_t w;
        std::memcpy(&w, &want[size_t(i)], 4);
        if (w != got[size_t(i)] && bad++ == 0) first = i;
    }
    EXPECT_EQ(bad, 0) << type_name(t) << " n=" << n << " shift=" << shift << ": first mismatch at " << first;
    EXPECT_EQ(got[size_t(n)], 0xFFFFFFFFu) << type_name(t) << ": wrote past the end";
}

// y = W x on the device vs matvec_ref. The error bound is relative to sum_i |w_i x_i| (per row), the quantity
// fp32 rounding errors scale with: a plain |y - ref| / |ref| is unbounded for rows whose terms cancel. An fp32
// sum of n terms in 32 lane-strided chains plus a 5-level tree is off by at most about (n/32 + 5) * 2^-24 of
// that; 1e-5 holds for n up to ~5000 columns with margin, and real rounding errors are far smaller (random walk).
void check_matvec(tensor_type t, int64_t n_cols, int64_t n_rows, uint64_t seed) {
    std::mt19937_64 rng(seed);
    const auto raw = test::random_tensor(t, n_cols * n_rows, rng);
    std::vector<float> x(static_cast<size_t>(n_cols)), want(static_cast<size_t>(n_rows));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto& v : x) v = nd(rng);
    matvec_ref(t, raw.data(), x.data(), want.data(), n_cols, n_rows);

    dev_buf dW(raw.size()), dx(x.size() * 4), dy(size_t(n_rows) * 4 + 4);
    MOE_CUDA_CHECK(cudaMemcpy(dW.p, raw.data(), raw.size(), cudaMemcpyHostToDevice));
    MOE_CUDA_CHECK(cudaMemcpy(dx.p, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
    MOE_CUDA_CHECK(cudaMemset(dy.p, 0xFF, size_t(n_rows) * 4 + 4));
    dequant_matvec_cuda(t, dW.p, dx.as<float>(), dy.as<float>(), n_cols, n_rows, nullptr);
    std::vector<float> got(size_t(n_rows) + 1);
    MOE_CUDA_CHECK(cudaMemcpy(got.data(), dy.p, got.size() * 4, cudaMemcpyDeviceToHost));

    const auto& info = type_info(t);
    const size_t row_bytes = size_t(n_cols / info.block_elems * info.block_bytes);
    std::vector<float> w(static_cast<size_t>(n_cols));
    double worst = 0, err2 = 0, mag2 = 0;
    for (int64_t r = 0; r < n_rows; r++) {
        dequantize_row(t, raw.data() + size_t(r) * row_bytes, w.data(), n_cols);
        double mag = 0;
        for (int64_t i = 0; i < n_cols; i++) mag += std::fabs(double(w[size_t(i)]) * x[size_t(i)]);
        const double err = std::fabs(double(got[size_t(r)]) - want[size_t(r)]);
        ASSERT_TRUE(std::isfinite(got[size_t(r)])) << type_name(t) << " row " << r;
        const double rel = mag > 0 ? err / mag : err;
        worst = std::max(worst, rel);
        err2 += err * err;
        mag2 += mag * mag;
        EXPECT_LE(rel, 1e-5) << type_name(t) << " " << n_rows << "x" << n_cols << " row " << r << ": got "
                             << got[size_t(r)] << " want " << want[size_t(r)];
    }
    // Whole-vector form of the same bound (||err|| <= 1e-5 ||sum |w x|||). Not relative to ||y||: Q3_K rows
    // cancel so strongly that ||y|| is several times smaller than the magnitudes rounding scales with, and a
    // ||y||-relative check failed at 1.8e-5 on an H200 while every row met its bound.
    EXPECT_LE(std::sqrt(err2 / std::max(mag2, 1e-30)), 1e-5) << type_name(t) << ": norm-wise relative error";
    uint32_t canary;
    std::memcpy(&canary, &got[size_t(n_rows)], 4);
    EXPECT_EQ(canary, 0xFFFFFFFFu) << type_name(t) << ": wrote past the last row";
    ::testing::Test::RecordProperty(std::string(type_name(t)) + "_worst_rel_" + std::to_string(n_cols),
                                    std::to_string(worst));
}
#endif

}  // namespace

class dequant_gpu : public ::testing::TestWithParam<tensor_type> {
protected:
    void SetUp() override {
        if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << gpu_description();
    }
};

TEST_P(dequant_gpu, dequantize_is_bit_identical_to_cpu) {
#ifdef MOE_HAVE_CUDA
    const tensor_type t = GetParam();
    ASSERT_TRUE(dequantize_cuda_supported(t));
    const int64_t be = type_info(t).block_elems;
    const bool plain = be == 1;
    // 1 block, a few blocks, and counts whose item totals are not multiples of the 256-thread CTA
    for (int64_t blocks : {int64_t(1), int64_t(3), int64_t(37), int64_t(1001), int64_t(4099)}) {
        check_dequant(t, blocks * be, 0, uint64_t(blocks));
        if (!plain) check_dequant(t, blocks * be, 1, uint64_t(blocks) + 7);  // odd source address
    }
    if (!plain) check_dequant(t, 5 * be, 3, 99);
#endif
}

TEST_P(dequant_gpu, matvec_matches_cpu_reference) {
#ifdef MOE_HAVE_CUDA
    const tensor_type t = GetParam();
    const int64_t be = type_info(t).block_elems;
    // rows: not multiples of the 4 rows per CTA; columns: item counts that leave lanes idle in the last step
    const int64_t cols_32[] = {32, 96, 1184, 4128};
    const int64_t cols_256[] = {256, 768, 2816, 4864};
    const int64_t cols_1[] = {1, 33, 1000, 4097};
    const int64_t* cols = be == 1 ? cols_1 : be == 32 ? cols_32 : cols_256;
    uint64_t seed = 1;
    for (int i = 0; i < 4; i++)
        for (int64_t rows : {int64_t(1), int64_t(5), int64_t(131)}) check_matvec(t, cols[i], rows, seed++);
#endif
}

INSTANTIATE_TEST_SUITE_P(all_types, dequant_gpu, ::testing::ValuesIn(k_all_types),
                         [](const auto& p) { return std::string(type_name(p.param)); });

// Past 65536 CTAs x 256 threads = 2^24 items the dequant kernel strides over the grid; F16 has one item per
// element, so 2^24 + 1001 elements take a second, partial pass.
TEST(dequant_gpu_large, grid_stride_loop_covers_everything) {
    if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << gpu_description();
#ifdef MOE_HAVE_CUDA
    check_dequant(tensor_type::F16, (int64_t(1) << 24) + 1001, 0, 5);
#endif
}

TEST(dequant_gpu_large, zero_sizes_launch_nothing) {
    if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << gpu_description();
#ifdef MOE_HAVE_CUDA
    dequantize_cuda(tensor_type::Q6_K, nullptr, nullptr, 0, nullptr);
    dequant_matvec_cuda(tensor_type::Q6_K, nullptr, nullptr, nullptr, 256, 0, nullptr);
    MOE_CUDA_CHECK(cudaDeviceSynchronize());
#endif
}
