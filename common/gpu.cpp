// Device discovery that never fails: no CUDA build, no driver or no device all mean "0 GPUs".
#include "common/gpu.h"

#include <fmt/format.h>

namespace moe {

#ifdef MOE_HAVE_CUDA
int gpu_count() {
    static const int count = [] {
        int n = 0;
        if (cudaGetDeviceCount(&n) != cudaSuccess) {
            cudaGetLastError();  // clear the sticky "no driver" error so later calls are not confused
            return 0;
        }
        return n;
    }();
    return count;
}

std::string gpu_description() {
    if (gpu_count() == 0) return "none";
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return "unknown";
    return fmt::format("{} (sm_{}{}, {:.1f} GiB)", p.name, p.major, p.minor,
                       static_cast<double>(p.totalGlobalMem) / (1024.0 * 1024 * 1024));
}

bool gpu_memory_info(uint64_t& free_bytes, uint64_t& total_bytes, int device) {
    if (device < 0 || device >= gpu_count()) return false;
    int prev = 0;
    if (cudaGetDevice(&prev) != cudaSuccess || cudaSetDevice(device) != cudaSuccess) return false;
    size_t f = 0, t = 0;
    const bool ok = cudaMemGetInfo(&f, &t) == cudaSuccess;
    cudaSetDevice(prev);
    if (!ok) {
        cudaGetLastError();
        return false;
    }
    free_bytes = f;
    total_bytes = t;
    return true;
}
#else
int gpu_count() {
    return 0;
}
bool gpu_memory_info(uint64_t&, uint64_t&, int) {
    return false;
}
std::string gpu_description() {
    return "none (built without CUDA)";
}
#endif

}  // namespace moe
