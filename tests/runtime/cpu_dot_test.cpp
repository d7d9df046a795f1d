// The SIMD dot-product kernels (runtime/cpu_dot.h) of every ISA this CPU has, for every type with a fast path,
// against the plain reference (matvec_ref: dequantize_row, products and sums in double) on awkward sizes and
// unaligned rows:
//  - decoding: the kernel's product with a unit vector e_i is exactly the dequantized weight w_i (all other
//    products are zero), so the kernels decode bit-identically to dequantize_row;
//  - F32 / F16 / BF16 accumulate in double like the reference: within one float rounding of it;
//  - quantized types accumulate in float lanes: |got - ref| <= (n/8 + 16) * 2^-24 * sum|w_i x_i| + one rounding.
//    A float sum of m terms is within (m - 1) * 2^-24 * sum|terms| of the exact sum; each lane sums at most
//    n/8 products, and the reduction of the lanes and accumulators adds fewer than 16 levels.
// And through the backend: matmul per token is bit-identical to matvec, at any thread count.
#include "runtime/cpu_dot.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "runtime/backend_cpu.h"
#include "runtime/dequant.h"
#include "tests/runtime/dequant_random.h"

namespace moe {
namespace {

const tensor_type k_fast_types[] = {tensor_type::F32,  tensor_type::F16,  tensor_type::BF16, tensor_type::Q8_0,
                                    tensor_type::Q4_0, tensor_type::Q4_K, tensor_type::Q5_K, tensor_type::Q6_K};

bool accumulates_in_double(tensor_type t) {
    return t == tensor_type::F32 || t == tensor_type::F16 || t == tensor_type::BF16;
}

// Row lengths around the kernels' step sizes (16/32 elements, 32- and 256-element blocks) and the tails.
std::vector<int64_t> sizes_for(tensor_type t) {
    const int64_t be = type_info(t).block_elems;
    if (be == 1) return {1, 7, 8, 15, 16, 17, 31, 32, 33, 63, 100, 1023, 4099};
    if (be == 32) return {32, 64, 96, 160, 32 * 37, 4096};
    return {256, 512, 768, 256 * 11};
}

class cpu_dot_isa : public ::testing::TestWithParam<cpu_isa> {
protected:
    void SetUp() override {
        if (!cpu_isa_available(GetParam())) GTEST_SKIP() << cpu_isa_name(GetParam()) << " not available here";
    }
};

TEST_P(cpu_dot_isa, every_fast_type_has_a_kernel) {
    for (tensor_type t : k_fast_types)
        EXPECT_EQ(cpu_dot_has_fast_path(t, GetParam()), GetParam() != cpu_isa::REF) << type_name(t);
    EXPECT_FALSE(cpu_dot_has_fast_path(tensor_type::Q4_1, GetParam()));  // falls back to the reference
}

TEST_P(cpu_dot_isa, decodes_exactly_the_reference_weights) {
    std::mt19937_64 rng(7);
    for (tensor_type t : k_fast_types) {
        const dot_kernel dot = cpu_dot_kernel(t, GetParam());
        for (int64_t n : {type_info(t).block_elems == 1 ? int64_t(37) : int64_t(2 * type_info(t).block_elems)}) {
            const auto raw = test::random_tensor(t, n, rng);
            std::vector<uint8_t> shifted(raw.size() + 1);  // rows may start at any byte
            std::memcpy(shifted.data() + 1, raw.data(), raw.size());
            std::vector<float> w(static_cast<size_t>(n)), e(static_cast<size_t>(n), 0.0f);
            dequantize_row(t, raw.data(), w.data(), n);
            int mismatches = 0;
            for (int64_t i = 0; i < n; ++i) {
                e[size_t(i)] = 1.0f;
                const float got = dot(shifted.data() + 1, e.data(), n);
                e[size_t(i)] = 0.0f;
                if (got != w[size_t(i)] && mismatches++ < 5)
                    ADD_FAILURE() << type_name(t) << " element " << i << ": kernel decodes " << got
                                  << ", dequantize_row " << w[size_t(i)];
            }
            EXPECT_EQ(mismatches, 0) << type_name(t) << " " << cpu_isa_name(GetParam());
        }
    }
}

TEST_P(cpu_dot_isa, matches_the_reference_within_the_stated_bound) {
    std::mt19937_64 rng(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    double worst_quant = 0.0;  // worst |got - ref| / sum|w x| over the quantized types, printed for the record
    for (tensor_type t : k_fast_types) {
        const dot_kernel dot = cpu_dot_kernel(t, GetParam());
        for (int64_t n : sizes_for(t)) {
            for (int rep = 0; rep < 3; ++rep) {
                const auto raw = test::random_tensor(t, n, rng);
                std::vector<uint8_t> shifted(raw.size() + 3);
                std::memcpy(shifted.data() + 3, raw.data(), raw.size());
                std::vector<float> x(static_cast<size_t>(n) + 1), w(static_cast<size_t>(n));
                for (auto& v : x) v = normal(rng);
                const float* xs = x.data() + 1;  // unaligned activations too
                dequantize_row(t, raw.data(), w.data(), n);
                double abs_sum = 0.0;
                for (int64_t i = 0; i < n; ++i) abs_sum += std::fabs(double(w[size_t(i)]) * double(xs[i]));
                float want;
                matvec_ref(t, raw.data(), xs, &want, n, 1);
                const float got = dot(shifted.data() + 3, xs, n);
                const double err = std::fabs(double(got) - double(want));
                const double one_rounding = std::ldexp(std::fabs(double(want)), -24);
                if (GetParam() == cpu_isa::REF) {
                    EXPECT_EQ(got, want) << type_name(t) << " n=" << n;  // the reference kernel IS matvec_ref
                } else if (accumulates_in_double(t)) {
                    EXPECT_LE(err, 2 * one_rounding + 1e-12 * abs_sum) << type_name(t) << " n=" << n;
                } else {
                    const double bound = (double(n) / 8 + 16) * std::ldexp(abs_sum, -24) + one_rounding;
                    EXPECT_LE(err, bound) << type_name(t) << " n=" << n << " got " << got << " want " << want;
                    if (abs_sum > 0) worst_quant = std::max(worst_quant, err / abs_sum);
                }
            }
        }
    }
    std::printf("[ cpu_dot  ] %s: worst |got-ref|/sum|w*x| over quantized types %.3g\n",
                std::string(cpu_isa_name(GetParam())).c_str(), worst_quant);
}

INSTANTIATE_TEST_SUITE_P(isas, cpu_dot_isa, ::testing::Values(cpu_isa::REF, cpu_isa::AVX2, cpu_isa::AVX512),
                         [](const auto& p) { return std::string(cpu_isa_name(p.param)); });

TEST(cpu_dot, selected_isa_is_available_and_honours_the_environment) {
    const cpu_isa isa = cpu_isa_selected();
    EXPECT_TRUE(cpu_isa_available(isa));
    if (const char* env = std::getenv("MOE_CPU_ISA"); env != nullptr && *env != '\0') {
        EXPECT_EQ(cpu_isa_name(isa), env);
    } else if (cpu_isa_available(cpu_isa::AVX512)) {
        EXPECT_EQ(isa, cpu_isa::AVX512);
    }
    std::printf("[ cpu_dot  ] selected ISA: %s\n", std::string(cpu_isa_name(isa)).c_str());
}

// The backend's products (with the selected ISA): matmul row t equals matvec of token t bit for bit, and any
// thread count gives the same bits -- the forward pass's batch/thread invariance rests on this.
TEST(cpu_dot, backend_matmul_equals_matvec_at_any_thread_count) {
    std::mt19937_64 rng(3);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int64_t rows = 37, n_tok = 5;
    for (tensor_type t : k_fast_types) {
        const int64_t cols = type_info(t).block_elems == 256 ? 512 : 96;
        const auto W = test::random_tensor(t, cols * rows, rng);
        std::vector<float> X(size_t(cols * n_tok));
        for (auto& v : X) v = normal(rng);
        backend_cpu one(cols, 1);
        std::vector<float> want(size_t(rows * n_tok));
        for (int64_t k = 0; k < n_tok; ++k)
            one.matvec(t, W.data(), X.data() + k * cols, want.data() + k * rows, cols, rows);
        for (int threads : {1, 2, 3}) {
            backend_cpu be(cols, threads, 1);
            std::vector<float> got(want.size());
            be.matmul(t, W.data(), X.data(), got.data(), cols, rows, n_tok);
            EXPECT_EQ(0, std::memcmp(got.data(), want.data(), want.size() * sizeof(float)))
                << type_name(t) << " threads " << threads;
        }
    }
}

}  // namespace
}  // namespace moe
