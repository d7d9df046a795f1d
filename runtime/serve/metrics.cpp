// Prometheus text for /metrics (see metrics.h).
#include "runtime/serve/metrics.h"

#include <fmt/format.h>

namespace moe::serve {

namespace {

class writer {
public:
    // Starts a metric family: its HELP and TYPE lines.
    void family(const char* name, const char* type, const char* help) {
        _s += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    }
    void sample(const char* name, const std::string& labels, double v) {
        _s += labels.empty() ? fmt::format("{} {}\n", name, v) : fmt::format("{}{{{}}} {}\n", name, labels, v);
    }
    std::string take() { return std::move(_s); }

private:
    std::string _s;
};

std::string tier_label(const char* tier) {
    return fmt::format("tier=\"{}\"", tier);
}
std::string layer_label(const char* tier, size_t layer) {
    return fmt::format("tier=\"{}\",layer=\"{}\"", tier, layer);
}

// Every per-tier and per-layer series of one cache level.
void cache_series(writer& w, const char* tier, const cache_stats& cs, bool first) {
    struct series {
        const char* name;
        const char* type;
        const char* help;
        double (*get)(const layer_stats&);
        bool per_layer;
    };
    static const series all[] = {
        {"moe_expert_hits_total", "counter", "Expert acquires that found the expert resident.",
         [](const layer_stats& l) { return double(l.hits); }, true},
        {"moe_expert_misses_total", "counter", "Expert acquires that had to load (or join a load of) the expert.",
         [](const layer_stats& l) { return double(l.misses); }, true},
        {"moe_expert_hit_ratio", "gauge", "Hits over acquires since the server started.",
         [](const layer_stats& l) { return l.hit_rate(); }, true},
        {"moe_expert_evictions_total", "counter", "Resident experts evicted to make room.",
         [](const layer_stats& l) { return double(l.evictions); }, false},
        {"moe_expert_loaded_bytes_total", "counter", "Bytes of expert loads that completed.",
         [](const layer_stats& l) { return double(l.bytes_loaded); }, false},
        {"moe_expert_failed_loads_total", "counter", "Expert loads that failed (I/O errors).",
         [](const layer_stats& l) { return double(l.failed_loads); }, false},
        {"moe_expert_stall_seconds_total", "counter", "Time the forward pass waited for expert loads.",
         [](const layer_stats& l) { return double(l.wait_ns) * 1e-9; }, false},
        {"moe_prefetch_recall", "gauge", "Share of prefetched experts that were used before eviction.",
         [](const layer_stats& l) { return l.prefetch_recall(); }, true},
        {"moe_prefetch_precision", "gauge", "Share of prefetch loads that were not wasted.",
         [](const layer_stats& l) { return l.prefetch_precision(); }, true},
    };
    const layer_stats total = cs.total();
    for (const series& s : all) {
        if (first) w.family(s.name, s.type, s.help);
        w.sample(s.name, tier_label(tier), s.get(total));
        if (s.per_layer)
            for (size_t l = 0; l < cs.layers.size(); ++l) w.sample(s.name, layer_label(tier, l), s.get(cs.layers[l]));
    }
}

}  // namespace

std::string prometheus_metrics(const scheduler_metrics& s, const offloader& off) {
    writer w;
    w.family("moe_requests_total", "counter", "Requests by outcome (refused: queue full or shutting down).");
    w.sample("moe_requests_total", "result=\"finished\"", double(s.finished));
    w.sample("moe_requests_total", "result=\"cancelled\"", double(s.cancelled));
    w.sample("moe_requests_total", "result=\"failed\"", double(s.failed));
    w.sample("moe_requests_total", "result=\"refused\"", double(s.refused));
    w.family("moe_requests_active", "gauge", "Requests decoding now.");
    w.sample("moe_requests_active", "", double(s.active));
    w.family("moe_requests_queued", "gauge", "Requests waiting for a slot.");
    w.sample("moe_requests_queued", "", double(s.queued));
    w.family("moe_parallel_slots", "gauge", "Requests that can decode at once (--parallel).");
    w.sample("moe_parallel_slots", "", double(s.n_parallel));
    w.family("moe_prompt_tokens_total", "counter", "Prompt tokens evaluated.");
    w.sample("moe_prompt_tokens_total", "", double(s.prompt_tokens));
    w.family("moe_generated_tokens_total", "counter", "Tokens generated.");
    w.sample("moe_generated_tokens_total", "", double(s.generated_tokens));
    w.family("moe_generated_tokens_per_second", "gauge", "Generated tokens per second over the last 10 seconds.");
    w.sample("moe_generated_tokens_per_second", "", s.recent_tokens_per_s);
    w.family("moe_forward_steps_total", "counter", "Forward steps (each advances every running request).");
    w.sample("moe_forward_steps_total", "", double(s.steps));
    w.family("moe_forward_step_rows_total", "counter", "Token rows of all forward steps (decode rows + prompt rows).");
    w.sample("moe_forward_step_rows_total", "", double(s.step_rows));
    w.family("moe_forward_step_seconds_total", "counter", "Time spent in forward steps.");
    w.sample("moe_forward_step_seconds_total", "", s.step_seconds);

    w.family("moe_expert_slots", "gauge", "Expert slots of each cache level.");
    w.sample("moe_expert_slots", tier_label("primary"), double(off.n_slots()));
    if (off.has_host_tier()) w.sample("moe_expert_slots", tier_label("host"), double(off.n_host_slots()));
    w.family("moe_expert_slot_bytes", "gauge", "Bytes of one expert slot.");
    w.sample("moe_expert_slot_bytes", "", double(off.slot_bytes()));
    cache_series(w, "primary", off.stats(), true);
    if (off.has_host_tier()) cache_series(w, "host", off.host_stats(), false);

    const std::vector<offloader::link> links = off.links();
    w.family("moe_link_bytes_total", "counter", "Bytes moved over each link (file->ram, ram->vram, ...).");
    for (const auto& l : links)
        w.sample("moe_link_bytes_total", fmt::format("link=\"{}\"", l.name), double(l.stats.bytes));
    w.family("moe_link_transfers_total", "counter", "Transfers over each link that succeeded.");
    for (const auto& l : links)
        w.sample("moe_link_transfers_total", fmt::format("link=\"{}\"", l.name), double(l.stats.transfers));
    w.family("moe_link_failed_transfers_total", "counter", "Transfers over each link that failed.");
    for (const auto& l : links)
        w.sample("moe_link_failed_transfers_total", fmt::format("link=\"{}\"", l.name), double(l.stats.failed));
    w.family("moe_link_gigabytes_per_second", "gauge", "Each link's bytes over its busy time (GB/s, 1e9 bytes).");
    for (const auto& l : links)
        w.sample("moe_link_gigabytes_per_second", fmt::format("link=\"{}\"", l.name), l.stats.gb_per_s());
    return w.take();
}

}  // namespace moe::serve
