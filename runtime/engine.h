// The engine: the three parts of a running model bundled for the common case of one conversation -- a model
// (runtime/model.h), an offloader over its experts (runtime/offloader.h) and one session (runtime/session.h) --
// from one engine_config. It adds no wiring of its own: more sessions on the same model and offloader are made
// with session's constructor (engine::make_session). After start-up the token loop allocates nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cache/cache_stats.h"
#include "prefetch/reader_factory.h"
#include "prefetch/streamer.h"
#include "runtime/model.h"
#include "runtime/offloader.h"
#include "runtime/session.h"

namespace moe {

class tiered_loader;

struct engine_config {
    int n_ctx = 256;                   // KV cache positions of the session
    int n_batch = 32;                  // prefill chunk: tokens evaluated together (experts loaded once per chunk)
    uint64_t expert_budget_bytes = 0;  // bytes of expert slots; 0 = unlimited (every expert gets a slot)
    uint64_t host_budget_bytes = 0;    // pinned host RAM for a second expert level under the first; 0 = no host tier
    std::string policy = "lru";        // eviction policy (cache/policies.h names)
    reader_kind reader = reader_kind::AUTO;
    prefetch_config prefetch;             // prefetch mode, depth, experts per layer
    int n_threads = 1;                    // CPU backend threads (0 = one per hardware thread); never changes results
    int64_t min_parallel_work = 1 << 14;  // smaller matrix products stay on one thread (tests lower it)
    backend_kind backend = backend_kind::CPU;  // CUDA: expert_budget_bytes is then VRAM for expert slots
    streamer_config streaming;                 // in-flight requests etc.
    load_progress_fn load_progress;            // optional: progress of loading the resident weights (moe run's bar)
};

// The model's part of an engine_config, and its offloader and session parts for a loaded model.
model_config model_config_of(const engine_config& cfg);
offload_config offload_config_of(const engine_config& cfg, tier_kind tier);  // before the model is loaded
offload_config offload_config_of(const engine_config& cfg, const model& m);
session_config session_config_of(const engine_config& cfg);

class engine {
public:
    // Throws moe::error for an unreadable or unsupported model (naming the file and what is wrong), and
    // config_error for an unknown policy or a budget that cannot hold one layer's top-k experts pinned at once.
    engine(const std::string& model_path, const engine_config& cfg);
    ~engine();
    engine(const engine&) = delete;
    engine& operator=(const engine&) = delete;

    const model& get_model() const { return *_model; }
    offloader& get_offloader() { return *_off; }
    const offloader& get_offloader() const { return *_off; }
    session& get_session() { return *_session; }
    // Another session on the same model and offloader (same n_ctx and n_batch unless given).
    std::unique_ptr<session> make_session() { return std::make_unique<session>(*_model, *_off, _scfg); }
    const session_config& make_session_config() const { return _scfg; }

    const model_desc& desc() const { return _model->desc(); }
    const model_file& file() const { return _model->file(); }

    void reset() { _session->reset(); }
    const float* decode(int token) { return _session->decode(token); }
    // Resets, then prefills `tokens` in chunks of n_batch and writes every position's logits to out.
    void logits(std::span<const int> tokens, std::span<float> out) { _session->logits(tokens, out); }
    // Evaluates `tokens` after what the sequence holds, in chunks of n_batch; returns the last token's logits.
    const float* prefill(std::span<const int> tokens) { return _session->eval(tokens); }
    const float* eval(std::span<const int> tokens, float* all_logits) { return _session->eval(tokens, all_logits); }
    int n_past() const { return _session->n_past(); }
    int n_ctx() const { return _session->n_ctx(); }

    uint32_t n_expert_slots() const { return _off->n_slots(); }
    uint64_t expert_slot_bytes() const { return _off->slot_bytes(); }
    // Resident weights in the backend's memory (VRAM with CUDA, RAM on the CPU), in their stored types.
    uint64_t resident_bytes() const { return _model->resident_bytes(); }
    std::string_view backend_name() const { return _model->compute().name(); }
    uint64_t workspace_bytes() const { return _session->workspace_bytes(); }
    cache_stats stats() const { return _off->stats(); }
    bool has_host_tier() const { return _off->has_host_tier(); }
    uint32_t n_host_slots() const { return _off->n_host_slots(); }
    cache_stats host_stats() const { return _off->host_stats(); }
    const forward_stats& fwd_stats() const { return _session->stats(); }
    // Per MoE layer what the prefetcher guessed, issued and cancelled (empty with prefetch none).
    std::span<const prefetcher_layer_stats> prefetch_stats() const;
    std::string_view policy_name() const { return _off->policy_name(); }
    const streamer& expert_streamer() const { return _off->expert_streamer(); }
    const tiered_loader* host_tier_loader() const { return _off->host_loader(); }
    void set_routing_observer(routing_observer obs) { _session->set_routing_observer(std::move(obs)); }

    // The tier slot size an expert of this model needs (the largest expert rounded to the tier alignment) and the
    // smallest workable budget: top_k slots, one layer's experts pinned at once.
    static uint64_t slot_bytes_for(const model_desc& desc);
    static uint64_t min_budget_for(const model_desc& desc) {
        return slot_bytes_for(desc) * uint64_t(desc.n_experts_used);
    }

private:
    session_config _scfg;
    std::unique_ptr<model> _model;
    std::unique_ptr<offloader> _off;
    std::unique_ptr<session> _session;
};

}  // namespace moe
