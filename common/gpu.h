// Is there a CUDA device here? Every GPU path asks this first, so a CPU-only machine (or a CUDA build run
// without a GPU) takes the CPU path and GPU tests skip instead of failing.
#pragma once

#include <cstdint>
#include <string>

namespace moe {

// Number of usable CUDA devices: 0 when built without CUDA, without a driver, or without a GPU. The first call
// initialises CUDA (the runtime opens the driver, libcuda, and with a GPU creates its state: tens of MB and a large
// address-space reservation), so only code that is about to use a GPU, or must decide whether to, calls it: a CPU
// run never does. Later calls are free.
int gpu_count();

// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)" for device 0, or "none".
std::string gpu_description();

// Free and total memory of device `device` (cudaMemGetInfo). False, leaving both untouched, without that device.
bool gpu_memory_info(uint64_t& free_bytes, uint64_t& total_bytes, int device = 0);

}  // namespace moe

#ifdef MOE_HAVE_CUDA
#include <cuda_runtime.h>

#include "common/error.h"
// A CUDA failure is a bug or a dead device: print the call, where, and the error, then abort.
#define MOE_CUDA_CHECK(call)                                                                                       \
    do {                                                                                                           \
        cudaError_t _moe_err = (call);                                                                             \
        if (_moe_err != cudaSuccess) ::moe::check_failed(#call, __FILE__, __LINE__, cudaGetErrorString(_moe_err)); \
    } while (0)
#endif
