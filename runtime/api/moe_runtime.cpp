// The C API (moe_runtime.h) over the expert cache, the streamer and the prefetcher (prefetch/prefetcher.h). Every
// exported function runs its body through guard(), which turns each exception into a status code and a
// thread-local message: nothing C++ crosses the boundary.
#include "moe_runtime.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "api_support.h"
#include "cache/expert_cache.h"
#include "cache/memory_tier.h"
#include "cache/policies.h"
#include "cache/trace.h"
#include "common/error.h"
#include "common/gpu.h"
#include "prefetch/prefetcher.h"
#include "prefetch/reader_factory.h"
#include "prefetch/streamer.h"
#include "prefetch/tiered_loader.h"
#include "runtime/cpu_dot.h"
#include "runtime/dequant.h"
#include "runtime/model_desc.h"
#include "runtime/model_file.h"
#include "runtime/offloader.h"

#ifndef MOE_VERSION_MAJOR
#error "the build defines MOE_VERSION_MAJOR/MINOR/PATCH from project(VERSION)"
#endif
#define MOE_STR2(x) #x
#define MOE_STR(x) MOE_STR2(x)

namespace moe_api {

std::string& last_error_text() {
    thread_local std::string text;
    return text;
}

}  // namespace moe_api

using namespace moe_api;

namespace {

void check_readable(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) api_fail(MOE_ERR_IO, "{}: cannot open: {}", path, std::strerror(errno));
}

// Reads exactly `n` bytes at `offset` of `path` (resident tensors: read once, no need for the streamer).
void read_exact(const std::string& path, uint64_t offset, void* dst, uint64_t n) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) api_fail(MOE_ERR_IO, "{}: cannot open: {}", path, std::strerror(errno));
    uint64_t done = 0;
    while (done < n) {
        const ssize_t r = ::pread(fd, static_cast<char*>(dst) + done, n - done, off_t(offset + done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            const int err = r < 0 ? errno : 0;
            ::close(fd);
            api_fail(MOE_ERR_IO, "{}: read of {} bytes at offset {} failed: {}", path, n, offset + done,
                     err ? std::strerror(err) : "unexpected end of file");
        }
        done += uint64_t(r);
    }
    ::close(fd);
}

}  // namespace

// What a context needs from either a model file or a hand-made layout: files and each expert's ranges.
struct expert_source {
    std::string name = "custom";
    std::string arch = "custom";
    int32_t n_layers = 0;
    int32_t n_experts = 0;
    int32_t top_k = 0;
    int32_t n_embd = 0;
    int32_t n_ff_exp = 0;
    std::vector<std::string> paths;
    std::vector<uint64_t> file_sizes;
    std::vector<std::vector<moe::byte_range>> ranges;  // (n_layers * n_experts)
    std::vector<uint8_t> set;                          // (n_layers * n_experts) layouts: expert was described
    // Routers for speculative gating: (n_layers) each (n_experts, router_n_embd) F32 or empty when not given.
    // Layouts: moe_layout_set_router; models: read at context creation when the prefetch mode needs them.
    std::vector<std::vector<float>> routers;
    int32_t router_n_embd = 0;

    uint64_t expert_bytes(size_t i) const {
        uint64_t b = 0;
        for (const auto& r : ranges[i]) b += r.bytes;
        return b;
    }
    void check_key(int32_t layer, int32_t expert) const {
        if (layer < 0 || layer >= n_layers)
            api_fail(MOE_ERR_OUT_OF_RANGE, "layer {} is outside [0, {})", layer, n_layers);
        if (expert < 0 || expert >= n_experts)
            api_fail(MOE_ERR_OUT_OF_RANGE, "expert {} is outside [0, {})", expert, n_experts);
    }
};

struct moe_model {
    moe::model_file file;
    moe::model_desc desc;
    expert_source src;
    std::vector<std::string> type_names;  // (tensor types) storage for moe_expert_part::type
    double rope_freq_base = 10000.0;      // resolved as the forward pass resolves it
};

namespace {

const moe::tensor_desc& find_tensor(const moe_model& m, const char* name) {
    const moe::tensor_desc* t = m.file.find(name);
    if (!t) api_fail(MOE_ERR_UNKNOWN_NAME, "{}: no tensor named '{}'", m.file.paths.front(), name);
    return *t;
}

// A stable C string for a tensor type (type_names grows at open time only).
const char* type_name_of(const moe_model& m, moe::tensor_type t) {
    const std::string name(moe::type_name(t));
    auto it = std::find(m.type_names.begin(), m.type_names.end(), name);
    MOE_CHECK(it != m.type_names.end());
    return it->c_str();
}

}  // namespace

struct moe_layout {
    expert_source src;
};

struct moe_handle {
    moe_context* ctx = nullptr;
    moe::expert_handle pin;
    bool failed = false;  // wait() reported a failed load
};

struct moe_context {
    expert_source src;
    moe_options opts{};
    std::string policy;
    std::string reader_name;
    // The tiers, readers, streamer, caches and prefetcher (runtime/offloader.h).
    std::unique_ptr<moe::offloader> off;

    // Handles: recycled so acquire does not allocate once warm; all owned here so destroy can unpin them.
    std::mutex handles_mu;
    std::vector<std::unique_ptr<moe_handle>> handles;
    std::vector<moe_handle*> free_handles;

    // Router signals: the trace, the last selection of each layer (rank and weight for acquires) and the
    // offloader's prefetcher they drive (null with MOE_PREFETCH_NONE). All guarded by route_mu: the prefetcher
    // and the offloader's clock are driven by one thread at a time.
    mutable std::mutex route_mu;
    moe::routing_trace trace;
    std::vector<uint32_t> last_ids;     // (n_layers, top_k) last row's experts at each layer
    std::vector<float> last_weights;    // (n_layers, top_k)
    std::vector<uint32_t> last_n;       // (n_layers) experts in that row, 0 when none yet
    std::vector<uint64_t> routed_rows;  // (n_layers)
    moe::prefetch_mode mode = moe::prefetch_mode::NONE;
    std::vector<int> row_ids;        // (top_k) scratch: the row as the prefetcher takes it
    std::vector<float> spec_logits;  // (depth, n_experts) scratch: the next layers' router logits
    uint32_t seq = 0, token = 0;
    bool explicit_pos = false;
    int32_t prev_layer = -1;

    moe::prefetcher* prefetch() { return off ? off->prefetch() : nullptr; }
    const moe::prefetcher* prefetch() const { return off ? off->prefetch() : nullptr; }

    ~moe_context() {
        for (auto& h : handles) h->pin.reset();  // pins must die before the cache (its destructor checks)
        off.reset();
    }
};

namespace {

expert_source source_of_model(const moe::model_file& f, const moe::model_desc& d) {
    expert_source s;
    s.name = d.name;
    s.arch = std::string(moe::arch_name(d.architecture));
    s.n_layers = d.layout.n_moe_layers;
    s.n_experts = d.layout.n_experts;
    s.top_k = d.n_experts_used;
    s.n_embd = d.n_embd;
    s.n_ff_exp = d.n_ff_exp;
    s.paths = f.paths;
    s.file_sizes = f.file_sizes;
    s.ranges.resize(d.layout.experts.size());
    s.set.assign(d.layout.experts.size(), 1);
    for (size_t i = 0; i < d.layout.experts.size(); ++i)
        for (const auto& r : d.layout.experts[i].ranges)
            s.ranges[i].push_back(moe::byte_range{uint32_t(r.file), r.offset, r.bytes});
    return s;
}

moe::tier_kind to_tier(int32_t k) {
    switch (k) {
        case MOE_TIER_RAM:
            return moe::tier_kind::RAM;
        case MOE_TIER_PINNED:
            return moe::tier_kind::PINNED_HOST;
        case MOE_TIER_DEVICE:
            return moe::tier_kind::DEVICE;
        default:
            api_fail(MOE_ERR_INVALID_ARGUMENT,
                     "options->tier is {}; expected MOE_TIER_RAM (0), MOE_TIER_PINNED (1) "
                     "or MOE_TIER_DEVICE (2)",
                     k);
    }
}

moe_options default_options() {
    moe_options o{};
    o.struct_size = sizeof(moe_options);
    o.expert_budget_bytes = 0;
    o.host_budget_bytes = 0;
    o.policy = nullptr;
    o.tier = MOE_TIER_RAM;
    o.reader = MOE_READER_AUTO;
    o.queue_depth = 32;
    o.max_in_flight = 4;
    o.prefetch_in_flight = 4;
    o.prefetch_k = 0;
    o.record_trace = 1;
    o.prefetch_mode = MOE_PREFETCH_HISTORY;
    o.prefetch_depth = 1;
    return o;
}

// Rows of recent tokens the history pairs per layer: a prefill batch fed layer by layer (moe_set_position per
// row) pairs rows up to this many tokens apart.
constexpr uint32_t k_history_window = 256;

bool uses_spec(moe::prefetch_mode m) {
    return m == moe::prefetch_mode::SPEC || m == moe::prefetch_mode::BOTH;
}

// Speculative gating applies the routers of the layers after the routed one, so it needs every MoE layer's
// router but the first's: read as F32 (any type dequantize_row decodes) under the names the forward pass uses.
void load_routers(const moe_model& m, expert_source& s) {
    const moe::model_desc& d = m.desc;
    s.router_n_embd = d.n_embd;
    s.routers.assign(size_t(s.n_layers), {});
    for (int32_t ml = 1; ml < s.n_layers; ++ml) {
        const int il = d.layout.moe_layers[size_t(ml)];
        const std::string names[] = {fmt::format("blk.{}.ffn_gate_inp.weight", il),
                                     fmt::format("model.layers.{}.mlp.gate.weight", il),
                                     fmt::format("model.layers.{}.block_sparse_moe.gate.weight", il),
                                     fmt::format("model.layers.{}.mlp.router.weight", il)};
        const moe::tensor_desc* t = nullptr;
        for (const auto& name : names)
            if ((t = m.file.find(name))) break;
        if (!t)
            api_fail(MOE_ERR_UNSUPPORTED,
                     "{}: MoE layer {} (block {}) has no router tensor ('{}' or '{}'): speculative "
                     "gating (options->prefetch_mode spec or both) needs the routers; use "
                     "MOE_PREFETCH_HISTORY",
                     m.file.paths.front(), ml, il, names[0], names[1]);
        if (t->n_dims != 2 || t->ne[0] != d.n_embd || t->ne[1] != d.n_experts)
            api_fail(MOE_ERR_FORMAT,
                     "{}: router '{}' has ggml shape {{{}, {}}} ({} dims); expected {{n_embd = {}, "
                     "n_experts = {}}}",
                     m.file.paths.front(), t->name, t->ne[0], t->ne[1], t->n_dims, d.n_embd, d.n_experts);
        if (!moe::dequant_supported(t->type))
            api_fail(MOE_ERR_UNSUPPORTED,
                     "{}: router '{}' has type {}, which cannot be decoded to F32 (speculative "
                     "gating needs it)",
                     m.file.paths.front(), t->name, moe::type_name(t->type));
        std::vector<uint8_t> raw(t->bytes);
        read_exact(m.file.paths[size_t(t->file)], t->offset, raw.data(), raw.size());
        std::vector<float>& w = s.routers[size_t(ml)];
        w.resize(size_t(d.n_embd) * size_t(d.n_experts));
        moe::dequantize_row(t->type, raw.data(), w.data(), int64_t(w.size()));
    }
}

// model: the model `src` was built from (its routers are read when the prefetch mode needs them); null for a
// layout (its routers come from moe_layout_set_router).
std::unique_ptr<moe_context> make_context(const expert_source& src, const moe_options* user, const moe_model* model) {
    check_size(user, "options");
    moe_options o = default_options();
    read_versioned(o, user);
    const moe::tier_kind kind = to_tier(o.tier);
    const moe::reader_kind rkind = reader_of(o.reader);
    if (o.prefetch_mode < MOE_PREFETCH_NONE || o.prefetch_mode > MOE_PREFETCH_BOTH)
        api_fail(MOE_ERR_INVALID_ARGUMENT, "options->prefetch_mode is {}; expected a moe_prefetch_mode in [0, 3]",
                 o.prefetch_mode);
    const moe::prefetch_mode mode =
        o.prefetch_in_flight == 0 ? moe::prefetch_mode::NONE : moe::prefetch_mode(o.prefetch_mode);
    expert_source s = src;
    if (!uses_spec(mode)) {
        s.routers.clear();
        s.router_n_embd = 0;
    } else if (model) {
        load_routers(*model, s);
    } else {
        s.routers.resize(size_t(s.n_layers));
        for (int32_t l = 1; l < s.n_layers; ++l)
            if (s.routers[size_t(l)].empty())
                api_fail(MOE_ERR_UNSUPPORTED,
                         "options->prefetch_mode is {}: speculative gating needs the router of every "
                         "layer after the first, and layer {} has none (call moe_layout_set_router, "
                         "or use MOE_PREFETCH_HISTORY)",
                         moe::prefetch_mode_name(mode), l);
    }
    const std::string policy = o.policy ? o.policy : "lru";

    const uint32_t n_keys = uint32_t(src.n_layers) * uint32_t(src.n_experts);
    for (uint32_t i = 0; i < n_keys; ++i)
        if (!src.set[i])
            api_fail(MOE_ERR_INVALID_ARGUMENT,
                     "layout: expert {} of layer {} has no byte ranges (call "
                     "moe_layout_set_expert for every expert)",
                     i % src.n_experts, i / src.n_experts);
    for (const auto& p : src.paths) check_readable(p);

    // Everything else is the offloader's to check (one set of rules and messages, runtime/offloader.h).
    moe::offload_layout layout;
    layout.name = src.name;
    layout.n_layers = uint32_t(src.n_layers);
    layout.n_experts = uint32_t(src.n_experts);
    layout.top_k = uint32_t(src.top_k);
    layout.paths = src.paths;
    layout.ranges = src.ranges;
    moe::offload_config oc;
    oc.tier = kind;
    oc.expert_budget_bytes = o.expert_budget_bytes;
    oc.host_budget_bytes = o.host_budget_bytes;
    oc.policy = policy;
    oc.reader = rkind;
    oc.reading.queue_depth = o.queue_depth;
    oc.streaming.max_in_flight = o.max_in_flight;
    oc.prefetch.mode = mode;
    oc.prefetch.depth = o.prefetch_depth;
    oc.prefetch.per_layer = int(std::min<uint32_t>(o.prefetch_k, uint32_t(src.n_experts)));
    oc.prefetch_window = k_history_window;

    auto ctx = std::make_unique<moe_context>();
    ctx->src = std::move(s);
    ctx->policy = policy;
    ctx->opts = o;
    ctx->opts.policy = nullptr;  // the caller's string need not outlive the call
    try {
        ctx->off = std::make_unique<moe::offloader>(layout, oc);
    } catch (const moe::config_error& e) {
        api_fail(status_of(e.fault), "{}", e.what());
    } catch (const moe::error& e) {
        api_fail(rkind == moe::reader_kind::AUTO ? MOE_ERR_IO : MOE_ERR_UNSUPPORTED, "{}", e.what());
    }
    ctx->opts.prefetch_k = uint32_t(ctx->off->config().prefetch.per_layer);
    ctx->reader_name = std::string(ctx->off->reader_name());

    const size_t L = size_t(src.n_layers), E = size_t(src.n_experts), K = size_t(src.top_k);
    ctx->trace.model = src.name.empty() ? "unnamed" : src.name;
    std::replace_if(
        ctx->trace.model.begin(), ctx->trace.model.end(), [](char c) { return c == ' ' || c == ',' || c == '\t'; },
        '_');
    ctx->trace.n_layers = uint32_t(L);
    ctx->trace.n_experts = uint32_t(E);
    ctx->trace.top_k = uint32_t(K);
    ctx->last_ids.assign(L * K, 0);
    ctx->last_weights.assign(L * K, 0.0f);
    ctx->last_n.assign(L, 0);
    ctx->routed_rows.assign(L, 0);
    ctx->row_ids.assign(K, 0);
    ctx->mode = ctx->off->config().prefetch.mode;
    if (ctx->prefetch()) ctx->spec_logits.assign(size_t(ctx->prefetch()->config().depth) * E, 0.0f);
    return ctx;
}

// One routed row (moe_route_ex, moe_route_hidden): checks it, records it, feeds the prefetcher and lets it
// prefetch. hidden: n_embd floats for speculative gating, or null. Returns the prefetch loads started.
uint32_t route_row(moe_context& c, int32_t layer, size_t n, const int32_t* ids, const float* weights,
                   const float* hidden, size_t n_embd) {
    const expert_source& s = c.src;
    if (layer < 0 || layer >= s.n_layers)
        api_fail(MOE_ERR_OUT_OF_RANGE, "layer {} is outside [0, {})", layer, s.n_layers);
    if (n == 0 || n > size_t(s.top_k))
        api_fail(MOE_ERR_INVALID_ARGUMENT, "n = {} experts; a routed row holds 1..top_k = {}", n, s.top_k);
    for (size_t i = 0; i < n; ++i) {
        if (ids[i] < 0 || ids[i] >= s.n_experts)
            api_fail(MOE_ERR_OUT_OF_RANGE, "ids[{}] = {} is outside [0, {})", i, ids[i], s.n_experts);
        for (size_t j = 0; j < i; ++j)
            if (ids[j] == ids[i]) api_fail(MOE_ERR_INVALID_ARGUMENT, "ids[{}] = ids[{}] = {}: duplicate", j, i, ids[i]);
    }
    if (hidden) {
        if (!uses_spec(c.mode))
            api_fail(MOE_ERR_UNSUPPORTED,
                     "the context's prefetch mode is '{}': a hidden state is used only with "
                     "options->prefetch_mode MOE_PREFETCH_SPEC or MOE_PREFETCH_BOTH (and "
                     "prefetch_in_flight > 0); call moe_route",
                     moe::prefetch_mode_name(c.mode));
        if (n_embd != size_t(s.router_n_embd))
            api_fail(MOE_ERR_INVALID_ARGUMENT, "n_embd = {}; the routers take hidden states of {} floats", n_embd,
                     s.router_n_embd);
    }
    std::lock_guard<std::mutex> lock(c.route_mu);
    if (!c.explicit_pos && c.prev_layer >= 0 && layer <= c.prev_layer) ++c.token;
    c.prev_layer = layer;
    c.off->tick();
    const size_t K = size_t(s.top_k), l = size_t(layer);
    if (c.opts.record_trace) {
        moe::trace_row row;
        row.seq = c.seq;
        row.token = c.token;
        row.layer = uint32_t(layer);
        for (size_t i = 0; i < n; ++i) row.experts.push_back(uint32_t(ids[i]));
        if (weights) row.weights.assign(weights, weights + n);
        c.trace.rows.push_back(std::move(row));
    }
    ++c.routed_rows[l];
    for (size_t i = 0; i < n; ++i) {
        c.last_ids[l * K + i] = uint32_t(ids[i]);
        c.last_weights[l * K + i] = weights ? weights[i] : 0.0f;
    }
    c.last_n[l] = uint32_t(n);
    if (!c.prefetch()) return 0;

    // The token's position is the history's pairing key: the context's own counter, or moe_set_position's.
    for (size_t i = 0; i < n; ++i) c.row_ids[i] = int(ids[i]);
    c.prefetch()->routed(uint32_t(layer), c.token, 1, std::span<const int>(c.row_ids.data(), n), uint32_t(n));
    std::span<const float> logits;
    if (hidden) {
        // Router layer+1+d on this layer's hidden state ranks layer+1+d's experts (docs/prefetch.md).
        const size_t E = size_t(s.n_experts), D = size_t(s.router_n_embd);
        const int n_spec = c.prefetch()->n_spec_layers(uint32_t(layer));
        const moe::dot_kernel dot = moe::cpu_dot_kernel(moe::tensor_type::F32, moe::cpu_isa_selected());
        for (int d = 0; d < n_spec; ++d) {
            const std::vector<float>& W = s.routers[l + 1 + size_t(d)];
            for (size_t e = 0; e < E; ++e) c.spec_logits[size_t(d) * E + e] = dot(W.data() + e * D, hidden, int64_t(D));
        }
        logits = std::span<const float>(c.spec_logits.data(), size_t(n_spec) * E);
    }
    return c.prefetch()->prefetch(uint32_t(layer), c.off->now(), logits);
}

// The figures of one cache level, of one layer or (layer = -1) all, with the prefetcher's over the same layers.
void read_stats(const moe_context* ctx, int32_t level, int32_t layer, moe_stats* stats) {
    need(ctx, "ctx");
    check_size(stats, "stats");
    if (layer < -1 || layer >= ctx->src.n_layers)
        api_fail(MOE_ERR_OUT_OF_RANGE, "layer {} is outside [0, {}) (or -1 for totals)", layer, ctx->src.n_layers);
    const moe::expert_cache* c = nullptr;
    if (level == MOE_LEVEL_EXPERT)
        c = &ctx->off->cache();
    else if (level == MOE_LEVEL_HOST)
        c = ctx->off->host_cache();
    else
        api_fail(MOE_ERR_INVALID_ARGUMENT, "level {}: expected MOE_LEVEL_EXPERT (0) or MOE_LEVEL_HOST (1)", level);
    if (!c) api_fail(MOE_ERR_OUT_OF_RANGE, "the context has no host tier (options->host_budget_bytes was 0)");
    const moe::cache_stats cs = c->stats();
    uint64_t rows = 0;
    moe::prefetcher_layer_stats ps;
    {
        std::lock_guard<std::mutex> lock(ctx->route_mu);
        for (size_t l = 0; l < ctx->routed_rows.size(); ++l)
            if (layer < 0 || size_t(layer) == l) {
                rows += ctx->routed_rows[l];
                if (ctx->prefetch()) ps += ctx->prefetch()->stats()[l];
            }
    }
    moe_stats r;
    fill_stats(r, layer < 0 ? cs.total() : cs.layers[size_t(layer)], rows, ps);
    write_versioned(stats, r);
}

}  // namespace

extern "C" {

MOE_API const char* moe_status_string(moe_status s) {
    switch (s) {
        case MOE_OK:
            return "MOE_OK";
        case MOE_ERR_INVALID_ARGUMENT:
            return "MOE_ERR_INVALID_ARGUMENT";
        case MOE_ERR_OUT_OF_RANGE:
            return "MOE_ERR_OUT_OF_RANGE";
        case MOE_ERR_IO:
            return "MOE_ERR_IO";
        case MOE_ERR_FORMAT:
            return "MOE_ERR_FORMAT";
        case MOE_ERR_BUDGET:
            return "MOE_ERR_BUDGET";
        case MOE_ERR_UNKNOWN_NAME:
            return "MOE_ERR_UNKNOWN_NAME";
        case MOE_ERR_UNSUPPORTED:
            return "MOE_ERR_UNSUPPORTED";
        case MOE_ERR_BUSY:
            return "MOE_ERR_BUSY";
        case MOE_ERR_NOT_READY:
            return "MOE_ERR_NOT_READY";
        case MOE_ERR_OUT_OF_MEMORY:
            return "MOE_ERR_OUT_OF_MEMORY";
        case MOE_ERR_INTERNAL:
            return "MOE_ERR_INTERNAL";
    }
    return "MOE_ERR_UNKNOWN_STATUS";
}

MOE_API const char* moe_last_error(void) {
    return last_error_text().c_str();
}

MOE_API const char* moe_version_string(void) {
    return MOE_STR(MOE_VERSION_MAJOR) "." MOE_STR(MOE_VERSION_MINOR) "." MOE_STR(MOE_VERSION_PATCH);
}

MOE_API moe_status moe_version(int* major, int* minor, int* patch) {
    return guard("moe_version", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(major, "major");
        need(minor, "minor");
        need(patch, "patch");
        *major = MOE_VERSION_MAJOR;
        *minor = MOE_VERSION_MINOR;
        *patch = MOE_VERSION_PATCH;
    });
}

// ---- models ------------------------------------------------------------------------------------------------

MOE_API moe_status moe_model_open(const char* path, moe_model** out) {
    return guard("moe_model_open", MOE_ERR_FORMAT, [&] {
        need(out, "out");
        *out = nullptr;
        need(path, "path");
        check_readable(path);
        auto m = std::make_unique<moe_model>();
        m->file = moe::open_model_file(path);
        m->desc = moe::describe_model(m->file);
        m->src = source_of_model(m->file, m->desc);
        for (const auto& t : m->file.tensors) {
            std::string name(moe::type_name(t.type));
            if (std::find(m->type_names.begin(), m->type_names.end(), name) == m->type_names.end())
                m->type_names.push_back(name);
        }
        m->rope_freq_base = m->desc.rope_freq_base;
        // transformers v5 writes rope_theta under rope_parameters (as load_model_weights resolves it).
        const nlohmann::json& cfg = m->file.config;
        if (cfg.is_object() && !cfg.contains("rope_theta")) {
            auto rp = cfg.find("rope_parameters");
            if (rp != cfg.end() && rp->is_object() && rp->contains("rope_theta") && (*rp)["rope_theta"].is_number())
                m->rope_freq_base = (*rp)["rope_theta"].get<double>();
        }
        *out = m.release();
    });
}

MOE_API void moe_model_close(moe_model* model) {
    delete model;
}

MOE_API moe_status moe_model_get_info(const moe_model* model, moe_model_info* info) {
    return guard("moe_model_get_info", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(model, "model");
        check_size(info, "info");
        moe_model_info r{};
        r.struct_size = sizeof(r);
        const expert_source& s = model->src;
        r.n_layers = s.n_layers;
        r.n_experts = s.n_experts;
        r.top_k = s.top_k;
        r.n_embd = s.n_embd;
        r.n_ff_exp = s.n_ff_exp;
        r.n_files = int32_t(s.paths.size());
        r.max_expert_bytes = model->desc.layout.max_expert_bytes;
        r.total_expert_bytes = model->desc.layout.total_bytes;
        r.arch = s.arch.c_str();
        r.name = s.name.c_str();
        const moe::model_desc& d = model->desc;
        r.n_blocks = d.n_layers;
        r.n_vocab = d.n_vocab;
        r.n_head = d.n_head;
        r.n_head_kv = d.n_head_kv;
        r.head_dim_k = d.head_dim_k;
        r.head_dim_v = d.head_dim_v;
        r.n_rot = d.n_rot;
        r.rope_style = d.rope == moe::rope_style::NORM ? 0 : 1;
        r.rope_freq_base = float(model->rope_freq_base);
        r.rms_eps = float(d.rms_eps);
        r.gating = d.gating == moe::gating_func::SOFTMAX ? 0 : d.gating == moe::gating_func::SIGMOID ? 1 : 2;
        r.norm_topk = d.norm_topk ? 1 : 0;
        r.expert_weights_scale = float(d.weights_scale);
        write_versioned(info, r);
    });
}

MOE_API moe_status moe_model_get_expert_parts(const moe_model* model, int32_t layer, int32_t expert,
                                              moe_expert_part* parts, size_t capacity, size_t* n_parts) {
    return guard("moe_model_get_expert_parts", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(model, "model");
        need(n_parts, "n_parts");
        if (capacity > 0) need(parts, "parts");
        model->src.check_key(layer, expert);
        const moe::expert_entry& e = model->desc.layout.at(layer, expert);
        *n_parts = e.ranges.size();
        uint64_t slot_off = 0;
        for (size_t i = 0; i < e.ranges.size(); ++i) {
            const moe::expert_range& r = e.ranges[i];
            if (i < capacity) {
                check_size(&parts[i], "parts[i]");
                moe_expert_part p{};
                p.struct_size = sizeof(p);
                p.kind = int32_t(r.part);
                const std::string t(moe::type_name(r.type));
                p.type = std::find(model->type_names.begin(), model->type_names.end(), t)->c_str();
                p.slot_offset = slot_off;
                p.bytes = r.bytes;
                p.file = r.file;
                p.file_offset = r.offset;
                write_versioned(&parts[i], p);
            }
            slot_off += r.bytes;
        }
    });
}

MOE_API moe_status moe_model_get_expert_bytes(const moe_model* model, int32_t layer, int32_t expert, uint64_t* bytes) {
    return guard("moe_model_get_expert_bytes", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(model, "model");
        need(bytes, "bytes");
        model->src.check_key(layer, expert);
        *bytes = model->desc.layout.at(layer, expert).bytes;
    });
}

MOE_API moe_status moe_model_get_tensor_info(const moe_model* model, const char* name, moe_tensor_info* info) {
    return guard("moe_model_get_tensor_info", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(model, "model");
        need(name, "name");
        check_size(info, "info");
        const moe::tensor_desc& t = find_tensor(*model, name);
        moe_tensor_info r{};
        r.struct_size = sizeof(r);
        r.type = type_name_of(*model, t.type);
        r.n_dims = t.n_dims;
        r.n_elements = 1;
        for (int i = 0; i < 4; ++i) {
            r.ne[i] = t.ne[i];
            r.n_elements *= uint64_t(t.ne[i]);
        }
        r.bytes = t.bytes;
        r.file = t.file;
        r.file_offset = t.offset;
        write_versioned(info, r);
    });
}

MOE_API moe_status moe_model_read_tensor_f32(const moe_model* model, const char* name, float* dst, size_t capacity) {
    return guard("moe_model_read_tensor_f32", MOE_ERR_IO, [&] {
        need(model, "model");
        need(name, "name");
        need(dst, "dst");
        const moe::tensor_desc& t = find_tensor(*model, name);
        uint64_t n = 1;
        for (int i = 0; i < 4; ++i) n *= uint64_t(t.ne[i]);
        if (capacity < n)
            api_fail(MOE_ERR_INVALID_ARGUMENT, "tensor '{}' has {} elements; dst holds {}", name, n, capacity);
        if (!moe::dequant_supported(t.type))
            api_fail(MOE_ERR_UNSUPPORTED, "tensor '{}' has type {}, which cannot be decoded to F32", name,
                     moe::type_name(t.type));
        std::vector<uint8_t> raw(t.bytes);
        read_exact(model->file.paths[size_t(t.file)], t.offset, raw.data(), raw.size());
        // Rows are whole blocks back to back, so the tensor decodes as one long row.
        moe::dequantize_row(t.type, raw.data(), dst, int64_t(n));
    });
}

// ---- layouts -----------------------------------------------------------------------------------------------

MOE_API moe_status moe_layout_create(int32_t n_layers, int32_t n_experts, int32_t top_k, moe_layout** out) {
    return guard("moe_layout_create", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(out, "out");
        *out = nullptr;
        if (n_layers <= 0 || n_experts <= 0)
            api_fail(MOE_ERR_OUT_OF_RANGE, "n_layers ({}) and n_experts ({}) must be positive", n_layers, n_experts);
        if (uint64_t(n_layers) * uint64_t(n_experts) > (1u << 24))
            api_fail(MOE_ERR_OUT_OF_RANGE, "n_layers x n_experts = {} exceeds the limit of {} experts",
                     uint64_t(n_layers) * uint64_t(n_experts), 1u << 24);
        if (top_k <= 0 || top_k > n_experts)
            api_fail(MOE_ERR_OUT_OF_RANGE, "top_k {} is outside [1, n_experts = {}]", top_k, n_experts);
        auto l = std::make_unique<moe_layout>();
        l->src.n_layers = n_layers;
        l->src.n_experts = n_experts;
        l->src.top_k = top_k;
        l->src.ranges.resize(size_t(n_layers) * size_t(n_experts));
        l->src.set.assign(size_t(n_layers) * size_t(n_experts), 0);
        *out = l.release();
    });
}

MOE_API void moe_layout_destroy(moe_layout* layout) {
    delete layout;
}

MOE_API moe_status moe_layout_add_file(moe_layout* layout, const char* path, int32_t* file_index) {
    return guard("moe_layout_add_file", MOE_ERR_IO, [&] {
        need(layout, "layout");
        need(path, "path");
        need(file_index, "file_index");
        struct stat st {};
        if (::stat(path, &st) != 0) api_fail(MOE_ERR_IO, "{}: cannot open: {}", path, std::strerror(errno));
        if (!S_ISREG(st.st_mode)) api_fail(MOE_ERR_IO, "{}: not a regular file", path);
        layout->src.paths.emplace_back(path);
        layout->src.file_sizes.push_back(uint64_t(st.st_size));
        *file_index = int32_t(layout->src.paths.size() - 1);
    });
}

MOE_API moe_status moe_layout_set_expert(moe_layout* layout, int32_t layer, int32_t expert, int32_t file_index,
                                         size_t n_ranges, const moe_range* ranges) {
    return guard("moe_layout_set_expert", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(layout, "layout");
        expert_source& s = layout->src;
        s.check_key(layer, expert);
        if (file_index < 0 || size_t(file_index) >= s.paths.size())
            api_fail(MOE_ERR_OUT_OF_RANGE,
                     "file_index {} is outside [0, {}) (register files with "
                     "moe_layout_add_file)",
                     file_index, s.paths.size());
        if (n_ranges == 0) api_fail(MOE_ERR_INVALID_ARGUMENT, "n_ranges is 0: an expert needs at least one range");
        need(ranges, "ranges");
        const uint64_t size = s.file_sizes[size_t(file_index)];
        std::vector<moe::byte_range> rs;
        uint64_t total = 0;
        for (size_t i = 0; i < n_ranges; ++i) {
            const moe_range& r = ranges[i];
            if (r.bytes == 0) api_fail(MOE_ERR_INVALID_ARGUMENT, "ranges[{}] is empty (0 bytes)", i);
            if (r.offset > size || r.bytes > size - r.offset)
                api_fail(MOE_ERR_OUT_OF_RANGE, "ranges[{}] = [{}, {}) reaches past the end of {} ({} bytes)", i,
                         r.offset, r.offset + r.bytes, s.paths[size_t(file_index)], size);
            total += r.bytes;
            rs.push_back(moe::byte_range{uint32_t(file_index), r.offset, r.bytes});
        }
        const size_t i = size_t(layer) * size_t(s.n_experts) + size_t(expert);
        s.ranges[i] = std::move(rs);
        s.set[i] = 1;
        (void)total;
    });
}

MOE_API moe_status moe_layout_set_router(moe_layout* layout, int32_t layer, const float* W, int32_t n_embd) {
    return guard("moe_layout_set_router", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(layout, "layout");
        expert_source& s = layout->src;
        if (layer < 0 || layer >= s.n_layers)
            api_fail(MOE_ERR_OUT_OF_RANGE, "layer {} is outside [0, {})", layer, s.n_layers);
        need(W, "W");
        if (n_embd <= 0) api_fail(MOE_ERR_INVALID_ARGUMENT, "n_embd is {}; expected the hidden size (> 0)", n_embd);
        if (s.router_n_embd != 0 && n_embd != s.router_n_embd)
            api_fail(MOE_ERR_INVALID_ARGUMENT,
                     "n_embd is {}, but an earlier router of this layout has n_embd {}: every "
                     "router takes the same hidden state",
                     n_embd, s.router_n_embd);
        s.routers.resize(size_t(s.n_layers));
        s.routers[size_t(layer)].assign(W, W + size_t(s.n_experts) * size_t(n_embd));
        s.router_n_embd = n_embd;
    });
}

// ---- contexts ----------------------------------------------------------------------------------------------

MOE_API moe_status moe_options_init(moe_options* opts) {
    return guard("moe_options_init", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(opts, "opts");
        *opts = default_options();
    });
}

MOE_API moe_status moe_context_create(const moe_model* model, const moe_options* opts, moe_context** out) {
    return guard("moe_context_create", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(out, "out");
        *out = nullptr;
        need(model, "model");
        *out = make_context(model->src, opts, model).release();
    });
}

MOE_API moe_status moe_context_create_from_layout(const moe_layout* layout, const moe_options* opts,
                                                  moe_context** out) {
    return guard("moe_context_create_from_layout", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(out, "out");
        *out = nullptr;
        need(layout, "layout");
        *out = make_context(layout->src, opts, nullptr).release();
    });
}

MOE_API void moe_context_destroy(moe_context* ctx) {
    try {
        delete ctx;
    } catch (...) {
        // Destructors below do not throw; nothing may escape a C function either way.
    }
}

MOE_API moe_status moe_context_get_info(const moe_context* ctx, moe_context_info* info) {
    return guard("moe_context_get_info", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(ctx, "ctx");
        check_size(info, "info");
        moe_context_info r{};
        r.struct_size = sizeof(r);
        r.tier = ctx->opts.tier;
        const moe::memory_tier& tier = ctx->off->compute_tier();
        r.n_slots = tier.n_slots();
        r.slot_bytes = tier.slot_bytes();
        r.budget_bytes = tier.budget_bytes();
        r.high_water_bytes = tier.bytes_high_water();
        r.policy = ctx->policy.c_str();
        r.reader = ctx->reader_name.c_str();
        if (const moe::memory_tier* ht = ctx->off->host_tier()) {
            r.host_n_slots = ht->n_slots();
            r.host_budget_bytes = ht->budget_bytes();
            r.host_high_water_bytes = ht->bytes_high_water();
        }
        r.prefetch_mode = int32_t(ctx->mode);  // moe_prefetch_mode mirrors moe::prefetch_mode (moe_engine.cpp)
        r.prefetch_depth = ctx->prefetch() ? ctx->prefetch()->config().depth : 0;
        r.prefetch_k = ctx->prefetch() ? int32_t(ctx->opts.prefetch_k) : 0;
        r.router_n_embd = ctx->src.router_n_embd;
        write_versioned(info, r);
    });
}

// ---- experts -----------------------------------------------------------------------------------------------

MOE_API moe_status moe_acquire(moe_context* ctx, int32_t layer, int32_t expert, moe_handle** out) {
    return guard("moe_acquire", MOE_ERR_BUSY, [&] {
        need(out, "out");
        *out = nullptr;
        need(ctx, "ctx");
        ctx->src.check_key(layer, expert);
        moe::access_info access;
        {
            // Rank and weight from the last routed row of this layer, when it selected this expert.
            std::lock_guard<std::mutex> lock(ctx->route_mu);
            access.time = ctx->off->now();
            const size_t K = size_t(ctx->src.top_k);
            for (uint32_t r = 0; r < ctx->last_n[size_t(layer)]; ++r)
                if (ctx->last_ids[size_t(layer) * K + r] == uint32_t(expert)) {
                    access.rank = r;
                    access.weight = ctx->last_weights[size_t(layer) * K + r];
                }
        }
        moe_handle* h = nullptr;
        {
            std::lock_guard<std::mutex> lock(ctx->handles_mu);
            if (ctx->free_handles.empty()) {
                ctx->handles.push_back(std::make_unique<moe_handle>());
                ctx->free_handles.push_back(ctx->handles.back().get());
            }
            h = ctx->free_handles.back();
            ctx->free_handles.pop_back();
        }
        h->ctx = ctx;
        h->failed = false;
        const moe::expert_key key{uint32_t(layer), uint32_t(expert)};
        try {
            h->pin = ctx->off->cache().acquire(key, access);
        } catch (...) {
            std::lock_guard<std::mutex> lock(ctx->handles_mu);
            h->ctx = nullptr;
            ctx->free_handles.push_back(h);
            throw;
        }
        // A demand that joined a queued prefetch must overtake the other prefetches (the cache does not call
        // its loader for a join).
        if (!h->pin.ready()) ctx->off->loader().promote(key);
        *out = h;
    });
}

MOE_API moe_status moe_handle_ready(const moe_handle* h, int* ready) {
    return guard("moe_handle_ready", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(h, "handle");
        need(ready, "ready");
        *ready = (!h->failed && h->pin.valid() && h->pin.ready()) ? 1 : 0;
    });
}

MOE_API moe_status moe_wait(moe_handle* h) {
    return guard("moe_wait", MOE_ERR_IO, [&] {
        need(h, "handle");
        if (h->failed || !h->pin.valid())
            api_fail(MOE_ERR_IO, "the handle's load failed earlier (see the previous moe_wait's message)");
        try {
            h->pin.wait();
        } catch (...) {
            h->failed = true;
            throw;
        }
    });
}

MOE_API moe_status moe_handle_data(const moe_handle* h, const void** data, uint64_t* bytes) {
    return guard("moe_handle_data", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(h, "handle");
        need(data, "data");
        if (h->failed || !h->pin.valid()) api_fail(MOE_ERR_IO, "the handle's load failed; it holds no data");
        if (!h->pin.ready())
            api_fail(MOE_ERR_NOT_READY, "expert {} of layer {} is still loading: call moe_wait first",
                     h->pin.key().expert, h->pin.key().layer);
        *data = h->pin.data();
        if (bytes) *bytes = h->pin.bytes();
    });
}

MOE_API moe_status moe_handle_stream_wait(const moe_handle* h, void* cuda_stream) {
    return guard("moe_handle_stream_wait", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(h, "handle");
        if (h->failed || !h->pin.valid()) api_fail(MOE_ERR_IO, "the handle's load failed; it holds no data");
        if (const moe::tiered_loader* tiered = h->ctx->off->host_loader()) {
            // From the host tier the copy into the slot has landed before the load completes: nothing to wait on.
            if (!tiered->on_device())
                api_fail(MOE_ERR_UNSUPPORTED,
                         "the context's tier is in host memory: there is no copy event to wait on");
            if (!h->pin.ready())
                api_fail(MOE_ERR_NOT_READY, "expert {} of layer {} is still loading: call moe_wait first",
                         h->pin.key().expert, h->pin.key().layer);
            (void)cuda_stream;
            return;
        }
        if (!h->ctx->off->expert_streamer().on_device())
            api_fail(MOE_ERR_UNSUPPORTED, "the context's tier is in host memory: there is no copy event to wait on");
#ifdef MOE_HAVE_CUDA
        if (!h->pin.ready())
            api_fail(MOE_ERR_NOT_READY, "expert {} of layer {} is still loading: call moe_wait first",
                     h->pin.key().expert, h->pin.key().layer);
        h->ctx->off->expert_streamer().stream_wait(h->pin.slot(), static_cast<cudaStream_t>(cuda_stream));
#else
        (void)cuda_stream;
#endif
    });
}

MOE_API moe_status moe_release(moe_handle* h) {
    return guard("moe_release", MOE_ERR_INVALID_ARGUMENT, [&] {
        if (!h) return;
        moe_context* ctx = h->ctx;
        if (!ctx) api_fail(MOE_ERR_INVALID_ARGUMENT, "the handle was already released");
        h->pin.reset();
        h->ctx = nullptr;
        h->failed = false;
        std::lock_guard<std::mutex> lock(ctx->handles_mu);
        ctx->free_handles.push_back(h);
    });
}

MOE_API moe_status moe_prefetch(moe_context* ctx, int32_t layer, int32_t expert, int* issued) {
    return guard("moe_prefetch", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(ctx, "ctx");
        ctx->src.check_key(layer, expert);
        uint64_t now;
        {
            std::lock_guard<std::mutex> lock(ctx->route_mu);
            now = ctx->off->now();
        }
        const bool ok = ctx->off->cache().prefetch(moe::expert_key{uint32_t(layer), uint32_t(expert)},
                                                   moe::access_info{now, 0, 0.0f});
        if (issued) *issued = ok ? 1 : 0;
    });
}

MOE_API moe_status moe_set_position(moe_context* ctx, uint32_t seq, uint32_t token) {
    return guard("moe_set_position", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(ctx, "ctx");
        std::lock_guard<std::mutex> lock(ctx->route_mu);
        ctx->seq = seq;
        ctx->token = token;
        ctx->explicit_pos = true;
    });
}

MOE_API moe_status moe_route_ex(moe_context* ctx, int32_t layer, size_t n, const int32_t* ids, const float* weights,
                                uint32_t* n_prefetched) {
    return guard("moe_route", MOE_ERR_INVALID_ARGUMENT, [&] {
        if (n_prefetched) *n_prefetched = 0;
        need(ctx, "ctx");
        need(ids, "ids");
        const uint32_t issued = route_row(*ctx, layer, n, ids, weights, nullptr, 0);
        if (n_prefetched) *n_prefetched = issued;
    });
}

MOE_API moe_status moe_route_hidden(moe_context* ctx, int32_t layer, size_t n, const int32_t* ids, const float* weights,
                                    const float* hidden, size_t n_embd, uint32_t* n_prefetched) {
    return guard("moe_route_hidden", MOE_ERR_INVALID_ARGUMENT, [&] {
        if (n_prefetched) *n_prefetched = 0;
        need(ctx, "ctx");
        need(ids, "ids");
        need(hidden, "hidden");
        const uint32_t issued = route_row(*ctx, layer, n, ids, weights, hidden, n_embd);
        if (n_prefetched) *n_prefetched = issued;
    });
}

MOE_API moe_status moe_route(moe_context* ctx, int32_t layer, size_t n, const int32_t* ids, const float* weights) {
    return moe_route_ex(ctx, layer, n, ids, weights, nullptr);
}

// ---- statistics and traces ---------------------------------------------------------------------------------

MOE_API moe_status moe_get_stats(const moe_context* ctx, moe_stats* stats) {
    return guard("moe_get_stats", MOE_ERR_INVALID_ARGUMENT, [&] { read_stats(ctx, MOE_LEVEL_EXPERT, -1, stats); });
}

MOE_API moe_status moe_get_layer_stats(const moe_context* ctx, int32_t layer, moe_stats* stats) {
    return guard("moe_get_layer_stats", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(ctx, "ctx");
        if (layer < 0 || layer >= ctx->src.n_layers)
            api_fail(MOE_ERR_OUT_OF_RANGE, "layer {} is outside [0, {})", layer, ctx->src.n_layers);
        read_stats(ctx, MOE_LEVEL_EXPERT, layer, stats);
    });
}

MOE_API moe_status moe_reset_stats(moe_context* ctx) {
    return guard("moe_reset_stats", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(ctx, "ctx");
        ctx->off->cache().reset_stats();
        if (ctx->off->host_cache()) ctx->off->host_cache()->reset_stats();
        std::lock_guard<std::mutex> lock(ctx->route_mu);
        std::fill(ctx->routed_rows.begin(), ctx->routed_rows.end(), 0);
        if (ctx->prefetch()) ctx->prefetch()->reset_stats();
    });
}

MOE_API moe_status moe_get_level_stats(const moe_context* ctx, int32_t level, int32_t layer, moe_stats* stats) {
    return guard("moe_get_level_stats", MOE_ERR_INVALID_ARGUMENT, [&] { read_stats(ctx, level, layer, stats); });
}

MOE_API moe_status moe_trace_write(const moe_context* ctx, const char* path) {
    return guard("moe_trace_write", MOE_ERR_IO, [&] {
        need(ctx, "ctx");
        need(path, "path");
        std::lock_guard<std::mutex> lock(ctx->route_mu);
        moe::write_trace(std::string(path), ctx->trace);
    });
}

}  // extern "C"
