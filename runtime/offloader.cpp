// The offloader (see offloader.h): one validated configuration, then the tier / streamer / cache / prefetcher stack.
#include "runtime/offloader.h"

#include <algorithm>
#include <limits>

#include "cache/expert_cache.h"
#include "cache/policies.h"
#include "common/gpu.h"
#include "common/units.h"
#include "prefetch/tiered_loader.h"
#include "runtime/model_desc.h"
#include "runtime/model_file.h"

namespace moe {

namespace {

constexpr uint64_t k_slot_align = 4096;  // memory_tier's slot alignment

template <typename... Args>
[[noreturn]] void refuse(config_fault f, fmt::format_string<Args...> text, Args&&... args) {
    throw config_error(f, fmt::format(text, std::forward<Args>(args)...));
}

}  // namespace

uint64_t offload_layout::expert_bytes(uint32_t index) const {
    uint64_t b = 0;
    for (const byte_range& r : ranges[index]) b += r.bytes;
    return b;
}

uint64_t offload_layout::max_expert_bytes() const {
    uint64_t m = 0;
    for (uint32_t i = 0; i < uint32_t(ranges.size()); ++i) m = std::max(m, expert_bytes(i));
    return m;
}

offload_layout offload_layout_of(const model_file& file, const model_desc& desc) {
    const expert_layout& L = desc.layout;
    offload_layout o;
    o.name = desc.name.empty() ? "model" : desc.name;
    o.n_layers = uint32_t(L.n_moe_layers);
    o.n_experts = uint32_t(L.n_experts);
    o.top_k = uint32_t(desc.n_experts_used);
    o.paths = file.paths;
    o.ranges.resize(L.experts.size());
    for (size_t i = 0; i < L.experts.size(); ++i)
        for (const expert_range& r : L.experts[i].ranges)
            o.ranges[i].push_back(byte_range{uint32_t(r.file), r.offset, r.bytes});
    return o;
}

uint64_t offload_slot_bytes(uint64_t max_expert_bytes) {
    return (max_expert_bytes + k_slot_align - 1) / k_slot_align * k_slot_align;
}

uint32_t min_expert_slots(const offload_config& cfg, const offload_layout& layout) {
    const uint32_t k = std::max(1u, layout.top_k);
    return cfg.policy == "lru-layer" ? k * std::max(1u, layout.n_layers) : k;
}

std::string min_slots_reason(const offload_config& cfg, const offload_layout& layout) {
    if (cfg.policy == "lru-layer")
        return fmt::format(
            "policy lru-layer gives each of the {} MoE layers an equal share of the slots, and each "
            "share must hold one layer's top-{} experts",
            layout.n_layers, layout.top_k);
    return fmt::format("the forward pass pins one layer's top-{} experts at once", layout.top_k);
}

offload_config validate_offload_config(const offload_config& in, const offload_layout& layout,
                                       std::vector<std::string>* warnings) {
    offload_config c = in;
    if (layout.n_layers == 0 || layout.n_experts == 0 || layout.top_k == 0 || layout.top_k > layout.n_experts)
        refuse(config_fault::INVALID,
               "{}: {} MoE layers of {} experts with top-k {}: expected at least one layer, one "
               "expert and 1 <= top-k <= experts",
               layout.name, layout.n_layers, layout.n_experts, layout.top_k);
    if (layout.ranges.size() != size_t(layout.n_keys()))
        refuse(config_fault::INVALID, "{}: {} expert layouts for {} x {} experts", layout.name, layout.ranges.size(),
               layout.n_layers, layout.n_experts);
    for (uint32_t i = 0; i < layout.n_keys(); ++i)
        if (layout.ranges[i].empty())
            refuse(config_fault::INVALID, "{}: expert {} of layer {} has no byte ranges", layout.name,
                   i % layout.n_experts, i / layout.n_experts);
    const uint64_t max_bytes = layout.max_expert_bytes();
    if (max_bytes == 0) refuse(config_fault::INVALID, "{}: every expert is empty (0 bytes)", layout.name);

    const auto names = policy_names();
    if (std::find(names.begin(), names.end(), c.policy) == names.end())
        refuse(config_fault::UNKNOWN_NAME,
               "unknown eviction policy '{}': valid policies are lru, lru-layer, lfu, "
               "lfu-recent",
               c.policy);
    if (c.policy == "belady")
        refuse(config_fault::UNSUPPORTED,
               "policy 'belady' needs the future trace (offline evaluation with `moe sim`); "
               "use lru, lru-layer, lfu or lfu-recent");
    if (c.tier == tier_kind::DEVICE && gpu_count() == 0)
        refuse(config_fault::UNSUPPORTED,
               "expert slots in device memory need a usable CUDA device, and there is "
               "none here ({})",
               gpu_description());
    if (c.reading.queue_depth == 0 || c.streaming.max_in_flight == 0)
        refuse(config_fault::INVALID, "the reader's queue depth ({}) and the loads in flight ({}) must be > 0",
               c.reading.queue_depth, c.streaming.max_in_flight);

    // Budgets: whole slots; one layer's top-k pinned at once (lru-layer: in every layer's share).
    const uint64_t slot = offload_slot_bytes(max_bytes);
    const uint32_t n_keys = layout.n_keys();
    const uint32_t min_slots = min_expert_slots(c, layout);
    const uint64_t n_slots = c.expert_budget_bytes ? std::min<uint64_t>(c.expert_budget_bytes / slot, n_keys) : n_keys;
    if (n_slots < min_slots) {
        if (c.policy == "lru-layer")
            refuse(config_fault::BUDGET,
                   "expert budget {} ({} bytes) holds {} slot(s) of {}: policy lru-layer gives "
                   "each of the {} MoE layers an equal share, and each share must hold top-k = {} experts, so it "
                   "needs at least {} bytes ({}); use another policy or a larger budget",
                   format_bytes(c.expert_budget_bytes), c.expert_budget_bytes, n_slots, format_bytes(slot),
                   layout.n_layers, layout.top_k, slot * min_slots, format_bytes(slot * min_slots));
        refuse(config_fault::BUDGET,
               "expert budget {} ({} bytes) holds {} slot(s) of {} (the largest expert, {} "
               "bytes, rounded up to 4 KiB); one layer pins top-k = {} experts at once, so it needs at least {} bytes "
               "({})",
               format_bytes(c.expert_budget_bytes), c.expert_budget_bytes, n_slots, format_bytes(slot), max_bytes,
               layout.top_k, slot * min_slots, format_bytes(slot * min_slots));
    }
    if (c.host_budget_bytes) {
        // Each host pin belongs to one load of the tier above in flight: with at least as many slots as that tier
        // the host tier never runs out (and a smaller one would cache nothing the tier above does not hold).
        if (c.host_budget_bytes / slot < n_slots)
            refuse(config_fault::BUDGET,
                   "host budget {} ({} bytes) holds {} slot(s) of {}, fewer than the {} slot(s) "
                   "of the expert tier above it; the host tier needs at least {} bytes ({})",
                   format_bytes(c.host_budget_bytes), c.host_budget_bytes, c.host_budget_bytes / slot,
                   format_bytes(slot), n_slots, n_slots * slot, format_bytes(n_slots * slot));
    }

    // Prefetch.
    if (int(c.prefetch.mode) < int(prefetch_mode::NONE) || int(c.prefetch.mode) > int(prefetch_mode::BOTH))
        refuse(config_fault::INVALID, "prefetch mode {}: expected none, spec, history or both", int(c.prefetch.mode));
    if (c.prefetch.depth < 1)
        refuse(config_fault::INVALID, "prefetch depth {}: expected at least 1 (MoE layers predicted ahead)",
               c.prefetch.depth);
    if (c.prefetch.per_layer < 0 || uint32_t(c.prefetch.per_layer) > layout.n_experts)
        refuse(config_fault::INVALID,
               "prefetch experts per layer {}: expected 0 (= top-k) up to the {} experts of a "
               "layer",
               c.prefetch.per_layer, layout.n_experts);
    if (c.prefetch.per_layer == 0) c.prefetch.per_layer = int(layout.top_k);
    if (c.prefetch_window == 0) refuse(config_fault::INVALID, "prefetch window 0: expected at least 1 row");
    // With lru-layer, prefetches still loading hold slots of their layer's share, which cannot borrow from other
    // layers: unless each share holds top-k plus a step's prefetches, a demand could find every slot of its share
    // pinned or loading. Run without prefetch then.
    if (c.prefetch.mode != prefetch_mode::NONE && c.policy == "lru-layer" && n_slots < n_keys) {
        const uint64_t share = n_slots / layout.n_layers;
        const uint64_t want = uint64_t(layout.top_k) + uint64_t(c.prefetch.per_layer);
        if (share < want) {
            if (warnings)
                warnings->push_back(
                    fmt::format("prefetch {} turned off: policy lru-layer gives each MoE layer {} "
                                "slot(s), fewer than the {} a prefetch beside a demand needs",
                                prefetch_mode_name(c.prefetch.mode), share, want));
            c.prefetch.mode = prefetch_mode::NONE;
        }
    }
    return c;
}

offloader::offloader(const offload_layout& layout, const offload_config& cfg)
    : _layout(layout), _cfg(validate_offload_config(cfg, layout, &_warnings)) {
    const uint32_t n_keys = _layout.n_keys();
    const uint64_t max_bytes = _layout.max_expert_bytes();
    memory_tier_config tc;
    tc.kind = _cfg.tier;
    tc.budget_bytes = _cfg.expert_budget_bytes ? _cfg.expert_budget_bytes : offload_slot_bytes(max_bytes) * n_keys;
    tc.max_expert_bytes = max_bytes;
    tc.max_slots = n_keys;
    _tier = std::make_unique<memory_tier>(tc);
    if (_cfg.host_budget_bytes) {
        // Pinned (page-locked, DMA-able) only under device slots: under RAM slots the copies are memcpy, and
        // pinning would start the GPU driver for nothing.
        memory_tier_config hc = tc;
        hc.kind = _cfg.tier == tier_kind::DEVICE ? tier_kind::PINNED_HOST : tier_kind::RAM;
        hc.budget_bytes = _cfg.host_budget_bytes;
        _host_tier = std::make_unique<memory_tier>(hc);
    }

    std::vector<file_source*> files;
    for (const std::string& p : _layout.paths) {
        _sources.push_back(open_file_source(p, _cfg.reader, _cfg.reading));
        files.push_back(_sources.back().get());
    }
    streamer_layout sl;
    sl.n_layers = _layout.n_layers;
    sl.n_experts = _layout.n_experts;
    sl.ranges = _layout.ranges;
    _streamer = std::make_unique<streamer>(_cfg.streaming, sl, files, _host_tier ? *_host_tier : *_tier);

    expert_cache_config cc;
    cc.n_layers = _layout.n_layers;
    cc.n_experts = _layout.n_experts;
    const streamer* st = _streamer.get();
    cc.expert_bytes = [st](expert_key k) { return st->expert_bytes(k); };
    policy_params pp;
    pp.n_layers = cc.n_layers;
    pp.n_experts = cc.n_experts;
    pp.capacity = _tier->n_slots();
    _loader = _streamer.get();
    if (_host_tier) {
        // RAM keeps what compute memory evicted longest ago: LRU over the compute tier's misses (a per-layer quota
        // policy would split RAM by the compute tier's needs, which are not the host tier's).
        policy_params hp = pp;
        hp.capacity = _host_tier->n_slots();
        _host_cache = std::make_unique<expert_cache>(cc, *_host_tier, *_streamer, make_policy("lru", hp));
        _tiered = std::make_unique<tiered_loader>(*_host_cache, *_tier, _streamer.get());
        _loader = _tiered.get();
    }
    _cache = std::make_unique<expert_cache>(cc, *_tier, *_loader, make_policy(_cfg.policy, pp));
    if (_cfg.prefetch.mode != prefetch_mode::NONE)
        _prefetcher = std::make_unique<prefetcher>(_cfg.prefetch, _layout.n_layers, _layout.n_experts, _layout.top_k,
                                                   _cfg.prefetch_window, *_cache, _loader);
}

offloader::~offloader() {
    _prefetcher.reset();
    _cache.reset();
    _tiered.reset();
    _host_cache.reset();
    _streamer.reset();
}

uint32_t offloader::n_slots() const {
    return _tier->n_slots();
}
uint64_t offloader::slot_bytes() const {
    return _tier->slot_bytes();
}
uint32_t offloader::n_host_slots() const {
    return _host_tier ? _host_tier->n_slots() : 0;
}
std::string_view offloader::policy_name() const {
    return _cache->policy_name();
}
std::string_view offloader::reader_name() const {
    return _sources.empty() ? std::string_view("none") : _sources.front()->kind_name();
}
cache_stats offloader::stats() const {
    return _cache->stats();
}
cache_stats offloader::host_stats() const {
    return _host_cache ? _host_cache->stats() : cache_stats{};
}

void offloader::reset_stats() {
    _cache->reset_stats();
    if (_host_cache) _host_cache->reset_stats();
    if (_prefetcher) _prefetcher->reset_stats();
}

std::vector<offloader::link> offloader::links() const {
    std::vector<link> out;
    const streamer_stats ss = _streamer->stats();
    out.push_back({"file->ram", "reads", ss.read_link});
    if (_streamer->staged())
        out.push_back({_streamer->on_device() ? "ram->vram" : "staging->ram", "copies", ss.copy_link});
    if (_tiered) out.push_back({_tiered->on_device() ? "ram->vram" : "host->ram", "copies", _tiered->copy_stats()});
    return out;
}

}  // namespace moe
