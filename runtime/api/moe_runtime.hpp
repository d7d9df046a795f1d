// moe_runtime.hpp: a thin header-only C++ RAII wrapper over the C API (moe_runtime.h). Failures throw
// moe_rt::error (status + the library's detailed message) on the caller's side of the boundary; objects free
// themselves; a handle unpins its expert when it goes out of scope.
#pragma once

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "moe_runtime.h"

namespace moe_rt {

class error : public std::runtime_error {
public:
    error(moe_status s, const std::string& what) : std::runtime_error(what), _status(s) {}
    moe_status status() const { return _status; }

private:
    moe_status _status;
};

inline void check(moe_status s) {
    if (s != MOE_OK) throw error(s, std::string(moe_status_string(s)) + ": " + moe_last_error());
}

inline moe_options default_options() {
    moe_options o;
    check(moe_options_init(&o));
    return o;
}

class model {
public:
    explicit model(const std::string& path) { check(moe_model_open(path.c_str(), &_m)); }
    model(model&& o) noexcept : _m(std::exchange(o._m, nullptr)) {}
    model& operator=(model&& o) noexcept {
        std::swap(_m, o._m);
        return *this;
    }
    ~model() { moe_model_close(_m); }

    moe_model_info info() const {
        moe_model_info i{};
        i.struct_size = sizeof(i);
        check(moe_model_get_info(_m, &i));
        return i;
    }
    std::vector<moe_expert_part> expert_parts(int layer, int expert) const {
        size_t n = 0;
        check(moe_model_get_expert_parts(_m, layer, expert, nullptr, 0, &n));
        std::vector<moe_expert_part> parts(n);
        for (auto& p : parts) p.struct_size = sizeof(p);
        check(moe_model_get_expert_parts(_m, layer, expert, parts.data(), parts.size(), &n));
        return parts;
    }
    const moe_model* get() const { return _m; }

private:
    moe_model* _m = nullptr;
};

class layout {
public:
    layout(int n_layers, int n_experts, int top_k) { check(moe_layout_create(n_layers, n_experts, top_k, &_l)); }
    layout(layout&& o) noexcept : _l(std::exchange(o._l, nullptr)) {}
    layout& operator=(layout&& o) noexcept {
        std::swap(_l, o._l);
        return *this;
    }
    ~layout() { moe_layout_destroy(_l); }

    int add_file(const std::string& path) {
        int32_t i = 0;
        check(moe_layout_add_file(_l, path.c_str(), &i));
        return i;
    }
    void set_expert(int layer, int expert, int file, std::span<const moe_range> ranges) {
        check(moe_layout_set_expert(_l, layer, expert, file, ranges.size(), ranges.data()));
    }
    const moe_layout* get() const { return _l; }

private:
    moe_layout* _l = nullptr;
};

// A pin on one expert; unpins when destroyed.
class handle {
public:
    handle() = default;
    explicit handle(moe_handle* h) : _h(h) {}
    handle(handle&& o) noexcept : _h(std::exchange(o._h, nullptr)) {}
    handle& operator=(handle&& o) noexcept {
        std::swap(_h, o._h);
        return *this;
    }
    ~handle() { moe_release(_h); }

    bool ready() const {
        int r = 0;
        check(moe_handle_ready(_h, &r));
        return r != 0;
    }
    void wait() { check(moe_wait(_h)); }
    // The expert's bytes (a device address for a DEVICE tier); waits first.
    std::pair<const void*, uint64_t> data() {
        wait();
        const void* p = nullptr;
        uint64_t n = 0;
        check(moe_handle_data(_h, &p, &n));
        return {p, n};
    }
    void stream_wait(void* cuda_stream) const { check(moe_handle_stream_wait(_h, cuda_stream)); }
    void release() { check(moe_release(std::exchange(_h, nullptr))); }
    moe_handle* get() const { return _h; }

private:
    moe_handle* _h = nullptr;
};

class context {
public:
    context(const model& m, const moe_options& o) { check(moe_context_create(m.get(), &o, &_c)); }
    context(const layout& l, const moe_options& o) { check(moe_context_create_from_layout(l.get(), &o, &_c)); }
    context(context&& o) noexcept : _c(std::exchange(o._c, nullptr)) {}
    context& operator=(context&& o) noexcept {
        std::swap(_c, o._c);
        return *this;
    }
    ~context() { moe_context_destroy(_c); }

    handle acquire(int layer, int expert) {
        moe_handle* h = nullptr;
        check(moe_acquire(_c, layer, expert, &h));
        return handle(h);
    }
    bool prefetch(int layer, int expert) {
        int issued = 0;
        check(moe_prefetch(_c, layer, expert, &issued));
        return issued != 0;
    }
    // Returns the prefetch loads started for the next layer.
    uint32_t route(int layer, std::span<const int32_t> ids, std::span<const float> weights = {}) {
        uint32_t n = 0;
        check(moe_route_ex(_c, layer, ids.size(), ids.data(), weights.empty() ? nullptr : weights.data(), &n));
        return n;
    }
    void set_position(uint32_t seq, uint32_t token) { check(moe_set_position(_c, seq, token)); }
    moe_stats stats() const {
        moe_stats s{};
        s.struct_size = sizeof(s);
        check(moe_get_stats(_c, &s));
        return s;
    }
    moe_stats layer_stats(int layer) const {
        moe_stats s{};
        s.struct_size = sizeof(s);
        check(moe_get_layer_stats(_c, layer, &s));
        return s;
    }
    void reset_stats() { check(moe_reset_stats(_c)); }
    moe_context_info info() const {
        moe_context_info i{};
        i.struct_size = sizeof(i);
        check(moe_context_get_info(_c, &i));
        return i;
    }
    void write_trace(const std::string& path) const { check(moe_trace_write(_c, path.c_str())); }
    moe_context* get() const { return _c; }

private:
    moe_context* _c = nullptr;
};

}  // namespace moe_rt
