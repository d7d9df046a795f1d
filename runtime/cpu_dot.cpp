// Kernel selection and the reference kernels (see cpu_dot.h). This file is compiled for baseline x86-64 (or any
// other target); the SIMD kernels live in cpu_dot_avx2.cpp / cpu_dot_avx512.cpp, compiled for their ISA and only
// reached after the run-time CPU check here.
#include "runtime/cpu_dot.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/error.h"
#include "runtime/dequant.h"

namespace moe {
namespace {

// Decodes 256 elements at a time (a multiple of every block size) and accumulates double products in element
// order: the same values summed in the same order as dequantize_row over the whole row followed by one loop,
// i.e. bit-identical to matvec_ref, without a row-sized workspace.
template <tensor_type T>
float ref_dot(const void* w, const float* x, int64_t n) {
    const tensor_type_info& ti = type_info(T);
    const auto* p = static_cast<const uint8_t*>(w);
    float buf[256];
    double acc = 0.0;
    for (int64_t off = 0; off < n; off += 256) {
        const int64_t m = std::min<int64_t>(256, n - off);
        dequantize_row(T, p + uint64_t(off / ti.block_elems) * ti.block_bytes, buf, m);
        for (int64_t i = 0; i < m; ++i) acc += double(buf[i]) * double(x[off + i]);
    }
    return float(acc);
}

// F32 needs no decoding: the plain loop (also what the backend did before the SIMD kernels). A row need not be
// 4-byte aligned (a slot holds an expert's tensors packed at their file offsets), so each weight is loaded with
// memcpy, which compiles to a plain load.
float ref_dot_f32(const void* w, const float* x, int64_t n) {
    const auto* wb = static_cast<const uint8_t*>(w);
    double acc = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        float wi;
        std::memcpy(&wi, wb + uint64_t(i) * sizeof(float), sizeof(float));
        acc += double(wi) * double(x[i]);
    }
    return float(acc);
}

dot_kernel ref_kernel(tensor_type t) {
    switch (t) {
        case tensor_type::F32:
            return ref_dot_f32;
        case tensor_type::F16:
            return ref_dot<tensor_type::F16>;
        case tensor_type::BF16:
            return ref_dot<tensor_type::BF16>;
        case tensor_type::Q4_0:
            return ref_dot<tensor_type::Q4_0>;
        case tensor_type::Q4_1:
            return ref_dot<tensor_type::Q4_1>;
        case tensor_type::Q5_0:
            return ref_dot<tensor_type::Q5_0>;
        case tensor_type::Q5_1:
            return ref_dot<tensor_type::Q5_1>;
        case tensor_type::Q8_0:
            return ref_dot<tensor_type::Q8_0>;
        case tensor_type::Q2_K:
            return ref_dot<tensor_type::Q2_K>;
        case tensor_type::Q3_K:
            return ref_dot<tensor_type::Q3_K>;
        case tensor_type::Q4_K:
            return ref_dot<tensor_type::Q4_K>;
        case tensor_type::Q5_K:
            return ref_dot<tensor_type::Q5_K>;
        case tensor_type::Q6_K:
            return ref_dot<tensor_type::Q6_K>;
        case tensor_type::IQ4_NL:
            return ref_dot<tensor_type::IQ4_NL>;
        case tensor_type::IQ4_XS:
            return ref_dot<tensor_type::IQ4_XS>;
        case tensor_type::MXFP4:
            return ref_dot<tensor_type::MXFP4>;
        default:
            return nullptr;
    }
}

dot_kernel simd_kernel(tensor_type t, cpu_isa isa) {
#if defined(MOE_HAVE_X86_KERNELS)
    if (isa == cpu_isa::AVX2) return detail::avx2_dot_kernel(t);
    if (isa == cpu_isa::AVX512) return detail::avx512_dot_kernel(t);
#else
    (void)t;
    (void)isa;
#endif
    return nullptr;
}

cpu_isa select_isa() {
    const char* env = std::getenv("MOE_CPU_ISA");
    if (env == nullptr || *env == '\0') {
        if (cpu_isa_available(cpu_isa::AVX512)) return cpu_isa::AVX512;
        if (cpu_isa_available(cpu_isa::AVX2)) return cpu_isa::AVX2;
        return cpu_isa::REF;
    }
    const std::string want = env;
    for (cpu_isa isa : {cpu_isa::REF, cpu_isa::AVX2, cpu_isa::AVX512}) {
        if (want != cpu_isa_name(isa)) continue;
        if (!cpu_isa_available(isa))
            fail("MOE_CPU_ISA={}: this CPU or build cannot run {} kernels (expected one of: ref{}{})", want, want,
                 cpu_isa_available(cpu_isa::AVX2) ? ", avx2" : "",
                 cpu_isa_available(cpu_isa::AVX512) ? ", avx512" : "");
        return isa;
    }
    fail("MOE_CPU_ISA={}: unknown instruction set (expected ref, avx2 or avx512)", want);
}

}  // namespace

std::string_view cpu_isa_name(cpu_isa isa) {
    switch (isa) {
        case cpu_isa::REF:
            return "ref";
        case cpu_isa::AVX2:
            return "avx2";
        case cpu_isa::AVX512:
            return "avx512";
    }
    return "?";
}

bool cpu_isa_available(cpu_isa isa) {
    switch (isa) {
        case cpu_isa::REF:
            return true;
#if defined(MOE_HAVE_X86_KERNELS)
        // __builtin_cpu_supports also checks that the OS saves the wider registers (XCR0).
        case cpu_isa::AVX2:
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
        case cpu_isa::AVX512:
            return cpu_isa_available(cpu_isa::AVX2) && __builtin_cpu_supports("avx512f") &&
                   __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#else
        default:
            return false;
#endif
    }
    return false;
}

cpu_isa cpu_isa_selected() {
    static const cpu_isa isa = select_isa();
    return isa;
}

dot_kernel cpu_dot_kernel(tensor_type t, cpu_isa isa) {
    MOE_CHECK(cpu_isa_available(isa));
    if (dot_kernel k = simd_kernel(t, isa)) return k;
    dot_kernel k = ref_kernel(t);
    MOE_CHECK(k != nullptr);
    return k;
}

bool cpu_dot_has_fast_path(tensor_type t, cpu_isa isa) {
    return cpu_isa_available(isa) && simd_kernel(t, isa) != nullptr;
}

}  // namespace moe
