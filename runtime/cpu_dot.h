// Dot products of one weight row (in its stored type) with a float vector: the inner loop of the CPU backend's
// matrix products. One plain reference kernel per type, and SIMD kernels (AVX2+FMA+F16C, AVX-512) for F32, F16,
// BF16, Q8_0, Q4_0, Q4_K, Q5_K and Q6_K, chosen at run time from what the CPU supports.
//
// Determinism: a kernel is a fixed sequence of float operations, so a row gives the same bits whatever the thread
// count or batch it is computed in. The ISA is chosen once per process (cpu_isa_selected), so every product of
// a run -- matvec or matmul, any budget -- uses the same kernel for a given type.
//
// Accuracy (what the SIMD kernels trade, and what tests/runtime/cpu_dot_test.cpp bounds):
//  - every kernel decodes exactly the weights dequantize_row gives (same float operations, no contraction);
//  - F32, F16, BF16: products and sums in double, like the reference, only in a different order;
//  - quantized types: float FMA accumulation in SIMD lanes; the error against the exact sum is at most about
//    (n / lanes + log2(lanes) + a few) float roundings of sum |w_i x_i|.
#pragma once

#include <cstdint>
#include <string_view>

#include "runtime/tensor_types.h"

namespace moe {

enum class cpu_isa { REF, AVX2, AVX512 };

// w: one row of n elements stored in the kernel's type (blocks packed back to back, any alignment).
// PRECOND: n is a multiple of the type's block size.
using dot_kernel = float (*)(const void* w, const float* x, int64_t n);

std::string_view cpu_isa_name(cpu_isa isa);  // "ref", "avx2", "avx512"

// Whether this binary has kernels for isa and this CPU (and OS) can run them. REF is always available.
bool cpu_isa_available(cpu_isa isa);

// The ISA of this process: the environment variable MOE_CPU_ISA (ref, avx2 or avx512) when set, else the best
// available. Decided at the first call and fixed afterwards. Throws moe::error when MOE_CPU_ISA names an unknown
// ISA or one this CPU lacks.
cpu_isa cpu_isa_selected();

// The kernel for rows of type t under isa: its SIMD kernel where it has one for t, else the reference kernel
// (sequential double accumulation of the dequantized row, bit-identical to matvec_ref).
// PRECOND: dequant_supported(t); cpu_isa_available(isa).
dot_kernel cpu_dot_kernel(tensor_type t, cpu_isa isa);

// Whether isa has its own (SIMD) kernel for t rather than falling back to the reference.
bool cpu_dot_has_fast_path(tensor_type t, cpu_isa isa);

namespace detail {
// Per-ISA kernel tables (cpu_dot_avx2.cpp, cpu_dot_avx512.cpp): nullptr for types without a SIMD kernel. These
// translation units are compiled for their ISA; only call them after checking cpu_isa_available.
dot_kernel avx2_dot_kernel(tensor_type t);
dot_kernel avx512_dot_kernel(tensor_type t);
}  // namespace detail

}  // namespace moe
