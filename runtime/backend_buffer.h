// An array in a backend's memory (host memory for the CPU backend, device memory for CUDA) that frees itself.
// It has data() and size() but deliberately no operator[]: indexing it on the host would read device memory,
// so a host that needs the values downloads them (backend::download) into a host array.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include "runtime/backend.h"

namespace moe {

template <typename T>
class backend_array {
public:
    backend_array() = default;
    // n zero-filled elements (backend::alloc: start-up only).
    backend_array(backend& be, size_t n) : _be(&be), _n(n) {
        _p = static_cast<T*>(be.alloc(uint64_t(n == 0 ? 1 : n) * sizeof(T)));
    }
    ~backend_array() { reset(); }
    backend_array(backend_array&& o) noexcept
        : _be(std::exchange(o._be, nullptr)), _p(std::exchange(o._p, nullptr)), _n(std::exchange(o._n, 0)) {}
    backend_array& operator=(backend_array&& o) noexcept {
        if (this != &o) {
            reset();
            _be = std::exchange(o._be, nullptr);
            _p = std::exchange(o._p, nullptr);
            _n = std::exchange(o._n, 0);
        }
        return *this;
    }
    backend_array(const backend_array&) = delete;
    backend_array& operator=(const backend_array&) = delete;

    T* data() const { return _p; }
    size_t size() const { return _n; }
    backend* owner() const { return _be; }  // the backend whose memory (and stream) this is
    uint64_t bytes() const { return uint64_t(_n) * sizeof(T); }

    void reset() {
        if (_be && _p) _be->free(_p);
        _p = nullptr;
        _n = 0;
    }

private:
    backend* _be = nullptr;
    T* _p = nullptr;
    size_t _n = 0;
};

}  // namespace moe
