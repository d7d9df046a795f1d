// Per-block decoders of every ggml type we run, written once for the CUDA kernels (runtime/cuda/dequant.cu and
// later fused kernels) and also compiled for the host, so a CPU-only test can check every decoder's item ->
// element mapping and arithmetic against the CPU reference without a GPU (tests/runtime/dequant_block_test.cpp).
// No CUDA runtime dependency: the CPU build includes this header too.
//
// Each decoder splits a block into `items` independent pieces; decode(blk, item, v, idx) writes the `outs`
// values of one piece and their element indices inside the block. A thread (or lane) decodes one item.
//
// Why every field is read with byte loads: ggml packs blocks with no padding, so an 18-, 22-, 34- or 210-byte
// block starts only 2-byte aligned and a 17-byte MXFP4 block at any address; a wider load would fault.
// Why mul/add/sub wrap __fmul_rn/__fadd_rn: nvcc contracts a*b+c into one FMA by default, which rounds once
// instead of twice; the explicit intrinsics keep every value bit-identical to the CPU reference.
#pragma once

#include <cstdint>
#include <cstring>

#include "runtime/tensor_types.h"

#if defined(__CUDACC__)
#define MOE_DQ_FN __host__ __device__ __forceinline__
#define MOE_DQ_UNROLL _Pragma("unroll")
#else
#define MOE_DQ_FN inline
#define MOE_DQ_UNROLL
#endif

namespace moe::dq {

MOE_DQ_FN float mul(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
MOE_DQ_FN float add(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
MOE_DQ_FN float sub(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}
MOE_DQ_FN float as_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    std::memcpy(&f, &u, 4);
    return f;
#endif
}
// Count of leading zero bits; PRECOND: x != 0.
MOE_DQ_FN int clz32(uint32_t x) {
#if defined(__CUDA_ARCH__)
    return __clz(x);
#else
    return __builtin_clz(x);
#endif
}
// Byte 0 of __byte_perm(x, y, s) for a selector s in 0..7: byte s of the 8-byte value y:x.
MOE_DQ_FN uint32_t byte_select(uint32_t x, uint32_t y, uint32_t s) {
#if defined(__CUDA_ARCH__)
    return __byte_perm(x, y, s) & 0xFF;
#else
    return uint32_t(((uint64_t(y) << 32 | x) >> (8 * s)) & 0xFF);
#endif
}

MOE_DQ_FN uint32_t ld_u16(const uint8_t* p) {
    return uint32_t(p[0]) | uint32_t(p[1]) << 8;
}
MOE_DQ_FN uint32_t ld_u32(const uint8_t* p) {
    return ld_u16(p) | ld_u16(p + 2) << 16;
}
// Plain F16/BF16/F32 tensors are element-aligned (PRECOND of the launchers), so one wide load suffices.
MOE_DQ_FN uint32_t ld_u16_aligned(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
    return *reinterpret_cast<const uint16_t*>(p);
#else
    return ld_u16(p);
#endif
}
MOE_DQ_FN float ld_f32(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
    return *reinterpret_cast<const float*>(p);
#else
    return as_float(ld_u32(p));
#endif
}

// IEEE half -> float, exact for all inputs incl. subnormals and NaN payloads (as fp16_to_f32 on the CPU;
// the hardware conversion canonicalises NaNs, which would break bit-exactness for F16 tensors).
MOE_DQ_FN float fp16_to_f32(uint32_t h) {
    const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
    if (exp == 0x1F) return as_float(sign | 0x7F800000u | (mant << 13));
    if (exp != 0) return as_float(sign | ((exp + 112) << 23) | (mant << 13));
    if (mant == 0) return as_float(sign);
    const int shift = clz32(mant) - 21;  // moves the leading 1 of the 10-bit mantissa to bit 10
    return as_float(sign | (uint32_t(113 - shift) << 23) | (((mant << shift) & 0x3FF) << 13));
}
MOE_DQ_FN float ld_half(const uint8_t* p) {
    return fp16_to_f32(ld_u16(p));
}

// 16-entry int8 tables held in registers as four packed words and indexed with a byte permute: a per-thread
// local array would live in local memory and a __constant__ one serialises when lanes read different entries.
MOE_DQ_FN int lut16(uint32_t i, uint32_t k0, uint32_t k1, uint32_t k2, uint32_t k3) {
    return int(int8_t((i & 8) ? byte_select(k2, k3, i & 7) : byte_select(k0, k1, i & 7)));
}
// {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12}: E2M1 values doubled (the scale is halved)
MOE_DQ_FN int kv_mxfp4(uint32_t i) {
    return lut16(i, 0x03020100u, 0x0C080604u, 0xFDFEFF00u, 0xF4F8FAFCu);
}
// {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}
MOE_DQ_FN int kv_iq4nl(uint32_t i) {
    return lut16(i, 0xBFAD9881u, 0xF6EADDCFu, 0x26190D01u, 0x71594535u);
}

// Q4_K/Q5_K 6-bit scale and min of sub-block j (ggml's get_scale_min_k4).
MOE_DQ_FN void scale_min_k4(int j, const uint8_t* q, uint32_t& sc, uint32_t& m) {
    if (j < 4) {
        sc = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

struct dq_f32 {
    static constexpr int block_elems = 1, block_bytes = 4, items = 1, outs = 1;
    MOE_DQ_FN static void decode(const uint8_t* b, int, float* v, int* idx) {
        v[0] = ld_f32(b);
        idx[0] = 0;
    }
};
struct dq_f16 {
    static constexpr int block_elems = 1, block_bytes = 2, items = 1, outs = 1;
    MOE_DQ_FN static void decode(const uint8_t* b, int, float* v, int* idx) {
        v[0] = fp16_to_f32(ld_u16_aligned(b));
        idx[0] = 0;
    }
};
struct dq_bf16 {
    static constexpr int block_elems = 1, block_bytes = 2, items = 1, outs = 1;
    MOE_DQ_FN static void decode(const uint8_t* b, int, float* v, int* idx) {
        v[0] = as_float(ld_u16_aligned(b) << 16);
        idx[0] = 0;
    }
};

// Quantized types: an item is a run of 4 consecutive quant bytes (8 or 16 values), so the block's scales are read
// and converted once per 8+ weights rather than once per byte, and a warp's 32 lanes cover 8 blocks of a
// 32-element type (or 1 K-quant super-block) per step, reading the packed bytes in order.

// 32-element blocks: item i (0..3) owns qs bytes 4i..4i+3: elements 4i+k (low nibbles) and 4i+k+16 (high).
struct dq_q4_0 {
    static constexpr int block_elems = 32, block_bytes = 18, items = 4, outs = 8;
    MOE_DQ_FN static void decode(const uint8_t* b, int item, float* v, int* idx) {
        const float d = ld_half(b);
        MOE_DQ_UNROLL
        for (int k = 0; k < 4; k++) {
            const int j = 4 * item + k;
            const uint32_t q = b[2 + j];
            v[k] = mul(float(int(q & 0xF) - 8), d);
            v[4 + k] = mul(float(int(q >> 4) - 8), d);
            idx[k] = j, idx[4 + k] = j + 16;
        }
    }
};
struct dq_q4_1 {
    static constexpr int block_elems = 32, block_bytes = 20, items = 4, outs = 8;
    MOE_DQ_FN static void decode(const uint8_t* b, int item, float* v, int* idx) {
        const float d = ld_half(b), m = ld_half(b + 2);
        MOE_DQ_UNROLL
        for (int k = 0; k < 4; k++) {
            const int j = 4 * item + k;
            const uint32_t q = b[4 + j];
            v[k] = add(mul(float(q & 0xF), d), m);
            v[4 + k] = add(mul(float(q >> 4), d), m);
            idx[k] = j, idx[4 + k] = j + 16;
        }
    }
};
// Q5_0/Q5_1: bit j of the little-endian qh word is the 5th bit of element j.
struct dq_q5_0 {
    static constexpr int block_elems = 32, block_bytes = 22, items = 4, outs = 8;
    MOE_DQ_FN static void decode(const uint8_t* b, int item, float* v, int* idx) {
        const float d = ld_half(b);
        const uint32_t qh = ld_u32(b + 2);
        MOE_DQ_UNROLL
        for (int k = 0; k < 4; k++) {
            const int j = 4 * item + k;
            const uint32_t q = b[6 + j], xh0 = ((qh >> j) << 4) & 0x10, xh1 = (qh >> (j + 12)) & 0x10;
            v[k] = mul(float(int((q & 0xF) | xh0) - 16), d);
            v[4 + k] = mul(float(int((q >> 4) | xh1) - 16), d);
            idx[k] = j, idx[4 + k] = j + 16;
        }
    }
};
struct dq_q5_1 {
    static constexpr int block_elems = 32, block_bytes = 24, items = 4, outs = 8;
    MOE_DQ_FN static void decode(const uint8_t* b, int item, float* v, int* idx) {
        const float d = ld_half(b), m = ld_half(b + 2);
        const uint32_t qh = ld_u32(b + 4);
        MOE_DQ_UNROLL
        for (int k = 0; k < 4; k++) {
            const int j = 4 * item + k;
            const uint32_t q = b[8 + j], xh0 = ((qh >> j) << 4) & 0x10, xh1 = (qh >> (j + 12)) & 0x10;
            v[k] = add(mul(float((q & 0xF) | xh0), d), m);
            v[4 + k] = add(mul(float((q >> 4) | xh1), d), m);
            idx[k] = j, idx[4 + k] = j + 16;
        }
    }
};
// Q8_0: item i owns elements 8i..8i+7 (one int8 each).
struct dq_q8_0 {
    static constexpr int block_elems = 32, block_bytes = 34, items = 4, outs = 8;
    MOE_DQ_FN static void decode(const uint8_t* b, int item, float* v, int* idx) {
        const float d = ld_half(b);
        MOE_DQ_UNROLL
        for (int k = 0; k < 8; k++) {
            const int j = 8 * item + k;
            v[k] = mul(float(int8_t(b[2 + j])), d);
            idx[k] = j;
        }
    }
};
struct dq_iq4_nl {
    static constexpr int block_elems = 32, block_bytes = 18, items = 4, outs = 8;
    MOE_DQ_FN static void decode(const uint8_t* b, int item, float* v, int* idx) {
        const float d = ld_half(b);
        MOE_DQ_UNROLL
        for (int k = 0; k < 4; k++) {
            const int j = 4 * item + k;
            const uint32_t q = b[2 + j];
            v[k] = mul(d, float(kv_iq4nl(q & 0xF)));
            v[4 + k] = mul(d, float(kv_iq4nl(q >> 4)));
            idx[k] = j, idx[4 + k] = j + 16;
        }
    }
};
struct dq_mxfp4 {
    static constexpr int block_elems = 32, block_bytes = 17, items = 4, outs = 8;
    MOE_DQ_FN static void decode(const uint8_t* b, int item, float* v, int* idx) {
        const uint32_t e = b[0];
        const float d = as_float(e < 2 ? 0x00200000u << e : (e - 1) << 23);  // 2^(e-128)
        MOE_DQ_UNROLL
        for (int k = 0; k < 4; k++) {
            const int j = 4 * item + k;
            const uint32_t q = b[1 + j];
            v[k] = mul(float(kv_mxfp4(q & 0xF)), d);
            v[4 + k] = mul(float(kv_mxfp4(q >> 4)), d);
            idx[k] = j, idx[4 + k] = j + 16;
        }
    }
};

// 256-element K-quant blocks.
// Q2_K/Q3_K: item (n, l0) with n = item / 8 the 128-element half and l0 = 4 * (item % 8) the first of 4 qs
// bytes; byte l holds four 2-bit quants, of elements 128n + 32j + l for j = 0..3. The 4 bytes share their 16-group
// (l0 / 16), hence their scales.
struct dq_q2_k {
    static constexpr int block_elems = 256, block_bytes = 84, items = 16, outs = 16;
    MOE_DQ_FN static void decode(const uint8_t* b, int item, float* v, int* idx) {
        const int n = item / 8, l0 = 4 * (item % 8);
        const float d = ld_half(b + 80), dmin = ld_half(b + 82);
        MOE_DQ_UNROLL
        for (int j = 0; j < 4; j++) {
            const uint32_t sc = b[8 * n + 2 * j + l0 / 16];
            const float dl = mul(d, float(sc & 0xF)), ml = mul(dmin, float(sc >> 4));
            MOE_DQ_UNROLL
            for (int k = 0; k < 4; k++) {
                const uint32_t q = b[16 + 32 * n + l0 + k];
                v[4 * j + k] = sub(mul(dl, float((q >> (2 * j)) & 3)), ml);
                idx[4 * j + k] = 128 * n + 32 * j + l0 + k;
            }
        }
    }
};
// Q3_K: the 16 signed 6-bit scales are 4 low bits from scales[0..7] (low then high nibbles) and 2 high bits
// from scales[8..11]; a clear hmask bit (4n + j of byte l) subtracts 4 from the 2-bit quant.
struct dq_q3_k {
    static constexpr int block_elems = 256, block_bytes = 110, items = 16, outs = 16;
    MOE_DQ_FN static void decode(const uint8_t* b, int item, float* v, int* idx) {
        const int n = item / 8, l0 = 4 * (item % 8);
        const float d = ld_half(b + 108);
        const uint8_t* sc = b + 96;
        MOE_DQ_UNROLL
        for (int j = 0; j < 4; j++) {
            const int is = 8 * n + 2 * j + l0 / 16;
            const int s = int(((sc[is % 8] >> (4 * (is / 8))) & 0xF) | (((sc[8 + is % 4] >> (2 * (is / 4))) & 3) << 4));
            const float dl = mul(d, float(s - 32));
            MOE_DQ_UNROLL
            for (int k = 0; k < 4; k++) {
                const int l = l0 + k;
                const uint32_t q = b[32 + 32 * n + l], hm = b[l];
                const int qv = int((q >> (2 * j)) & 3) - ((hm >> (4 * n + j)) & 1 ? 0 : 4);
                v[4 * j + k] = mul(dl, float(qv));
                idx[4 * j + k] = 128 * n + 32 * j + l;
            }
        }
    }
};
// Q4_K/Q5_K share the header (d, dmin, 12 bytes of 6-bit scales/mins): the scale and min of chunk c's two
// 32-element sub-blocks (2c and 2c + 1), each already multiplied by d / dmin.
MOE_DQ_FN void k4_chunk_scales(const uint8_t* b, int c, float& d1, float& dm1, float& d2, float& dm2) {
    const float d = ld_half(b), dmin = ld_half(b + 2);
    uint32_t sc1, m1, sc2, m2;
    scale_min_k4(2 * c, b + 4, sc1, m1);
    scale_min_k4(2 * c + 1, b + 4, sc2, m2);
    d1 = mul(d, float(sc1)), dm1 = mul(dmin, float(m1));
    d2 = mul(d, float(sc2)), dm2 = mul(dmin, float(m2));
}

// Q4_K/Q5_K: item (c, l0) with c = item / 8 and l0 = 4 * (item % 8): qs byte 32c + l holds elements 64c + l
// (low nibble, sub-block 2c) and 64c + 32 + l (high nibble, sub-block 2c + 1).
struct dq_q4_k {
    static constexpr int block_elems = 256, block_bytes = 144, items = 32, outs = 8;
    MOE_DQ_FN static void decode(const uint8_t* b, int item, float* v, int* idx) {
        const int c = item / 8, l0 = 4 * (item % 8);
        float d1, dm1, d2, dm2;
        k4_chunk_scales(b, c, d1, dm1, d2, dm2);
        MOE_DQ_UNROLL
        for (int k = 0; k < 4; k++) {
            const int l = l0 + k;
            const uint32_t q = b[16 + 32 * c + l];
            v[k] = sub(mul(d1, float(q & 0xF)), dm1);
            v[4 + k] = sub(mul(d2, float(q >> 4)), dm2);
            idx[k] = 64 * c + l, idx[4 + k] = 64 * c + 32 + l;
        }
    }
};
// Q5_K: bits 2c and 2c + 1 of qh[l] are the 5th bits of the two elements of qs byte 32c + l.
struct dq_q5_k {
    static constexpr int block_elems = 256, block_bytes = 176, items = 32, outs = 8;
    MOE_DQ_FN static void decode(const uint8_t* b, int item, float* v, int* idx) {
        const int c = item / 8, l0 = 4 * (item % 8);
        float d1, dm1, d2, dm2;
        k4_chunk_scales(b, c, d1, dm1, d2, dm2);
        MOE_DQ_UNROLL
        for (int k = 0; k < 4; k++) {
            const int l = l0 + k;
            const uint32_t qh = b[16 + l], q = b[48 + 32 * c + l];
            const uint32_t q1 = (q & 0xF) + ((qh >> (2 * c)) & 1 ? 16 : 0);
            const uint32_t q2 = (q >> 4) + ((qh >> (2 * c + 1)) & 1 ? 16 : 0);
            v[k] = sub(mul(d1, float(q1)), dm1);
            v[4 + k] = sub(mul(d2, float(q2)), dm2);
            idx[k] = 64 * c + l, idx[4 + k] = 64 * c + 32 + l;
        }
    }
};
// Q6_K: item (h, l0) with h = item / 8 the 128-element half and l0 = 4 * (item % 8): for l = l0..l0+3, ql bytes
// l and l + 32 of half h plus qh byte l give elements 128h + l + {0, 32, 64, 96}. d is last in the block.
struct dq_q6_k {
    static constexpr int block_elems = 256, block_bytes = 210, items = 16, outs = 16;
    MOE_DQ_FN static void decode(const uint8_t* b, int item, float* v, int* idx) {
        const int h = item / 8, l0 = 4 * (item % 8), is = l0 / 16;
        const float d = ld_half(b + 208);
        const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192 + 8 * h);
        float ds[4];
        MOE_DQ_UNROLL
        for (int r = 0; r < 4; r++) ds[r] = mul(d, float(sc[is + 2 * r]));
        MOE_DQ_UNROLL
        for (int k = 0; k < 4; k++) {
            const int l = l0 + k;
            const uint32_t ql0 = b[64 * h + l], ql1 = b[64 * h + l + 32], qh = b[128 + 32 * h + l];
            const int q[4] = {int((ql0 & 0xF) | ((qh & 3) << 4)) - 32, int((ql1 & 0xF) | (((qh >> 2) & 3) << 4)) - 32,
                              int((ql0 >> 4) | (((qh >> 4) & 3) << 4)) - 32,
                              int((ql1 >> 4) | (((qh >> 6) & 3) << 4)) - 32};
            MOE_DQ_UNROLL
            for (int r = 0; r < 4; r++) {
                v[4 * r + k] = mul(ds[r], float(q[r]));
                idx[4 * r + k] = 128 * h + l + 32 * r;
            }
        }
    }
};
// IQ4_XS: item (ib, j0) with ib = item / 4 the 32-element sub-block and j0 = 4 * (item % 4): qs byte 16ib + j
// gives elements 32ib + j and 32ib + j + 16, scaled by d * (6-bit scale - 32).
struct dq_iq4_xs {
    static constexpr int block_elems = 256, block_bytes = 136, items = 32, outs = 8;
    MOE_DQ_FN static void decode(const uint8_t* b, int item, float* v, int* idx) {
        const int ib = item / 4, j0 = 4 * (item % 4);
        const float d = ld_half(b);
        const uint32_t scales_h = ld_u16(b + 2);
        const int ls = int(((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | (((scales_h >> (2 * ib)) & 3) << 4));
        const float dl = mul(d, float(ls - 32));
        MOE_DQ_UNROLL
        for (int k = 0; k < 4; k++) {
            const int j = j0 + k;
            const uint32_t q = b[8 + 16 * ib + j];
            v[k] = mul(dl, float(kv_iq4nl(q & 0xF)));
            v[4 + k] = mul(dl, float(kv_iq4nl(q >> 4)));
            idx[k] = 32 * ib + j, idx[4 + k] = 32 * ib + j + 16;
        }
    }
};

// Calls f(decoder{}) for the decoder of t; returns false when t has none.
template <typename F>
bool dispatch(tensor_type t, F&& f) {
    switch (t) {
        case tensor_type::F32:
            f(dq_f32{});
            return true;
        case tensor_type::F16:
            f(dq_f16{});
            return true;
        case tensor_type::BF16:
            f(dq_bf16{});
            return true;
        case tensor_type::Q4_0:
            f(dq_q4_0{});
            return true;
        case tensor_type::Q4_1:
            f(dq_q4_1{});
            return true;
        case tensor_type::Q5_0:
            f(dq_q5_0{});
            return true;
        case tensor_type::Q5_1:
            f(dq_q5_1{});
            return true;
        case tensor_type::Q8_0:
            f(dq_q8_0{});
            return true;
        case tensor_type::Q2_K:
            f(dq_q2_k{});
            return true;
        case tensor_type::Q3_K:
            f(dq_q3_k{});
            return true;
        case tensor_type::Q4_K:
            f(dq_q4_k{});
            return true;
        case tensor_type::Q5_K:
            f(dq_q5_k{});
            return true;
        case tensor_type::Q6_K:
            f(dq_q6_k{});
            return true;
        case tensor_type::IQ4_NL:
            f(dq_iq4_nl{});
            return true;
        case tensor_type::IQ4_XS:
            f(dq_iq4_xs{});
            return true;
        case tensor_type::MXFP4:
            f(dq_mxfp4{});
            return true;
        default:
            return false;
    }
}

}  // namespace moe::dq
