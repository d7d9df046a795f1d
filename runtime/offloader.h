// The offloader: everything that holds and moves experts, behind one validated configuration. It owns the memory
// tiers (the compute tier of expert slots, and optionally a pinned host tier under it), the file readers, the
// streamer (file -> slot), the expert caches with their eviction policies, and the prefetcher. It knows nothing of
// architectures or kernels: it sees expert keys, each expert's byte ranges in the files, budgets and router
// signals. The model's forward pass (runtime/forward.h) and the C API's moe_context both drive one.
//
// Stacking, when a host tier is configured:
//   compute cache (compute tier) <- tiered loader <- host cache (pinned host tier) <- streamer <- files
// and without one:
//   compute cache (compute tier) <- streamer <- files
// Scheduling hints (a prefetch's priority, promote, cancel) go to the compute cache's loader, which passes them
// down the chain, so a prefetch is queued behind demands and cancellable whatever the stack.
//
// Thread safety: the caches, the streamer and the loaders are thread-safe; the prefetcher and the access clock
// are driven by one thread at a time (the forward pass holds the model's compute lock; the C API holds its
// routing lock).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cache/cache_stats.h"
#include "cache/expert_key.h"
#include "cache/memory_tier.h"
#include "common/error.h"
#include "prefetch/file_source.h"
#include "prefetch/link_meter.h"
#include "prefetch/prefetcher.h"
#include "prefetch/reader_factory.h"
#include "prefetch/streamer.h"

namespace moe {

class expert_cache;
class expert_loader;
class tiered_loader;
struct model_desc;
struct model_file;

// What the offloader streams: the files and, for each (MoE layer, expert), its byte ranges in them (packed into one
// slot in this order).
struct offload_layout {
    std::string name = "model";
    uint32_t n_layers = 0;   // MoE layers (the cache's layer index)
    uint32_t n_experts = 0;  // experts per layer
    uint32_t top_k = 0;      // experts one token uses per layer: pinned together, so the fewest slots that work
    std::vector<std::string> paths;
    std::vector<std::vector<byte_range>> ranges;  // (n_layers * n_experts)

    uint64_t expert_bytes(uint32_t index) const;
    uint64_t max_expert_bytes() const;
    uint32_t n_keys() const { return n_layers * n_experts; }
};
// The layout of a model file's experts (model_desc's expert layout).
offload_layout offload_layout_of(const model_file& file, const model_desc& desc);

// The slot an expert takes: the largest expert rounded up to the tier alignment (O_DIRECT reads land in slots).
uint64_t offload_slot_bytes(uint64_t max_expert_bytes);

struct offload_config {
    tier_kind tier = tier_kind::RAM;   // where the compute tier's slots live (DEVICE for a GPU backend)
    uint64_t expert_budget_bytes = 0;  // bytes of compute-tier slots; 0 = a slot for every expert
    uint64_t host_budget_bytes = 0;    // host RAM for a second tier under the first (pinned under device slots)
    std::string policy = "lru";        // compute-tier eviction policy (cache/policies.h); the host tier is LRU
    reader_kind reader = reader_kind::AUTO;
    reader_config reading;      // queue depth etc. of each file's reader
    streamer_config streaming;  // loads at the reader at once, ...
    // Prefetch (prefetch/prefetcher.h): the mode, depth and experts per layer. The prefetcher is part of the
    // offloader; whoever routes (the forward pass, the C API) feeds it the routing and the speculative logits.
    prefetch_config prefetch;
    uint32_t prefetch_window = 32;  // most rows one routed call carries (the history's pairing window)
};

// A configuration the offloader refuses, with what kind of mistake it is (the C API maps it to a status).
enum class config_fault { INVALID, UNKNOWN_NAME, UNSUPPORTED, BUDGET };
struct config_error : error {
    config_error(config_fault f, const std::string& what) : error(what), fault(f) {}
    config_fault fault;
};

// The fewest compute-tier slots the configuration runs with: one layer's top-k pinned at once; with lru-layer,
// which splits the slots evenly between layers and evicts within a layer, top-k in every layer's share.
uint32_t min_expert_slots(const offload_config& cfg, const offload_layout& layout);
// Why min_expert_slots is what it is, for messages ("one layer's top-4 experts are pinned at once").
std::string min_slots_reason(const offload_config& cfg, const offload_layout& layout);

// Checks `cfg` against `layout` and returns it completed (prefetch per_layer resolved). Every rule the offloader
// relies on is here, with one set of messages: the policy exists and runs online, the budget holds the minimum
// slots, the host tier holds at least as many slots as the tier above, prefetch settings are in range, the device
// tier has a GPU. A prefetch that lru-layer's per-layer shares leave no room for is turned off with a warning
// (`warnings` gets the text). Throws config_error.
offload_config validate_offload_config(const offload_config& cfg, const offload_layout& layout,
                                       std::vector<std::string>* warnings = nullptr);

class offloader {
public:
    // Validates (validate_offload_config), opens the files and builds the stack. Throws config_error, or
    // moe::error when a file cannot be opened.
    offloader(const offload_layout& layout, const offload_config& cfg);
    ~offloader();
    offloader(const offloader&) = delete;
    offloader& operator=(const offloader&) = delete;

    const offload_layout& layout() const { return _layout; }
    const offload_config& config() const { return _cfg; }  // as validated
    // Warnings validation produced (prefetch turned off, ...), for the caller to show.
    const std::vector<std::string>& warnings() const { return _warnings; }

    // The compute tier's cache: acquire pins an expert for a kernel.
    expert_cache& cache() { return *_cache; }
    const expert_cache& cache() const { return *_cache; }
    // The compute cache's loader (the streamer, or the tiered loader over the host tier): scheduling hints go here.
    expert_loader& loader() { return *_loader; }
    // Null with prefetch none.
    prefetcher* prefetch() { return _prefetcher.get(); }
    const prefetcher* prefetch() const { return _prefetcher.get(); }
    const streamer& expert_streamer() const { return *_streamer; }
    streamer& expert_streamer() { return *_streamer; }
    const tiered_loader* host_loader() const { return _tiered.get(); }
    tiered_loader* host_loader() { return _tiered.get(); }
    const memory_tier& compute_tier() const { return *_tier; }
    const memory_tier* host_tier() const { return _host_tier.get(); }
    expert_cache* host_cache() { return _host_cache.get(); }
    const expert_cache* host_cache() const { return _host_cache.get(); }

    // The access clock the eviction policies hear: one tick per routed (step, layer), shared by every user of the
    // offloader so the policies order all sessions' accesses on one time line.
    uint64_t tick() { return ++_clock; }
    uint64_t now() const { return _clock; }

    uint32_t n_slots() const;
    uint64_t slot_bytes() const;
    bool has_host_tier() const { return _host_tier != nullptr; }
    uint32_t n_host_slots() const;
    std::string_view policy_name() const;
    std::string_view reader_name() const;
    cache_stats stats() const;
    cache_stats host_stats() const;  // empty without a host tier
    void reset_stats();

    // One link of the expert path and what moved over it: file->ram reads, the staged copies, the host tier's copies.
    struct link {
        std::string name;  // file->ram, ram->vram, host->ram, staging->ram
        std::string unit;  // "reads" or "copies"
        link_stats stats;
    };
    std::vector<link> links() const;

private:
    offload_layout _layout;
    std::vector<std::string> _warnings;  // before _cfg: validation fills it
    offload_config _cfg;
    // Declaration order is destruction order reversed: the prefetcher (it refers to the cache) goes first, then
    // the compute cache (it waits for its loads in flight), the tiered loader, the host cache, the streamer, the
    // tiers and the files they read.
    std::vector<std::unique_ptr<file_source>> _sources;
    std::unique_ptr<memory_tier> _tier;
    std::unique_ptr<memory_tier> _host_tier;
    std::unique_ptr<streamer> _streamer;
    std::unique_ptr<expert_cache> _host_cache;
    std::unique_ptr<tiered_loader> _tiered;
    std::unique_ptr<expert_cache> _cache;
    expert_loader* _loader = nullptr;
    std::unique_ptr<prefetcher> _prefetcher;
    uint64_t _clock = 0;
};

}  // namespace moe
