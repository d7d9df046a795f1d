// The engine: one model opened for inference. At start-up it reads the model description, loads the resident
// weights, carves the expert budget into cache slots (memory tier), opens the model files for streaming, builds
// the streamer (file -> slot loader), the expert cache with the chosen eviction policy, and the forward pass with
// its KV cache. After that the token loop allocates nothing: decode() and logits() only compute.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cache/cache_stats.h"
#include "prefetch/reader_factory.h"
#include "prefetch/streamer.h"
#include "runtime/forward.h"

namespace moe {

class backend;
class expert_cache;
class memory_tier;
class tiered_loader;

// Where the forward pass computes. CPU: the reference backend (runtime/backend_cpu.h), experts in RAM slots.
// CUDA: the CUDA backend (runtime/backend_cuda.h), experts in device slots, resident weights, KV cache and
// workspaces in device memory; a moe::error without a GPU or in a build without CUDA. AUTO: CUDA when a GPU is
// present, else CPU.
enum class backend_kind { CPU, CUDA, AUTO };

struct engine_config {
    int n_ctx = 256;                   // KV cache positions of the session
    int n_batch = 32;                  // prefill chunk: tokens evaluated together (experts loaded once per chunk)
    uint64_t expert_budget_bytes = 0;  // RAM for expert slots; 0 = unlimited (every expert gets a slot)
    uint64_t host_budget_bytes = 0;    // pinned host RAM for a second expert level under the first; 0 = no host tier
    std::string policy = "lru";        // eviction policy (cache/policies.h names)
    reader_kind reader = reader_kind::AUTO;
    prefetch_config prefetch;             // prefetch mode, depth, experts per layer (forward_config)
    int n_threads = 1;                    // CPU backend threads (0 = one per hardware thread); never changes results
    int64_t min_parallel_work = 1 << 14;  // smaller matrix products stay on one thread (tests lower it)
    backend_kind backend = backend_kind::CPU;  // CUDA: expert_budget_bytes is then VRAM for expert slots
    streamer_config streaming;            // in-flight requests etc.
    load_progress_fn load_progress;       // optional: progress of loading the resident weights (moe run's bar)
};

class engine {
public:
    // Throws moe::error for an unreadable or unsupported model (naming the file and what is wrong), an unknown
    // policy, or a budget that cannot hold one layer's top-k experts pinned at once.
    engine(const std::string& model_path, const engine_config& cfg);
    ~engine();
    engine(const engine&) = delete;
    engine& operator=(const engine&) = delete;

    const model_desc& desc() const { return _desc; }
    const model_file& file() const { return _file; }

    // Starts a new sequence (KV cache reused from position 0; the expert cache keeps what it holds).
    void reset();
    // Decodes one token at the next position; returns n_vocab logits, valid until the next call.
    const float* decode(int token);
    // Resets, then prefills `tokens` in chunks of n_batch and writes every position's logits to out:
    // (tokens.size(), n_vocab). Bit-identical to decoding them one by one.
    void logits(std::span<const int> tokens, std::span<float> out);
    // Evaluates `tokens` after what the sequence holds, in chunks of n_batch; returns the last token's logits.
    const float* prefill(std::span<const int> tokens);
    // As prefill, and also writes every position's logits to all_logits (tokens.size(), n_vocab) when not null
    // (the C API's moe_eval).
    const float* eval(std::span<const int> tokens, float* all_logits);
    // Positions the sequence holds (tokens evaluated since the last reset).
    int n_past() const;
    int n_ctx() const { return _cfg.n_ctx; }

    uint32_t n_expert_slots() const;
    uint64_t expert_slot_bytes() const;
    uint64_t resident_bytes() const { return _weights.bytes(); }
    // Resident weights copied into backend memory (the CUDA backend's device copy; 0 on the CPU).
    uint64_t resident_backend_bytes() const { return _fwd->resident_backend_bytes(); }
    std::string_view backend_name() const;
    uint64_t workspace_bytes() const;
    cache_stats stats() const;
    // The host tier (engine_config::host_budget_bytes): whether there is one, its slots, and its statistics (a
    // hit there is an expert the compute tier missed but RAM still held; empty without a host tier).
    bool has_host_tier() const { return _host_tier != nullptr; }
    uint32_t n_host_slots() const;
    cache_stats host_stats() const;
    const forward_stats& fwd_stats() const;
    // Per MoE layer what the prefetcher guessed, issued and cancelled (empty with prefetch none); what became of
    // the loads is in stats() (prefetch_hits, prefetch_joins, prefetch_unused_*, cancelled_loads).
    std::span<const prefetcher_layer_stats> prefetch_stats() const { return _fwd->prefetch_stats(); }
    std::string_view policy_name() const;
    // The loaders, for their per-link transfer counters (moe run's summary): the streamer (file reads, and on the
    // staged path its copies) and the tiered loader (host tier -> compute tier copies; null without a host tier).
    const streamer& expert_streamer() const { return *_streamer; }
    const tiered_loader* host_tier_loader() const { return _tiered.get(); }
    // Forwards to forward_pass::set_routing_observer (routing traces of a run).
    void set_routing_observer(routing_observer obs) { _fwd->set_routing_observer(std::move(obs)); }

    // The tier slot size an expert of this model needs (the largest expert rounded to the tier alignment) and the
    // smallest workable budget: top_k slots, one layer's experts pinned at once.
    static uint64_t slot_bytes_for(const model_desc& desc);
    static uint64_t min_budget_for(const model_desc& desc) {
        return slot_bytes_for(desc) * uint64_t(desc.n_experts_used);
    }

private:
    engine_config _cfg;
    model_file _file;
    model_desc _desc;
    model_weights _weights;
    // Declaration order is destruction order reversed: the forward pass (holding pins) goes first, then the
    // cache (which waits for loads in flight), then the streamer, the tier and the files they read.
    std::vector<std::unique_ptr<file_source>> _sources;
    std::unique_ptr<memory_tier> _tier;
    // Host tier (optional): compute-tier cache <- tiered loader <- host cache <- streamer (files).
    std::unique_ptr<memory_tier> _host_tier;
    std::unique_ptr<streamer> _streamer;
    std::unique_ptr<expert_cache> _host_cache;
    std::unique_ptr<tiered_loader> _tiered;
    std::unique_ptr<expert_cache> _cache;
    std::unique_ptr<backend> _backend;
    std::unique_ptr<forward_pass> _fwd;
};

}  // namespace moe
