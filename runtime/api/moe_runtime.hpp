// moe_runtime.hpp: a thin header-only C++ RAII wrapper over the C API (moe_runtime.h). Failures throw
// moe_rt::error (status + the library's detailed message) on the caller's side of the boundary; objects free
// themselves; a handle unpins its expert when it goes out of scope. moe_rt::engine wraps the full runtime.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
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
    moe_tensor_info tensor_info(const std::string& name) const {
        moe_tensor_info t{};
        t.struct_size = sizeof(t);
        check(moe_model_get_tensor_info(_m, name.c_str(), &t));
        return t;
    }
    // The tensor decoded to F32.
    std::vector<float> read_tensor(const std::string& name) const {
        std::vector<float> v(tensor_info(name).n_elements);
        check(moe_model_read_tensor_f32(_m, name.c_str(), v.data(), v.size()));
        return v;
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
    // W: (n_experts, n_embd) router weights of `layer`, for speculative gating (copied).
    void set_router(int layer, std::span<const float> W, int n_embd) {
        check(moe_layout_set_router(_l, layer, W.data(), n_embd));
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
    // route() with the hidden state router `layer` was applied to, for speculative gating (spec / both modes).
    uint32_t route_hidden(int layer, std::span<const int32_t> ids, std::span<const float> hidden,
                          std::span<const float> weights = {}) {
        uint32_t n = 0;
        check(moe_route_hidden(_c, layer, ids.size(), ids.data(), weights.empty() ? nullptr : weights.data(),
                               hidden.data(), hidden.size(), &n));
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
    // level: MOE_LEVEL_EXPERT or MOE_LEVEL_HOST; layer -1: totals.
    moe_stats level_stats(int level, int layer = -1) const {
        moe_stats s{};
        s.struct_size = sizeof(s);
        check(moe_get_level_stats(_c, level, layer, &s));
        return s;
    }
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

inline moe_engine_options default_engine_options() {
    moe_engine_options o;
    check(moe_engine_options_init(&o));
    return o;
}

inline moe_sampler_params greedy() {
    moe_sampler_params p;
    check(moe_sampler_params_init(&p));
    return p;
}

class sampler {
public:
    explicit sampler(const moe_sampler_params& p) { check(moe_sampler_create(&p, &_s)); }
    sampler(sampler&& o) noexcept : _s(std::exchange(o._s, nullptr)) {}
    sampler& operator=(sampler&& o) noexcept {
        std::swap(_s, o._s);
        return *this;
    }
    ~sampler() { moe_sampler_destroy(_s); }

    void accept(int32_t token) { check(moe_sampler_accept(_s, token)); }
    int32_t sample(std::span<const float> logits) {
        int32_t t = 0;
        check(moe_sampler_sample(_s, logits.data(), int32_t(logits.size()), &t));
        return t;
    }

private:
    moe_sampler* _s = nullptr;
};

// The full runtime: a loaded model with its expert cache and KV cache.
class engine {
public:
    engine(const std::string& path, const moe_engine_options& o) { check(moe_engine_create(path.c_str(), &o, &_e)); }
    engine(engine&& o) noexcept : _e(std::exchange(o._e, nullptr)) {}
    engine& operator=(engine&& o) noexcept {
        std::swap(_e, o._e);
        return *this;
    }
    ~engine() { moe_engine_destroy(_e); }

    moe_engine_info info() const {
        moe_engine_info i{};
        i.struct_size = sizeof(i);
        check(moe_engine_get_info(_e, &i));
        return i;
    }
    std::vector<int32_t> tokenize(const std::string& text, bool add_special = true, bool parse_special = false) const {
        size_t n = 0;
        check(moe_tokenize(_e, text.data(), text.size(), add_special, parse_special, nullptr, 0, &n));
        std::vector<int32_t> ids(n);
        check(moe_tokenize(_e, text.data(), text.size(), add_special, parse_special, ids.data(), ids.size(), &n));
        return ids;
    }
    std::string detokenize(std::span<const int32_t> ids, bool special = false) const {
        size_t n = 0;
        check(moe_detokenize(_e, ids.data(), ids.size(), special, nullptr, 0, &n));
        std::string s(n, '\0');
        check(moe_detokenize(_e, ids.data(), ids.size(), special, s.data(), s.size(), &n));
        return s;
    }
    void reset() { check(moe_engine_reset(_e)); }
    // Evaluates after what the sequence holds; returns the last token's logits (all_positions: every token's).
    std::vector<float> eval(std::span<const int32_t> ids, bool all_positions = false) {
        std::vector<float> out(size_t(info().n_vocab) * (all_positions ? ids.size() : 1));
        check(moe_eval(_e, ids.data(), ids.size(), all_positions, out.data()));
        return out;
    }
    // One token; the logits stay valid until the next evaluation.
    std::span<const float> decode(int32_t token) {
        const float* l = nullptr;
        check(moe_decode(_e, token, &l));
        return {l, size_t(info().n_vocab)};
    }
    // Generates up to n_predict tokens after `prompt`; on_token (optional) sees each token and its text and
    // returns true to stop.
    std::vector<int32_t> generate(std::span<const int32_t> prompt, int n_predict, const moe_sampler_params& p,
                                  const std::function<bool(int32_t, std::string_view)>& on_token = {}) {
        std::vector<int32_t> out(size_t(n_predict > 0 ? n_predict : 0));
        size_t n = 0;
        struct call {
            const std::function<bool(int32_t, std::string_view)>* fn;
            std::exception_ptr thrown;
        } c{&on_token, nullptr};
        auto trampoline = [](int32_t t, const char* piece, size_t bytes, void* user) -> int {
            auto* cl = static_cast<call*>(user);
            try {
                return (*cl->fn)(t, std::string_view(piece, bytes)) ? 1 : 0;
            } catch (...) {
                cl->thrown = std::current_exception();  // must not unwind through the C library: stop, rethrow
                return 1;
            }
        };
        const moe_status st = moe_generate(_e, prompt.data(), prompt.size(), n_predict, &p,
                                           on_token ? +trampoline : nullptr, &c, out.data(), out.size(), &n);
        if (c.thrown) std::rethrow_exception(c.thrown);
        check(st);
        out.resize(n);
        return out;
    }
    // level: MOE_LEVEL_EXPERT or MOE_LEVEL_HOST; layer -1: totals.
    moe_stats stats(int level = MOE_LEVEL_EXPERT, int layer = -1) const {
        moe_stats s{};
        s.struct_size = sizeof(s);
        check(moe_engine_get_stats(_e, level, layer, &s));
        return s;
    }
    moe_engine* get() const { return _e; }

private:
    moe_engine* _e = nullptr;
};

}  // namespace moe_rt
