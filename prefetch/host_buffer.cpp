// Pinned host buffers (see host_buffer.h).
#include "prefetch/host_buffer.h"

#include <sys/mman.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <utility>

#include "common/error.h"
#include "common/gpu.h"
#include "common/units.h"

namespace moe {

uint64_t memlock_limit() {
    rlimit rl{};
    if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return std::numeric_limits<uint64_t>::max();
    return uint64_t(rl.rlim_cur);
}

host_buffer::host_buffer(uint64_t bytes) : _bytes(bytes) {
    if (bytes == 0) return;
    const uint64_t rounded = (bytes + 4095) / 4096 * 4096;
#ifdef MOE_HAVE_CUDA
    if (gpu_count() > 0) {
        void* p = nullptr;
        cudaError_t e = cudaHostAlloc(&p, rounded, cudaHostAllocPortable);
        if (e != cudaSuccess) {
            cudaGetLastError();
            fail("cannot allocate {} of pinned host memory (cudaHostAlloc: {})", format_bytes(rounded),
                 cudaGetErrorString(e));
        }
        _data = static_cast<uint8_t*>(p);
        _cuda = true;
        return;
    }
#endif
    _data = static_cast<uint8_t*>(std::aligned_alloc(4096, rounded));
    if (!_data) fail("cannot allocate {} of host memory for staging", format_bytes(rounded));
    if (::mlock(_data, rounded) == 0) {
        _mlocked = true;
    } else {
        const int e = errno;
        const uint64_t lim = memlock_limit();
        warn_once(
            "host-buffer-mlock",
            fmt::format("mlock of {} failed ({}); staging memory may be paged out. RLIMIT_MEMLOCK is {}. "
                        "HINT: raise it (ulimit -l unlimited, or LimitMEMLOCK= in a systemd unit)",
                        format_bytes(rounded), std::strerror(e),
                        lim == std::numeric_limits<uint64_t>::max() ? std::string("unlimited") : format_bytes(lim)));
    }
}

void host_buffer::release() {
    if (!_data) return;
#ifdef MOE_HAVE_CUDA
    if (_cuda) {
        MOE_CUDA_CHECK(cudaFreeHost(_data));
        _data = nullptr;
        return;
    }
#endif
    if (_mlocked) ::munlock(_data, (_bytes + 4095) / 4096 * 4096);
    std::free(_data);
    _data = nullptr;
}

host_buffer::~host_buffer() {
    release();
}

host_buffer::host_buffer(host_buffer&& o) noexcept
    : _data(std::exchange(o._data, nullptr)),
      _bytes(std::exchange(o._bytes, 0)),
      _cuda(o._cuda),
      _mlocked(o._mlocked) {}

host_buffer& host_buffer::operator=(host_buffer&& o) noexcept {
    if (this != &o) {
        release();
        _data = std::exchange(o._data, nullptr);
        _bytes = std::exchange(o._bytes, 0);
        _cuda = o._cuda;
        _mlocked = o._mlocked;
    }
    return *this;
}

}  // namespace moe
