// AVX-512 (F, BW, VL) dot-product kernels (see cpu_dot.h): the AVX2 kernels' decoding, 16 lanes per FMA. This
// file is compiled with -mavx512f -mavx512bw -mavx512vl -mavx2 -mfma -mf16c -ffp-contract=off
// (runtime/CMakeLists.txt) and reached only after cpu_isa_available(AVX512); like cpu_dot_avx2.cpp it includes no
// header whose inline functions or templates it would instantiate.
// GCC 12's avx512fintrin.h builds "undefined" vectors as `__m512 __Y = __Y;`, which -Wuninitialized reports
// inside the intrinsics (a false positive, GCC bug 105593); the file's own code has no such pattern.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "runtime/cpu_dot.h"

namespace moe::detail {
namespace {

float load_half(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

double hsum(__m512d v) {
    const __m256d s4 = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1));
    const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

float hsum(__m512 v) {
    const __m512d vd = _mm512_castps_pd(v);
    const __m256 s8 =
        _mm256_add_ps(_mm256_castpd_ps(_mm512_castpd512_pd256(vd)), _mm256_castpd_ps(_mm512_extractf64x4_pd(vd, 1)));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
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

// The plain float types: 32 elements per step into four double accumulators (exact products), scalar tail.
template <int ElemBytes, __m256 (*Load8)(const uint8_t*), float (*Scalar)(const uint8_t*)>
float dot_plain(const void* w, const float* x, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(w);
    __m512d a[4] = {_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd()};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; ++k)
            a[k] = _mm512_fmadd_pd(_mm512_cvtps_pd(Load8(p + (i + 8 * k) * ElemBytes)),
                                   _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8 * k)), a[k]);
    double acc = hsum(_mm512_add_pd(_mm512_add_pd(a[0], a[1]), _mm512_add_pd(a[2], a[3])));
    for (; i < n; ++i) acc += double(Scalar(p + i * ElemBytes)) * double(x[i]);
    return float(acc);
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

template <bool Signed>
__m512i widen16(__m128i v) {
    if constexpr (Signed) return _mm512_cvtepi8_epi32(v);
    return _mm512_cvtepu8_epi32(v);
}

// 32 quantized bytes q (elements 0..31) -> w = float(q) * d0 for elements 0..15 and float(q) * d1 for 16..31
// (minus m when Min), summed into acc[0] (elements 0..15) and acc[1] (16..31) with x.
template <bool Signed, bool Min>
void fma32(__m256i q, float d0, float d1, float m, const float* x, __m512* acc) {
    const __m512i parts[2] = {widen16<Signed>(_mm256_castsi256_si128(q)),
                              widen16<Signed>(_mm256_extracti128_si256(q, 1))};
    const float ds[2] = {d0, d1};
    for (int k = 0; k < 2; ++k) {
        __m512 wv = _mm512_mul_ps(_mm512_cvtepi32_ps(parts[k]), _mm512_set1_ps(ds[k]));
        if constexpr (Min) wv = _mm512_sub_ps(wv, _mm512_set1_ps(m));
        acc[k] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + 16 * k), acc[k]);
    }
}

float finish(const __m512* acc) {
    return hsum(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}

__m256i low_nibbles(__m256i v) {
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}
__m256i high_nibbles(__m256i v) {
    return _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0F));
}
// Bits [s, s + width) of every byte, s + width <= 8 (see cpu_dot_avx2.cpp).
__m256i bits_of(__m256i v, int s, int mask) {
    return _mm256_and_si256(_mm256_srli_epi16(v, s), _mm256_set1_epi8(char(mask)));
}

float dot_q8_0(const void* w, const float* x, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(w);
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t b = 0; b < n / 32; ++b, p += 34) {
        const float d = load_half(p);
        fma32<true, false>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2)), d, d, 0.0f, x + 32 * b,
                           acc + 2 * (b & 1));
    }
    return finish(acc);
}

float dot_q4_0(const void* w, const float* x, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(w);
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t b = 0; b < n / 32; ++b, p += 18) {
        const float d = load_half(p);
        const __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2));
        const __m128i lo = _mm_and_si128(qs, _mm_set1_epi8(0x0F));
        const __m128i hi = _mm_and_si128(_mm_srli_epi16(qs, 4), _mm_set1_epi8(0x0F));
        const __m256i q = _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
        fma32<true, false>(q, d, d, 0.0f, x + 32 * b, acc + 2 * (b & 1));
    }
    return finish(acc);
}

void scale_min_k4(int j, const uint8_t* q, int& sc, int& m) {
    if (j < 4) {
        sc = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

template <bool Five>
float dot_qk45(const void* w, const float* x, int64_t n) {
    constexpr int block_bytes = Five ? 176 : 144;
    const auto* p = static_cast<const uint8_t*>(w);
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
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
            fma32<false, true>(hi, d2, d2, mm2, xb + 64 * c + 32, acc + 2);
        }
    }
    return finish(acc);
}

float dot_q6_k(const void* w, const float* x, int64_t n) {
    const auto* p = static_cast<const uint8_t*>(w);
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
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
                fma32<true, false>(_mm256_sub_epi8(q[k], _mm256_set1_epi8(32)), d0, d1, 0.0f, xh + 32 * k,
                                   acc + 2 * (k & 1));
            }
        }
    }
    return finish(acc);
}

}  // namespace

dot_kernel avx512_dot_kernel(tensor_type t) {
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
