// Device checksum of a buffer (the same value as moe::checksum64 in prefetch/checksum.h), so tests and
// `moe bench io` can check that the bytes that reached the device are the file's without copying them back.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace moe {

// PRECOND: d_data is 8-byte aligned (cudaMalloc'd slots are 256-byte aligned). Adds the raw word sum of
// d_data[0, bytes) into *d_sum (which the caller zeroes first); asynchronous on `stream`.
void checksum64_accumulate(const void* d_data, uint64_t bytes, unsigned long long* d_sum, cudaStream_t stream);

// Blocking convenience: the full checksum of a device buffer (allocates a word of scratch).
uint64_t checksum64_device(const void* d_data, uint64_t bytes, cudaStream_t stream);

}  // namespace moe
