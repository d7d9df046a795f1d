// The engine (see engine.h): start-up wiring of files, weights, tier, streamer, cache and forward pass.
#include "runtime/engine.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "cache/expert_cache.h"
#include "cache/memory_tier.h"
#include "cache/policies.h"
#include "prefetch/tiered_loader.h"
#include "common/error.h"
#include "common/units.h"
#include "runtime/backend_cpu.h"
#include "runtime/backend_cuda.h"

namespace moe {

namespace {
constexpr uint64_t k_slot_align = 4096;  // memory_tier's slot alignment (O_DIRECT reads land in slots)
}

uint64_t engine::slot_bytes_for(const model_desc& desc) {
    return (desc.layout.max_expert_bytes + k_slot_align - 1) / k_slot_align * k_slot_align;
}

engine::engine(const std::string& model_path, const engine_config& cfg) : _cfg(cfg) {
    _file = open_model_file(model_path);
    _desc = describe_model(_file);
    check_forward_supported(_desc, model_path);
    _weights = load_model_weights(_file, _desc, cfg.load_progress);
    // The backend decides where expert slots live, so it comes first (and a CUDA request without a GPU fails
    // before anything is reserved).
    const bool use_cuda =
        cfg.backend == backend_kind::CUDA || (cfg.backend == backend_kind::AUTO && cuda_backend_available());
    if (use_cuda) _backend = make_backend_cuda();

    const auto& L = _desc.layout;
    const uint32_t n_keys = uint32_t(L.n_moe_layers) * uint32_t(L.n_experts);
    memory_tier_config tc;
    tc.kind = use_cuda ? tier_kind::DEVICE : tier_kind::RAM;
    tc.budget_bytes = cfg.expert_budget_bytes ? cfg.expert_budget_bytes : std::numeric_limits<uint64_t>::max();
    tc.max_expert_bytes = L.max_expert_bytes;
    tc.max_slots = n_keys;
    _tier = std::make_unique<memory_tier>(tc);
    if (_tier->n_slots() < uint32_t(_desc.n_experts_used))
        fail(
            "{}: expert budget {} ({} bytes) holds {} slot(s) of {} bytes; the forward pass pins one layer's "
            "top-k = {} experts at once, so it needs at least {} bytes",
            model_path, format_bytes(cfg.expert_budget_bytes), cfg.expert_budget_bytes, _tier->n_slots(),
            _tier->slot_bytes(), _desc.n_experts_used, min_budget_for(_desc));

    if (cfg.host_budget_bytes) {
        // The host tier sits under the compute tier: each of its pins belongs to one compute-tier load in flight,
        // so with at least as many slots as the tier above it never runs out (and a smaller one would cache
        // nothing the tier above does not already hold).
        memory_tier_config hc = tc;
        hc.kind = tier_kind::PINNED_HOST;
        hc.budget_bytes = cfg.host_budget_bytes;
        const uint32_t need_slots = _tier->n_slots();
        if (cfg.host_budget_bytes / _tier->slot_bytes() < need_slots)
            fail(
                "{}: host budget {} ({} bytes) holds {} slot(s) of {} bytes, fewer than the {} slot(s) of the expert "
                "budget above it; the host tier needs at least {} bytes",
                model_path, format_bytes(cfg.host_budget_bytes), cfg.host_budget_bytes,
                cfg.host_budget_bytes / _tier->slot_bytes(), _tier->slot_bytes(), need_slots,
                uint64_t(need_slots) * _tier->slot_bytes());
        _host_tier = std::make_unique<memory_tier>(hc);
    }

    for (const std::string& p : _file.paths) _sources.push_back(open_file_source(p, cfg.reader));
    std::vector<file_source*> files;
    for (auto& s : _sources) files.push_back(s.get());
    streamer_layout sl;
    sl.n_layers = uint32_t(L.n_moe_layers);
    sl.n_experts = uint32_t(L.n_experts);
    sl.ranges.resize(n_keys);
    for (uint32_t i = 0; i < n_keys; ++i)
        for (const expert_range& r : L.experts[i].ranges)
            sl.ranges[i].push_back(byte_range{uint32_t(r.file), r.offset, r.bytes});
    _streamer = std::make_unique<streamer>(cfg.streaming, sl, files, _host_tier ? *_host_tier : *_tier);

    expert_cache_config cc;
    cc.n_layers = uint32_t(L.n_moe_layers);
    cc.n_experts = uint32_t(L.n_experts);
    cc.expert_bytes = [this](expert_key k) { return _desc.layout.at(int(k.layer), int(k.expert)).bytes; };
    policy_params pp;
    pp.n_layers = cc.n_layers;
    pp.n_experts = cc.n_experts;
    pp.capacity = _tier->n_slots();
    expert_loader* loader = _streamer.get();
    if (_host_tier) {
        // RAM keeps what compute memory evicted longest ago: LRU over the compute tier's misses (a per-layer
        // quota policy would split RAM by the compute tier's needs, which are not the host tier's).
        policy_params hp = pp;
        hp.capacity = _host_tier->n_slots();
        _host_cache = std::make_unique<expert_cache>(cc, *_host_tier, *_streamer, make_policy("lru", hp));
        _tiered = std::make_unique<tiered_loader>(*_host_cache, *_tier);
        loader = _tiered.get();
    }
    _cache = std::make_unique<expert_cache>(cc, *_tier, *loader, make_policy(cfg.policy, pp));

    // Widest row a non-F32 expert matrix can have: the backend decodes one row at a time into a workspace.
    if (!_backend)
        _backend = std::make_unique<backend_cpu>(std::max(_desc.n_embd, _desc.n_ff_exp), cfg.n_threads,
                                                 cfg.min_parallel_work);
    forward_config fc;
    fc.n_ctx = cfg.n_ctx;
    fc.n_batch = cfg.n_batch;
    fc.prefetch = cfg.prefetch;
    _fwd = std::make_unique<forward_pass>(_desc, _weights, *_backend, *_cache, fc, _streamer.get());
}

engine::~engine() {
    _fwd.reset();
    _cache.reset();
    _tiered.reset();
    _host_cache.reset();
    _streamer.reset();
}

void engine::reset() {
    _fwd->reset();
}

const float* engine::decode(int token) {
    return _fwd->decode(token);
}

void engine::logits(std::span<const int> tokens, std::span<float> out) {
    const size_t V = size_t(_desc.n_vocab);
    MOE_CHECK(out.size() >= tokens.size() * V);
    reset();
    const size_t B = size_t(_cfg.n_batch);
    for (size_t i = 0; i < tokens.size(); i += B)
        _fwd->eval(tokens.subspan(i, std::min(B, tokens.size() - i)), out.data() + i * V);
}

const float* engine::prefill(std::span<const int> tokens) {
    if (tokens.empty()) fail("{}: prefill of an empty token sequence", _desc.name);
    const size_t B = size_t(_cfg.n_batch);
    const float* last = nullptr;
    for (size_t i = 0; i < tokens.size(); i += B)
        last = _fwd->eval(tokens.subspan(i, std::min(B, tokens.size() - i)), nullptr);
    return last;
}

const float* engine::eval(std::span<const int> tokens, float* all_logits) {
    if (tokens.empty()) fail("{}: eval of an empty token sequence", _desc.name);
    const size_t B = size_t(_cfg.n_batch), V = size_t(_desc.n_vocab);
    const float* last = nullptr;
    for (size_t i = 0; i < tokens.size(); i += B)
        last = _fwd->eval(tokens.subspan(i, std::min(B, tokens.size() - i)), all_logits ? all_logits + i * V : nullptr);
    return last;
}

int engine::n_past() const {
    return _fwd->n_past();
}

uint32_t engine::n_host_slots() const {
    return _host_tier ? _host_tier->n_slots() : 0;
}
cache_stats engine::host_stats() const {
    return _host_cache ? _host_cache->stats() : cache_stats{};
}

std::string_view engine::backend_name() const {
    return _backend->name();
}

uint32_t engine::n_expert_slots() const {
    return _tier->n_slots();
}
uint64_t engine::expert_slot_bytes() const {
    return _tier->slot_bytes();
}
uint64_t engine::workspace_bytes() const {
    return _fwd->workspace_bytes();
}
cache_stats engine::stats() const {
    return _cache->stats();
}
const forward_stats& engine::fwd_stats() const {
    return _fwd->stats();
}
std::string_view engine::policy_name() const {
    return _cache->policy_name();
}

}  // namespace moe
