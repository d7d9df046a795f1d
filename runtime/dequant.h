// CPU reference dequantization of every ggml block type we run (docs/model-formats.md §2) and the matching
// reference matrix-vector product. Deliberately plain: one loop per formula, written as in ggml-quants.c, so it
// can serve as the oracle that the CUDA kernels and any later fast path are tested against.
#pragma once

#include <cstdint>

#include "runtime/tensor_types.h"

namespace moe {

// IEEE binary16 -> binary32, exact for every input: subnormals become normal floats, +-0 and +-inf keep their
// sign, NaNs stay NaN with their payload (shifted into the top of the float mantissa; signalling NaNs are not
// quieted).
float fp16_to_f32(uint16_t h);
// binary32 -> binary16 with round-to-nearest-even, gradual underflow to subnormals, overflow to +-inf, and NaN
// kept NaN (quiet, sign and top payload bits kept), like the F16C instruction VCVTPS2PH.
uint16_t f32_to_fp16(float f);
// bfloat16 is the top half of a binary32, so widening is a shift.
float bf16_to_f32(uint16_t b);
// binary32 -> bfloat16 with round-to-nearest-even; NaN is forced quiet (ggml_compute_fp32_to_bf16).
uint16_t f32_to_bf16(float f);

// Whether dequantize_row / matvec_ref (and the CUDA launchers in runtime/cuda/dequant.cuh) handle `t`:
// F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, MXFP4.
bool dequant_supported(tensor_type t);

// Decodes n elements stored in type t at src into dst (float32).
// PRECOND: dequant_supported(t); n >= 0 and a multiple of type_info(t).block_elems; src holds
// n / block_elems blocks packed back to back (no alignment needed beyond 1 byte).
void dequantize_row(tensor_type t, const void* src, float* dst, int64_t n);

// y = W x for a row-major matrix W of n_rows rows of n_cols elements each (ggml ne0 = n_cols, ne1 = n_rows),
// rows packed back to back in type t. Products (exact) and sums are done in double, so the result is the dot
// product of the dequantized weights with x to within float rounding: an oracle for fp32-accumulating kernels.
// PRECOND: as dequantize_row for n = n_cols; y has n_rows elements.
void matvec_ref(tensor_type t, const void* W, const float* x, float* y, int64_t n_cols, int64_t n_rows);

}  // namespace moe
