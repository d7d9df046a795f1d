// Copy engine (see copy_engine.h): CUDA stream + events with a GPU, a memcpy worker thread without.
#include "prefetch/copy_engine.h"

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "common/gpu.h"

namespace moe {

copy_engine::copy_engine(const copy_engine_config& cfg) : _cfg(cfg) {
    if (_cfg.n_slots == 0) fail("copy engine: needs at least one slot");
    if (_cfg.n_staging == 0 || _cfg.staging_bytes == 0) fail("copy engine: needs at least one staging buffer");
#ifdef MOE_HAVE_CUDA
    // force_host first: a host engine never asks for a GPU, so it never initialises CUDA.
    _device = !_cfg.force_host && gpu_count() > 0;
    if (_device) {
        // Non-blocking: the copy stream must not serialise with the legacy default stream compute may use.
        MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&_stream, cudaStreamNonBlocking));
        _slot_events.resize(_cfg.n_slots);
        for (auto& e : _slot_events) MOE_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
        for (uint32_t i = 0; i < _cfg.n_staging; i++) _staging.emplace_back(_cfg.staging_bytes);
        _staging_events.resize(_cfg.n_staging);
        for (auto& e : _staging_events) MOE_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
        return;
    }
#endif
    _issued.assign(_cfg.n_slots, 0);
    _finished.assign(_cfg.n_slots, 0);
    _worker = std::thread([this] { host_worker(); });
}

copy_engine::~copy_engine() {
    wait_all();
#ifdef MOE_HAVE_CUDA
    if (_device) {
        for (auto& e : _slot_events) MOE_CUDA_CHECK(cudaEventDestroy(e));
        for (auto& e : _staging_events) MOE_CUDA_CHECK(cudaEventDestroy(e));
        MOE_CUDA_CHECK(cudaStreamDestroy(_stream));
        return;
    }
#endif
    {
        std::lock_guard<std::mutex> lock(_mu);
        _stop = true;
    }
    _cv.notify_all();
    _worker.join();
}

void copy_engine::copy(uint32_t slot, void* dst, const void* src, uint64_t bytes, bool src_pinned) {
    MOE_CHECK(slot < _cfg.n_slots);
#ifdef MOE_HAVE_CUDA
    if (_device) {
        std::lock_guard<std::mutex> lock(_mu);
        if (src_pinned) {
            MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, _stream));
        } else {
            // Pageable source: copy through the staging ring. Waiting on a buffer's event before refilling it
            // is what makes reuse safe; with two buffers the memcpy of one overlaps the DMA of the other.
            const auto* s = static_cast<const uint8_t*>(src);
            auto* d = static_cast<uint8_t*>(dst);
            for (uint64_t off = 0; off < bytes;) {
                const uint64_t n = std::min(_cfg.staging_bytes, bytes - off);
                const uint32_t b = _next_staging;
                _next_staging = (_next_staging + 1) % _cfg.n_staging;
                MOE_CUDA_CHECK(cudaEventSynchronize(_staging_events[b]));
                std::memcpy(_staging[b].data(), s + off, n);
                MOE_CUDA_CHECK(cudaMemcpyAsync(d + off, _staging[b].data(), n, cudaMemcpyHostToDevice, _stream));
                MOE_CUDA_CHECK(cudaEventRecord(_staging_events[b], _stream));
                off += n;
            }
        }
        MOE_CUDA_CHECK(cudaEventRecord(_slot_events[slot], _stream));
        return;
    }
#endif
    (void)src_pinned;
    {
        std::lock_guard<std::mutex> lock(_mu);
        _issued[slot]++;
        _jobs.push_back(job{slot, dst, src, bytes});
    }
    _cv.notify_all();
}

bool copy_engine::ready(uint32_t slot) {
    MOE_CHECK(slot < _cfg.n_slots);
#ifdef MOE_HAVE_CUDA
    if (_device) {
        cudaError_t e = cudaEventQuery(_slot_events[slot]);
        if (e == cudaErrorNotReady) return false;
        MOE_CUDA_CHECK(e);
        return true;
    }
#endif
    std::lock_guard<std::mutex> lock(_mu);
    return _finished[slot] == _issued[slot];
}

void copy_engine::wait(uint32_t slot) {
    MOE_CHECK(slot < _cfg.n_slots);
#ifdef MOE_HAVE_CUDA
    if (_device) {
        MOE_CUDA_CHECK(cudaEventSynchronize(_slot_events[slot]));
        return;
    }
#endif
    std::unique_lock<std::mutex> lock(_mu);
    _cv.wait(lock, [&] { return _finished[slot] == _issued[slot]; });
}

void copy_engine::wait_all() {
#ifdef MOE_HAVE_CUDA
    if (_device) {
        MOE_CUDA_CHECK(cudaStreamSynchronize(_stream));
        return;
    }
#endif
    std::unique_lock<std::mutex> lock(_mu);
    _cv.wait(lock, [&] { return _jobs.empty() && _finished == _issued; });
}

#ifdef MOE_HAVE_CUDA
void copy_engine::stream_wait(uint32_t slot, cudaStream_t stream) {
    MOE_CHECK(slot < _cfg.n_slots && _device);
    MOE_CUDA_CHECK(cudaStreamWaitEvent(stream, _slot_events[slot], 0));
}
#endif

void copy_engine::host_worker() {
    std::unique_lock<std::mutex> lock(_mu);
    for (;;) {
        _cv.wait(lock, [&] { return _stop || !_jobs.empty(); });
        if (_jobs.empty()) return;
        job j = _jobs.front();
        _jobs.pop_front();
        lock.unlock();
        std::memcpy(j.dst, j.src, j.bytes);
        lock.lock();
        _finished[j.slot]++;
        _cv.notify_all();
    }
}

}  // namespace moe
