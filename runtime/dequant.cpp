// CPU reference dequantization (see dequant.h). Every block decoder is a transcription of ggml-quants.c's
// dequantize_row_* (layouts: docs/model-formats.md §2.2), with the same float operations in the same order, so
// results are bit-identical to ggml's and gguf-py's. Fields are read byte by byte: blocks are packed with no
// padding (an MXFP4 block is 17 bytes), so a block may start at any address.
#include "runtime/dequant.h"

#include <cstring>
#include <vector>

#include "common/error.h"

namespace moe {
namespace {

constexpr int qk_k = 256;  // elements per K-quant super-block

// MXFP4 codes are E2M1 values doubled (so they fit int8); the scale below is halved to compensate.
constexpr int8_t k_values_mxfp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
constexpr int8_t k_values_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

uint16_t load_u16(const uint8_t* p) {
    return uint16_t(p[0] | (p[1] << 8));
}
uint32_t load_u32(const uint8_t* p) {
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
float load_half(const uint8_t* p) {
    return fp16_to_f32(load_u16(p));
}

float bits_to_f32(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

uint32_t f32_to_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

// E8M0 scale halved (ggml's GGML_E8M0_TO_FP32_HALF): 2^(e-128) built from bits; e < 2 gives float subnormals.
float e8m0_to_f32_half(uint8_t e) {
    return bits_to_f32(e < 2 ? 0x00200000u << e : uint32_t(e - 1) << 23);
}

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K super-block (ggml's get_scale_min_k4).
void get_scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// block_q4_0 { half d; uint8 qs[16]; }: low nibbles are elements 0..15, high nibbles 16..31.
void block_q4_0(const uint8_t* b, float* y) {
    const float d = load_half(b);
    const uint8_t* qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = float((qs[j] & 0x0F) - 8) * d;
        y[j + 16] = float((qs[j] >> 4) - 8) * d;
    }
}

// block_q4_1 { half d; half m; uint8 qs[16]; }
void block_q4_1(const uint8_t* b, float* y) {
    const float d = load_half(b), m = load_half(b + 2);
    const uint8_t* qs = b + 4;
    for (int j = 0; j < 16; j++) {
        y[j] = float(qs[j] & 0x0F) * d + m;
        y[j + 16] = float(qs[j] >> 4) * d + m;
    }
}

// block_q5_0 { half d; uint8 qh[4]; uint8 qs[16]; }: bit j of qh is the 5th bit of element j.
void block_q5_0(const uint8_t* b, float* y) {
    const float d = load_half(b);
    const uint32_t qh = load_u32(b + 2);
    const uint8_t* qs = b + 6;
    for (int j = 0; j < 16; j++) {
        const int xh0 = ((qh >> j) << 4) & 0x10;
        const int xh1 = (qh >> (j + 12)) & 0x10;
        y[j] = float(((qs[j] & 0x0F) | xh0) - 16) * d;
        y[j + 16] = float(((qs[j] >> 4) | xh1) - 16) * d;
    }
}

// block_q5_1 { half d; half m; uint8 qh[4]; uint8 qs[16]; }
void block_q5_1(const uint8_t* b, float* y) {
    const float d = load_half(b), m = load_half(b + 2);
    const uint32_t qh = load_u32(b + 4);
    const uint8_t* qs = b + 8;
    for (int j = 0; j < 16; j++) {
        const int xh0 = ((qh >> j) << 4) & 0x10;
        const int xh1 = (qh >> (j + 12)) & 0x10;
        y[j] = float((qs[j] & 0x0F) | xh0) * d + m;
        y[j + 16] = float((qs[j] >> 4) | xh1) * d + m;
    }
}

// block_q8_0 { half d; int8 qs[32]; }
void block_q8_0(const uint8_t* b, float* y) {
    const float d = load_half(b);
    for (int j = 0; j < 32; j++) y[j] = float(int8_t(b[2 + j])) * d;
}

// block_mxfp4 { uint8 e; uint8 qs[16]; }
void block_mxfp4(const uint8_t* b, float* y) {
    const float d = e8m0_to_f32_half(b[0]);
    const uint8_t* qs = b + 1;
    for (int j = 0; j < 16; j++) {
        y[j] = float(k_values_mxfp4[qs[j] & 0x0F]) * d;
        y[j + 16] = float(k_values_mxfp4[qs[j] >> 4]) * d;
    }
}

// block_iq4_nl { half d; uint8 qs[16]; }: 4-bit indices into a non-linear table.
void block_iq4_nl(const uint8_t* b, float* y) {
    const float d = load_half(b);
    const uint8_t* qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = d * float(k_values_iq4nl[qs[j] & 0x0F]);
        y[j + 16] = d * float(k_values_iq4nl[qs[j] >> 4]);
    }
}

// block_q2_K { uint8 scales[16]; uint8 qs[64]; half d; half dmin; }: 16 groups of 16, 2-bit quants, scale in
// the low nibble and min in the high nibble of each scales byte.
void block_q2_k(const uint8_t* b, float* y) {
    const uint8_t* scales = b;
    const uint8_t* q = b + 16;
    const float d = load_half(b + 80), min = load_half(b + 82);
    int is = 0;
    for (int n = 0; n < qk_k; n += 128) {
        for (int shift = 0; shift < 8; shift += 2) {
            for (int half = 0; half < 2; half++) {
                const uint8_t sc = scales[is++];
                const float dl = d * float(sc & 0xF), ml = min * float(sc >> 4);
                for (int l = 0; l < 16; l++) *y++ = dl * float((q[l + 16 * half] >> shift) & 3) - ml;
            }
        }
        q += 32;
    }
}

// block_q3_K { uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; half d; }: 16 groups of 16; the 6-bit signed
// scales are 4 low bits from scales[0..7] (low then high nibbles) and 2 high bits from scales[8..11]; a clear
// hmask bit subtracts 4 from the 2-bit quant.
void block_q3_k(const uint8_t* b, float* y) {
    const uint8_t* hm = b;
    const uint8_t* q = b + 32;
    const uint8_t* sc = b + 96;
    const float d_all = load_half(b + 108);
    int scales[16];
    for (int i = 0; i < 16; i++) {
        const int lo = (sc[i % 8] >> (4 * (i / 8))) & 0xF;
        const int hi = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
        scales[i] = (lo | (hi << 4)) - 32;
    }
    int is = 0;
    uint8_t m = 1;
    for (int n = 0; n < qk_k; n += 128) {
        for (int shift = 0; shift < 8; shift += 2) {
            for (int half = 0; half < 2; half++) {
                const float dl = d_all * float(scales[is++]);
                for (int l = 0; l < 16; l++) {
                    const int i = l + 16 * half;
                    *y++ = dl * float(((q[i] >> shift) & 3) - ((hm[i] & m) ? 0 : 4));
                }
            }
            m = uint8_t(m << 1);
        }
        q += 32;
    }
}

// block_q4_K { half d; half dmin; uint8 scales[12]; uint8 qs[128]; }: 8 groups of 32.
void block_q4_k(const uint8_t* b, float* y) {
    const float d = load_half(b), min = load_half(b + 2);
    const uint8_t* scales = b + 4;
    const uint8_t* q = b + 16;
    for (int c = 0; c < 4; c++) {
        uint8_t sc, m;
        get_scale_min_k4(2 * c, scales, &sc, &m);
        const float d1 = d * float(sc), m1 = min * float(m);
        get_scale_min_k4(2 * c + 1, scales, &sc, &m);
        const float d2 = d * float(sc), m2 = min * float(m);
        for (int l = 0; l < 32; l++) y[64 * c + l] = d1 * float(q[32 * c + l] & 0xF) - m1;
        for (int l = 0; l < 32; l++) y[64 * c + 32 + l] = d2 * float(q[32 * c + l] >> 4) - m2;
    }
}

// block_q5_K { half d; half dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]; }: bit (2c, 2c+1) of qh[l]
// is the 5th bit of element l of groups 2c and 2c+1.
void block_q5_k(const uint8_t* b, float* y) {
    const float d = load_half(b), min = load_half(b + 2);
    const uint8_t* scales = b + 4;
    const uint8_t* qh = b + 16;
    const uint8_t* ql = b + 48;
    for (int c = 0; c < 4; c++) {
        const uint8_t u1 = uint8_t(1 << (2 * c)), u2 = uint8_t(2 << (2 * c));
        uint8_t sc, m;
        get_scale_min_k4(2 * c, scales, &sc, &m);
        const float d1 = d * float(sc), m1 = min * float(m);
        get_scale_min_k4(2 * c + 1, scales, &sc, &m);
        const float d2 = d * float(sc), m2 = min * float(m);
        for (int l = 0; l < 32; l++) y[64 * c + l] = d1 * float((ql[32 * c + l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - m1;
        for (int l = 0; l < 32; l++)
            y[64 * c + 32 + l] = d2 * float((ql[32 * c + l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
    }
}

// block_q6_K { uint8 ql[128]; uint8 qh[64]; int8 scales[16]; half d; }: d is LAST; 16 groups of 16.
void block_q6_k(const uint8_t* b, float* y) {
    const float d = load_half(b + 208);
    for (int h = 0; h < 2; h++) {
        const uint8_t* ql = b + 64 * h;
        const uint8_t* qh = b + 128 + 32 * h;
        const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192 + 8 * h);
        float* yh = y + 128 * h;
        for (int l = 0; l < 32; l++) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            yh[l] = d * float(sc[is + 0]) * float(q1);
            yh[l + 32] = d * float(sc[is + 2]) * float(q2);
            yh[l + 64] = d * float(sc[is + 4]) * float(q3);
            yh[l + 96] = d * float(sc[is + 6]) * float(q4);
        }
    }
}

// block_iq4_xs { half d; uint16 scales_h; uint8 scales_l[4]; uint8 qs[128]; }: 8 groups of 32, each with a
// 6-bit scale (4 bits in scales_l, 2 in scales_h) offset by 32, and IQ4_NL-style codes.
void block_iq4_xs(const uint8_t* b, float* y) {
    const float d = load_half(b);
    const uint16_t scales_h = load_u16(b + 2);
    const uint8_t* scales_l = b + 4;
    const uint8_t* qs = b + 8;
    for (int ib = 0; ib < qk_k / 32; ib++) {
        const int ls = ((scales_l[ib / 2] >> 4 * (ib % 2)) & 0xF) | (((scales_h >> 2 * ib) & 3) << 4);
        const float dl = d * float(ls - 32);
        for (int j = 0; j < 16; j++) {
            y[j] = dl * float(k_values_iq4nl[qs[j] & 0xF]);
            y[j + 16] = dl * float(k_values_iq4nl[qs[j] >> 4]);
        }
        y += 32;
        qs += 16;
    }
}

using block_fn = void (*)(const uint8_t*, float*);

block_fn block_decoder(tensor_type t) {
    switch (t) {
        case tensor_type::Q4_0:
            return block_q4_0;
        case tensor_type::Q4_1:
            return block_q4_1;
        case tensor_type::Q5_0:
            return block_q5_0;
        case tensor_type::Q5_1:
            return block_q5_1;
        case tensor_type::Q8_0:
            return block_q8_0;
        case tensor_type::Q2_K:
            return block_q2_k;
        case tensor_type::Q3_K:
            return block_q3_k;
        case tensor_type::Q4_K:
            return block_q4_k;
        case tensor_type::Q5_K:
            return block_q5_k;
        case tensor_type::Q6_K:
            return block_q6_k;
        case tensor_type::IQ4_NL:
            return block_iq4_nl;
        case tensor_type::IQ4_XS:
            return block_iq4_xs;
        case tensor_type::MXFP4:
            return block_mxfp4;
        default:
            return nullptr;
    }
}

}  // namespace

float fp16_to_f32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1F;
    uint32_t mant = h & 0x3FF;
    if (exp == 0x1F) return bits_to_f32(sign | 0x7F800000u | (mant << 13));  // inf, NaN (payload kept)
    if (exp != 0) return bits_to_f32(sign | ((exp + 127 - 15) << 23) | (mant << 13));
    if (mant == 0) return bits_to_f32(sign);  // +-0
    // Subnormal mant * 2^-24: normalise so the leading 1 becomes the implicit bit of a normal float.
    uint32_t e = 127 - 15 + 1;
    while ((mant & 0x400) == 0) {
        mant <<= 1;
        e--;
    }
    return bits_to_f32(sign | (e << 23) | ((mant & 0x3FF) << 13));
}

uint16_t f32_to_fp16(float f) {
    const uint32_t u = f32_to_bits(f);
    const uint16_t sign = uint16_t((u >> 16) & 0x8000);
    const uint32_t a = u & 0x7FFFFFFF;
    if (a > 0x7F800000u) return uint16_t(sign | 0x7E00 | ((a >> 13) & 0x3FF));  // NaN: quiet, top payload kept
    const uint32_t exp = a >> 23;                                               // biased float exponent
    if (exp >= 127 + 16) return uint16_t(sign | 0x7C00);                        // >= 2^16 (and inf): inf
    if (exp >= 127 - 14) {
        // Normal half: drop 13 mantissa bits with round-to-nearest-even; a carry out of the mantissa correctly
        // bumps the exponent, up to 0x7C00 = inf for values in [65520, 65536).
        uint32_t hbits = ((exp - 112) << 10) | ((a >> 13) & 0x3FF);
        const uint32_t rem = a & 0x1FFF;
        if (rem > 0x1000 || (rem == 0x1000 && (hbits & 1))) hbits++;
        return uint16_t(sign | hbits);
    }
    // Subnormal half (or zero): the value is m * 2^(exp-150) with m the 24-bit significand; in units of the
    // smallest subnormal 2^-24 that is m >> (126 - exp), rounded to nearest even.
    const uint32_t shift = 126 - exp;
    if (shift > 24) return sign;  // below half the smallest subnormal (incl. float subnormals): +-0
    const uint32_t m = (a & 0x7FFFFF) | 0x800000;
    uint32_t hbits = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (hbits & 1))) hbits++;  // may round up to the smallest normal
    return uint16_t(sign | hbits);
}

float bf16_to_f32(uint16_t b) {
    return bits_to_f32(uint32_t(b) << 16);
}

uint16_t f32_to_bf16(float f) {
    const uint32_t u = f32_to_bits(f);
    if ((u & 0x7FFFFFFF) > 0x7F800000u) return uint16_t((u >> 16) | 64);  // NaN: force quiet
    return uint16_t((uint64_t(u) + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

bool dequant_supported(tensor_type t) {
    return t == tensor_type::F32 || t == tensor_type::F16 || t == tensor_type::BF16 || block_decoder(t) != nullptr;
}

void dequantize_row(tensor_type t, const void* src, float* dst, int64_t n) {
    MOE_CHECK(dequant_supported(t));
    const auto& info = type_info(t);
    MOE_CHECK(n >= 0 && n % info.block_elems == 0);
    const auto* p = static_cast<const uint8_t*>(src);
    switch (t) {
        case tensor_type::F32:
            std::memcpy(dst, p, size_t(n) * 4);
            return;
        case tensor_type::F16:
            for (int64_t i = 0; i < n; i++) dst[i] = fp16_to_f32(load_u16(p + 2 * i));
            return;
        case tensor_type::BF16:
            for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_f32(load_u16(p + 2 * i));
            return;
        default:
            break;
    }
    const block_fn decode = block_decoder(t);
    const int64_t n_blocks = n / info.block_elems;
    for (int64_t i = 0; i < n_blocks; i++) decode(p + i * info.block_bytes, dst + i * info.block_elems);
}

void matvec_ref(tensor_type t, const void* W, const float* x, float* y, int64_t n_cols, int64_t n_rows) {
    MOE_CHECK(dequant_supported(t));
    const auto& info = type_info(t);
    MOE_CHECK(n_cols >= 0 && n_rows >= 0 && n_cols % info.block_elems == 0);
    const int64_t row_bytes = n_cols / info.block_elems * info.block_bytes;
    std::vector<float> w(static_cast<size_t>(n_cols));
    for (int64_t r = 0; r < n_rows; r++) {
        dequantize_row(t, static_cast<const uint8_t*>(W) + r * row_bytes, w.data(), n_cols);
        double acc = 0;  // a float*float product has 48 significant bits, exact in double; only the sum rounds
        for (int64_t i = 0; i < n_cols; i++) acc += double(w[size_t(i)]) * double(x[i]);
        y[r] = float(acc);
    }
}

}  // namespace moe
