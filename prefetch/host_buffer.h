// Pinned host memory for staging: cudaHostAlloc when a GPU is present (DMA-able, so copies to the device are
// asynchronous and run at full PCIe speed), else 4 KiB-aligned memory locked with mlock (O_DIRECT-ready, and
// never paged out under a model larger than RAM). Locking is best effort: without RLIMIT_MEMLOCK headroom it
// warns once, with a hint, and works unlocked.
#pragma once

#include <cstdint>

namespace moe {

// The soft RLIMIT_MEMLOCK in bytes (UINT64_MAX when unlimited).
uint64_t memlock_limit();

class host_buffer {
public:
    host_buffer() = default;
    // Throws moe::error when the memory itself cannot be had.
    explicit host_buffer(uint64_t bytes);
    ~host_buffer();
    host_buffer(host_buffer&& o) noexcept;
    host_buffer& operator=(host_buffer&& o) noexcept;
    host_buffer(const host_buffer&) = delete;
    host_buffer& operator=(const host_buffer&) = delete;

    uint8_t* data() const { return _data; }
    uint64_t size() const { return _bytes; }
    bool page_locked() const { return _cuda || _mlocked; }  // will not be paged out
    bool cuda_pinned() const { return _cuda; }              // cudaHostAlloc'd: async DMA straight from it

private:
    void release();
    uint8_t* _data = nullptr;  // (bytes) 4096-aligned
    uint64_t _bytes = 0;
    bool _cuda = false;
    bool _mlocked = false;
};

}  // namespace moe
