// AVX2 + FMA + F16C dot-product kernels (see cpu_dot.h). This file is compiled with -mavx2 -mfma -mf16c
// -ffp-contract=off (runtime/CMakeLists.txt) and reached only after cpu_isa_available(AVX2). It includes no
// header with inline functions or templates it would instantiate: a copy compiled here for AVX2 could otherwise
// be picked by the linker for baseline code. No contraction, so each weight is decoded with the same float
// operations as dequantize_row (bit-identical weights); only the summation order differs from the reference.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "runtime/cpu_dot.h"

namespace moe::detail {
namespace {

float load_half(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return _cvtsh_ss(h);  // exact, subnormals included
}

double hsum(__m256d v) {
    const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// acc0 += w[0..3] * x[0..3], acc1 += w[4..7] * x[4..7] in double: the products of two floats are exact.
void fma8_double(__m256 w, const float* x, __m256d& acc0, __m256d& acc1) {
    const __m256 xv = _mm256_loadu_ps(x);
    acc0 =
        _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(w)), _mm256_cvtps_pd(_mm256_castps256_ps128(xv)), acc0);
    acc1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(w, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(xv, 1)),
                           acc1);
}

__m256 load8_f32(const uint8_t* p) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
}
__m256 load8_f16(const uint8_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
__m256 load8_bf16(const uint8_t* p) {
    const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}

// The plain float types: 16 elements per step into four double accumulators, then a scalar tail in double.
template <int ElemBytes, __m256 (*Load8)(const uint8_t*), float (*Scalar)(const uint8_t*)>
float dot_plain(const void* w, const float* x, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(w);
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        fma8_double(Load8(p + i * ElemBytes), x + i, a0, a1);
        fma8_double(Load8(p + (i + 8) * ElemBytes), x + i + 8, a2, a3);
    }
    double acc = hsum(_mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)));
    for (; i < n; ++i) acc += double(Scalar(p + i * ElemBytes)) * double(x[i]);
    return float(acc);
}

float scalar_f32(const uint8_t* p) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
}
float scalar_bf16(const uint8_t* p) {
    const uint32_t u = uint32_t(p[0] | (p[1] << 8)) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

float dot_f32(const void* w, const float* x, int64_t n) {
    return dot_plain<4, load8_f32, scalar_f32>(w, x, n);
}
float dot_f16(const void* w, const float* x, int64_t n) {
    return dot_plain<2, load8_f16, load_half>(w, x, n);
}
float dot_bf16(const void* w, const float* x, int64_t n) {
    return dot_plain<2, load8_bf16, scalar_bf16>(w, x, n);
}

// The four groups of 8 bytes of a 32-byte vector, widened to int32 (signed or unsigned bytes).
template <bool Signed>
__m256i widen8(__m128i v) {
    if constexpr (Signed) return _mm256_cvtepi8_epi32(v);
    return _mm256_cvtepu8_epi32(v);
}

// 32 quantized bytes q (elements 0..31) -> w = float(q) * d0 for elements 0..15 and float(q) * d1 for 16..31
// (minus m when Min), each product summed into acc[k] with x[8k..8k+7].
template <bool Signed, bool Min>
void fma32(__m256i q, float d0, float d1, float m, const float* x, __m256* acc) {
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    const __m256i parts[4] = {widen8<Signed>(lo), widen8<Signed>(_mm_srli_si128(lo, 8)), widen8<Signed>(hi),
                              widen8<Signed>(_mm_srli_si128(hi, 8))};
    const __m256 dv0 = _mm256_set1_ps(d0), dv1 = _mm256_set1_ps(d1), mv = _mm256_set1_ps(m);
    for (int k = 0; k < 4; ++k) {
        __m256 wv = _mm256_mul_ps(_mm256_cvtepi32_ps(parts[k]), k < 2 ? dv0 : dv1);
        if constexpr (Min) wv = _mm256_sub_ps(wv, mv);
        acc[k] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + 8 * k), acc[k]);
    }
}

float finish(const __m256* acc) {
    return hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
}

__m256i low_nibbles(__m256i v) {
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}
__m256i high_nibbles(__m256i v) {
    return _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0F));
}
// Bits [s, s + width) of every byte, for s + width <= 8 (a 16-bit shift leaks the neighbour's bits only above
// bit 8 - s, which the mask removes).
__m256i bits_of(__m256i v, int s, int mask) {
    return _mm256_and_si256(_mm256_srli_epi16(v, s), _mm256_set1_epi8(char(mask)));
}

// block_q8_0 { half d; int8 qs[32]; }
float dot_q8_0(const void* w, const float* x, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(w);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < n / 32; ++b, p += 34) {
        const float d = load_half(p);
        fma32<true, false>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2)), d, d, 0.0f, x + 32 * b, acc);
    }
    return finish(acc);
}

// block_q4_0 { half d; uint8 qs[16]; }: low nibbles are elements 0..15, high nibbles 16..31; value (q - 8) * d.
float dot_q4_0(const void* w, const float* x, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(w);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < n / 32; ++b, p += 18) {
        const float d = load_half(p);
        const __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2));
        const __m128i lo = _mm_and_si128(qs, _mm_set1_epi8(0x0F));
        const __m128i hi = _mm_and_si128(_mm_srli_epi16(qs, 4), _mm_set1_epi8(0x0F));
        // (q - 8) as signed bytes, so the shared helper widens them with sign.
        const __m256i q = _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
        fma32<true, false>(q, d, d, 0.0f, x + 32 * b, acc);
    }
    return finish(acc);
}

// get_scale_min_k4 of dequant.cpp: the 6-bit scale and min of sub-block j of a Q4_K/Q5_K super-block.
void scale_min_k4(int j, const uint8_t* q, int& sc, int& m) {
    if (j < 4) {
        sc = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// block_q4_K { half d; half dmin; uint8 scales[12]; uint8 qs[128]; }: 8 groups of 32, value d*sc*q - dmin*m.
// block_q5_K adds qh[32] before qs: bit 2c / 2c+1 of qh[l] is the 5th bit of element l of group 2c / 2c+1.
template <bool Five>
float dot_qk45(const void* w, const float* x, int64_t n) {
    constexpr int block_bytes = Five ? 176 : 144;
    const auto* p = static_cast<const uint8_t*>(w);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < n / 256; ++b, p += block_bytes) {
        const float d = load_half(p), dmin = load_half(p + 2);
        const uint8_t* scales = p + 4;
        const uint8_t* qs = p + (Five ? 48 : 16);
        const __m256i qh = Five ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16)) : _mm256_setzero_si256();
        const float* xb = x + 256 * b;
        for (int c = 0; c < 4; ++c) {
            int sc1, m1, sc2, m2;
            scale_min_k4(2 * c, scales, sc1, m1);
            scale_min_k4(2 * c + 1, scales, sc2, m2);
            const float d1 = d * float(sc1), mm1 = dmin * float(m1);
            const float d2 = d * float(sc2), mm2 = dmin * float(m2);
            const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * c));
            __m256i lo = low_nibbles(q), hi = high_nibbles(q);
            if constexpr (Five) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(bits_of(qh, 2 * c, 1), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(bits_of(qh, 2 * c + 1, 1), 4));
            }
            fma32<false, true>(lo, d1, d1, mm1, xb + 64 * c, acc);
            fma32<false, true>(hi, d2, d2, mm2, xb + 64 * c + 32, acc);
        }
    }
    return finish(acc);
}

// block_q6_K { uint8 ql[128]; uint8 qh[64]; int8 scales[16]; half d; }: 16 groups of 16, value d*sc*(q - 32).
float dot_q6_k(const void* w, const float* x, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(w);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < n / 256; ++b, p += 210) {
        const float d = load_half(p + 208);
        for (int h = 0; h < 2; ++h) {
            const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * h));
            const __m256i bq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 128 + 32 * h));
            const auto* sc = reinterpret_cast<const int8_t*>(p + 192 + 8 * h);
            const __m256i q[4] = {
                _mm256_or_si256(low_nibbles(a), _mm256_slli_epi16(bits_of(qh, 0, 3), 4)),
                _mm256_or_si256(low_nibbles(bq), _mm256_slli_epi16(bits_of(qh, 2, 3), 4)),
                _mm256_or_si256(high_nibbles(a), _mm256_slli_epi16(bits_of(qh, 4, 3), 4)),
                _mm256_or_si256(high_nibbles(bq), _mm256_slli_epi16(bits_of(qh, 6, 3), 4)),
            };
            const float* xh = x + 256 * b + 128 * h;
            for (int k = 0; k < 4; ++k) {
                const float d0 = d * float(sc[2 * k]), d1 = d * float(sc[2 * k + 1]);
                fma32<true, false>(_mm256_sub_epi8(q[k], _mm256_set1_epi8(32)), d0, d1, 0.0f, xh + 32 * k, acc);
            }
        }
    }
    return finish(acc);
}

}  // namespace

dot_kernel avx2_dot_kernel(tensor_type t) {
    switch (t) {
        case tensor_type::F32:
            return dot_f32;
        case tensor_type::F16:
            return dot_f16;
        case tensor_type::BF16:
            return dot_bf16;
        case tensor_type::Q8_0:
            return dot_q8_0;
        case tensor_type::Q4_0:
            return dot_q4_0;
        case tensor_type::Q4_K:
            return dot_qk45<false>;
        case tensor_type::Q5_K:
            return dot_qk45<true>;
        case tensor_type::Q6_K:
            return dot_q6_k;
        default:
            return nullptr;
    }
}

}  // namespace moe::detail
