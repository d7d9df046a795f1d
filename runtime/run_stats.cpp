// Footprint, summary and statistics of a generation run (see run_stats.h).
#include "runtime/run_stats.h"

#include <fmt/format.h>

#include <algorithm>

#include "cache/expert_cache.h"
#include "common/error.h"
#include "common/units.h"

namespace moe {

using json = nlohmann::ordered_json;

namespace {

double rate(uint64_t n, double s) {
    return s > 0.0 ? double(n) / s : 0.0;
}

std::span<const prefetcher_layer_stats> prefetch_layers(const offloader& off) {
    const prefetcher* p = off.prefetch();
    return p ? std::span<const prefetcher_layer_stats>(p->stats()) : std::span<const prefetcher_layer_stats>();
}

// The prefetcher's part of the summary (definitions: docs/prefetch.md): overall, then one entry per MoE layer.
std::string prefetch_summary(const cache_stats& cs, std::span<const prefetcher_layer_stats> pf, int depth,
                             int per_layer) {
    const layer_stats tot = cs.total();
    prefetcher_layer_stats pt;
    for (const auto& p : pf) pt += p;
    std::string s = fmt::format(
        "prefetch   depth {}, {} per layer: recall {:.1f}%, precision {:.1f}%, prediction recall {:.1f}%; {} loads, "
        "{} used ({} in time, {} joined while loading), {} wasted ({} evicted unused = {}, {} cancelled)\n",
        depth, per_layer, 100.0 * tot.prefetch_recall(), 100.0 * tot.prefetch_precision(),
        100.0 * pt.prediction_recall(), tot.prefetch_loads, tot.prefetch_used(), tot.prefetch_hits, tot.prefetch_joins,
        tot.prefetch_wasted(), tot.prefetch_unused_evictions, format_bytes(tot.prefetch_unused_bytes),
        tot.cancelled_loads);
    s += "pf layer   recall/precision/wasted:";
    for (size_t l = 0; l < cs.layers.size(); ++l) {
        const layer_stats& L = cs.layers[l];
        s += fmt::format(" {}:{:.0f}%/{:.0f}%/{}", l, 100.0 * L.prefetch_recall(), 100.0 * L.prefetch_precision(),
                         format_bytes(L.prefetch_unused_bytes));
    }
    return s + "\n";
}

}  // namespace

footprint measure_footprint(const model& m, const offloader& off, std::span<const session* const> sessions) {
    footprint f;
    f.need.resident_bytes = m.resident_bytes();
    uint64_t kv_and_ws = 0;
    for (const session* s : sessions) {
        // A session's workspace_bytes counts its KV cache with the workspaces; the KV cache is exact by formula.
        f.need.kv_bytes += kv_cache_bytes(m.desc(), s->n_ctx());
        kv_and_ws += s->workspace_bytes();
    }
    MOE_CHECK(kv_and_ws >= f.need.kv_bytes);
    f.need.workspace_bytes = kv_and_ws - f.need.kv_bytes + (m.on_gpu() ? cuda_backend_workspace_bytes() : 0);
    f.n_slots = off.n_slots();
    f.slot_bytes = off.slot_bytes();
    return f;
}

footprint measure_footprint(const model& m, const offloader& off, const session& s) {
    const session* one[] = {&s};
    return measure_footprint(m, off, std::span<const session* const>(one));
}

footprint measure_footprint(const model& m, const offloader& off, const forward_pass& fwd) {
    footprint f;
    f.need.resident_bytes = m.resident_bytes();
    f.need.kv_bytes = uint64_t(fwd.n_seq()) * kv_cache_bytes(m.desc(), fwd.n_ctx());
    const uint64_t kv_and_ws = fwd.workspace_bytes();
    MOE_CHECK(kv_and_ws >= f.need.kv_bytes);
    f.need.workspace_bytes = kv_and_ws - f.need.kv_bytes + (m.on_gpu() ? cuda_backend_workspace_bytes() : 0);
    f.n_slots = off.n_slots();
    f.slot_bytes = off.slot_bytes();
    return f;
}

std::string format_footprint(const footprint& f) {
    return fmt::format("{} = {}", format_breakdown(f.need, f.n_slots, f.slot_bytes), format_bytes(f.total()));
}

void check_footprint(const footprint& real, const budget_plan& plan, std::string_view source) {
    if (real.total() <= plan.budget_bytes) return;
    fail(
        "{}: the model holds {} in compute memory, more than the budget {} it was planned for ({} planned: {}); the "
        "estimate of the resident weights, KV cache or workspaces was low (estimate_memory_need), so refusing to "
        "run over budget; please report this",
        source, format_footprint(real), format_bytes(plan.budget_bytes), format_bytes(plan.total()),
        format_breakdown(plan.need, plan.n_slots, plan.slot_bytes));
}

std::string links_summary(const std::vector<offloader::link>& links) {
    std::string s;
    for (const offloader::link& l : links)
        s += fmt::format("link       {:<12} {} in {} {}, {:.3f} GB/s (busy {:.3f} ms; per-transfer sum {:.3f} ms{})\n",
                         l.name, format_bytes(l.stats.bytes), l.stats.transfers, l.unit, l.stats.gb_per_s(),
                         double(l.stats.busy_ns) / 1e6, double(l.stats.transfer_ns) / 1e6,
                         l.stats.failed ? fmt::format(", {} failed", l.stats.failed) : std::string());
    return s;
}

json links_json(const std::vector<offloader::link>& links) {
    json a = json::array();
    for (const offloader::link& l : links)
        a.push_back({{"name", l.name},
                     {"bytes", l.stats.bytes},
                     {"transfers", l.stats.transfers},
                     {"seconds", l.stats.seconds()},
                     {"gb_per_s", l.stats.gb_per_s()},
                     {"transfer_seconds", double(l.stats.transfer_ns) / 1e9},
                     {"failed", l.stats.failed}});
    return a;
}

std::string run_summary(const run_info& info, const generation& g, const model& m, const offloader& off,
                        const footprint& fp) {
    const model_desc& desc = m.desc();
    const cache_stats cs = off.stats();
    const layer_stats tot = cs.total();
    const uint64_t slot_bytes = off.slot_bytes();
    const uint32_t n_slots = off.n_slots();
    const uint32_t n_total = off.layout().n_keys();
    std::string s;
    s += fmt::format("\n--- moe run: {} ({} MoE layers x {} experts, top-{})\n", info.model_path,
                     desc.layout.n_moe_layers, desc.layout.n_experts, desc.n_experts_used);
    s += fmt::format("load       {:.3f} s, resident weights {}, backend {}\n", info.load_s,
                     format_bytes(m.resident_bytes()), m.compute().name());
    s += fmt::format("prompt     {} tokens in {:.3f} s = {:.1f} tokens/s\n", g.n_prompt, g.prompt_s,
                     rate(g.n_prompt, g.prompt_s));
    s += fmt::format("decode     {} tokens generated{}, {} evaluated in {:.3f} s = {:.1f} tokens/s\n", g.tokens.size(),
                     g.stopped_eog ? " (stopped at end-of-generation)" : "", g.n_decoded, g.decode_s,
                     rate(g.n_decoded, g.decode_s));
    s += fmt::format("memory     {} <= {} {} ({} in {})\n", format_footprint(fp),
                     info.budget_auto ? "usable" : "budget", format_bytes(info.plan.budget_bytes),
                     info.budget_auto ? "free memory less the margin" : "--vram-budget", m.on_gpu() ? "VRAM" : "RAM");
    s += fmt::format("cache      policy {}, prefetch {}, {} slots of {} = {} ({:.1f}% of {} experts)\n",
                     off.policy_name(), info.prefetch, n_slots, format_bytes(slot_bytes),
                     format_bytes(uint64_t(n_slots) * slot_bytes),
                     100.0 * double(n_slots) / double(std::max(1u, n_total)), n_total);
    s +=
        fmt::format("hit rate   {:.1f}% ({} hits, {} misses, {} evictions, {} prefetch loads, {} prefetch hits)\n",
                    100.0 * tot.hit_rate(), tot.hits, tot.misses, tot.evictions, tot.prefetch_loads, tot.prefetch_hits);
    s += "per layer ";
    for (size_t l = 0; l < cs.layers.size(); ++l) s += fmt::format(" {}:{:.1f}%", l, 100.0 * cs.layers[l].hit_rate());
    s += "\n";
    s += fmt::format("loaded     {} ({} bytes) in {} loads; {:.3f} ms waiting on loads\n",
                     format_bytes(tot.bytes_loaded), tot.bytes_loaded, tot.loads, double(tot.wait_ns) / 1e6);
    const layer_stats host = off.host_stats().total();
    if (off.has_host_tier())
        s += fmt::format(
            "host tier  {} slots = {} pinned RAM: {:.1f}% of the misses above served from RAM ({} hits, {} misses), "
            "{} read from the file\n",
            off.n_host_slots(), format_bytes(uint64_t(off.n_host_slots()) * slot_bytes), 100.0 * host.hit_rate(),
            host.hits, host.misses, format_bytes(host.bytes_loaded));
    s += links_summary(off.links());
    const auto pf_layers = prefetch_layers(off);
    if (!pf_layers.empty())
        s += prefetch_summary(cs, pf_layers, off.config().prefetch.depth, off.config().prefetch.per_layer);
    return s;
}

json run_stats_json(const run_info& info, const generation& g, const model& m, const offloader& off,
                    const footprint& fp) {
    const cache_stats cs = off.stats();
    const layer_stats tot = cs.total();
    const auto pf_layers = prefetch_layers(off);
    const bool prefetching = off.prefetch() != nullptr;
    json j;
    j["model"] = info.model_path;
    j["prompt_tokens"] = info.prompt_tokens;
    j["prompt_text"] = info.prompt_text ? json(*info.prompt_text) : json(nullptr);
    j["chat_template"] = info.chat_template ? json(*info.chat_template) : json(nullptr);
    j["tokens"] = g.tokens;
    // Any bytes: dump_json writes U+FFFD for each invalid UTF-8 sequence (the tokens above are exact).
    j["text"] = info.text ? json(*info.text) : json(nullptr);
    j["stopped_at_eog"] = g.stopped_eog;
    j["context_full"] = g.context_full;
    j["hit_rate"] = tot.hit_rate();
    j["prompt_tokens_per_s"] = rate(g.n_prompt, g.prompt_s);
    j["decode_tokens_per_s"] = rate(g.n_decoded, g.decode_s);
    j["prompt_s"] = g.prompt_s;
    j["decode_s"] = g.decode_s;
    j["n_decoded"] = g.n_decoded;
    // docs/prefetch.md defines these; all 0 with prefetch none (no needed expert came from a prefetch).
    prefetcher_layer_stats pf_tot;
    for (const auto& p : pf_layers) pf_tot += p;
    j["prefetch_recall"] = tot.prefetch_recall();
    j["prefetch_precision"] = tot.prefetch_precision();
    j["prefetch_wasted_bytes"] = tot.prefetch_unused_bytes;
    j["prefetch_wasted"] = tot.prefetch_wasted();
    j["prefetch_cancelled"] = tot.cancelled_loads;
    j["prefetch_prediction_recall"] = pf_tot.prediction_recall();
    j["prefetch_loads"] = tot.prefetch_loads;
    j["prefetch_hits"] = tot.prefetch_hits;
    j["prefetch_joins"] = tot.prefetch_joins;
    j["prefetch_depth"] = prefetching ? off.config().prefetch.depth : 0;
    j["prefetch_k"] = prefetching ? off.config().prefetch.per_layer : 0;
    json layers = json::array();
    for (size_t l = 0; l < cs.layers.size(); ++l) {
        const layer_stats& L = cs.layers[l];
        layers.push_back(
            {{"layer", l},
             {"hits", L.hits},
             {"misses", L.misses},
             {"hit_rate", L.hit_rate()},
             {"evictions", L.evictions},
             {"loads", L.loads},
             {"bytes_loaded", L.bytes_loaded},
             {"wait_ms", double(L.wait_ns) / 1e6},
             {"prefetch_recall", L.prefetch_recall()},
             {"prefetch_precision", L.prefetch_precision()},
             {"prefetch_wasted_bytes", L.prefetch_unused_bytes},
             {"prefetch_loads", L.prefetch_loads},
             {"prefetch_used", L.prefetch_used()},
             {"prefetch_cancelled", L.cancelled_loads},
             {"prefetch_prediction_recall", l < pf_layers.size() ? pf_layers[l].prediction_recall() : 0.0}});
    }
    j["per_layer"] = layers;
    j["hits"] = tot.hits;
    j["misses"] = tot.misses;
    j["evictions"] = tot.evictions;
    j["bytes_loaded"] = tot.bytes_loaded;
    j["wait_ms"] = double(tot.wait_ns) / 1e6;
    // The whole compute-memory budget (--vram-budget, or the usable free memory when sized automatically) and what
    // the model, offloader and session hold in it, measured after they were built.
    j["budget_bytes"] = info.plan.budget_bytes;
    j["budget_unlimited"] = false;
    j["budget_auto"] = info.budget_auto;
    j["memory"] = {{"resident_bytes", fp.need.resident_bytes},
                   {"kv_cache_bytes", fp.need.kv_bytes},
                   {"workspace_bytes", fp.need.workspace_bytes},
                   {"expert_slot_bytes", fp.expert_bytes()},
                   {"total_bytes", fp.total()},
                   {"budget_bytes", info.plan.budget_bytes},
                   {"n_ctx", info.n_ctx}};
    j["expert_budget_bytes"] = fp.expert_bytes();
    j["links"] = links_json(off.links());
    const layer_stats host = off.host_stats().total();
    j["host_slots"] = off.n_host_slots();
    j["host_budget_bytes"] = uint64_t(off.n_host_slots()) * off.slot_bytes();
    j["host_hits"] = host.hits;
    j["host_misses"] = host.misses;
    j["host_hit_rate"] = host.hit_rate();
    j["host_bytes_loaded"] = host.bytes_loaded;
    j["n_slots"] = off.n_slots();
    j["slot_bytes"] = off.slot_bytes();
    j["policy"] = std::string(off.policy_name());
    j["backend"] = std::string(m.compute().name());
    j["prefetch"] = info.prefetch;
    return j;
}

std::string dump_json(const json& j, int indent) {
    return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

}  // namespace moe
