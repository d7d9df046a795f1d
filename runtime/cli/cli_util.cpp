// Helpers shared by `moe run` and `moe bench run` (see cli_util.h).
#include "runtime/cli/cli_util.h"

#include <fmt/format.h>

#include <sstream>

#include "common/error.h"
#include "common/units.h"
#include "prefetch/streamer.h"
#include "prefetch/tiered_loader.h"
#include "runtime/backend_cuda.h"

namespace moe::cli {

std::vector<std::string> split_commas(const std::string& text) {
    std::vector<std::string> items;
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, ',')) items.push_back(item);
    return items;
}

std::optional<int> parse_int(const std::string& item) {
    size_t used = 0;
    int v = 0;
    try {
        v = std::stoi(item, &used);
    } catch (const std::exception&) {
        return std::nullopt;
    }
    if (used == 0 || used != item.size()) return std::nullopt;
    return v;
}

backend_kind parse_backend(std::string_view name) {
    if (name == "cpu") return backend_kind::CPU;
    if (name == "cuda") return backend_kind::CUDA;
    return backend_kind::AUTO;
}

bool computes_on_cuda(backend_kind kind) {
    return kind == backend_kind::CUDA || (kind == backend_kind::AUTO && cuda_backend_available());
}

footprint measure_footprint(const engine& eng) {
    footprint f;
    const bool cuda = eng.resident_backend_bytes() > 0;  // the CPU backend computes on the loaded weights
    f.need.resident_bytes = cuda ? eng.resident_backend_bytes() : eng.resident_bytes();
    // forward_pass::workspace_bytes counts the KV cache with the workspaces; the KV cache is exact by formula.
    f.need.kv_bytes = kv_cache_bytes(eng.desc(), eng.n_ctx());
    const uint64_t kv_and_ws = eng.workspace_bytes();
    MOE_CHECK(kv_and_ws >= f.need.kv_bytes);
    f.need.workspace_bytes = kv_and_ws - f.need.kv_bytes + (cuda ? cuda_backend_workspace_bytes() : 0);
    f.n_slots = eng.n_expert_slots();
    f.slot_bytes = eng.expert_slot_bytes();
    return f;
}

std::string format_footprint(const footprint& f) {
    return fmt::format("{} = {}", format_breakdown(f.need, f.n_slots, f.slot_bytes), format_bytes(f.total()));
}

void check_footprint(const footprint& real, const budget_plan& plan, std::string_view source) {
    if (real.total() <= plan.budget_bytes) return;
    fail(
        "{}: the engine holds {} in compute memory, more than the budget {} it was planned for ({} planned: {}); the "
        "estimate of the resident weights, KV cache or workspaces was low (runtime/auto_budget.cpp: "
        "estimate_memory_need), so refusing to run over budget; please report this",
        source, format_footprint(real), format_bytes(plan.budget_bytes), format_bytes(plan.total()),
        format_breakdown(plan.need, plan.n_slots, plan.slot_bytes));
}

std::vector<link_row> engine_links(const engine& eng) {
    std::vector<link_row> links;
    const streamer& st = eng.expert_streamer();
    const streamer_stats ss = st.stats();
    links.push_back({"file->ram", "reads", ss.read_link});
    if (st.staged()) links.push_back({st.on_device() ? "ram->vram" : "staging->ram", "copies", ss.copy_link});
    if (const tiered_loader* t = eng.host_tier_loader())
        links.push_back({t->on_device() ? "ram->vram" : "host->ram", "copies", t->copy_stats()});
    return links;
}

std::string links_summary(const std::vector<link_row>& links) {
    std::string s;
    for (const link_row& l : links)
        s += fmt::format("link       {:<12} {} in {} {}, {:.3f} GB/s (busy {:.3f} ms; per-transfer sum {:.3f} ms{})\n",
                         l.name, format_bytes(l.stats.bytes), l.stats.transfers, l.unit, l.stats.gb_per_s(),
                         double(l.stats.busy_ns) / 1e6, double(l.stats.transfer_ns) / 1e6,
                         l.stats.failed ? fmt::format(", {} failed", l.stats.failed) : std::string());
    return s;
}

nlohmann::ordered_json links_json(const std::vector<link_row>& links) {
    nlohmann::ordered_json a = nlohmann::ordered_json::array();
    for (const link_row& l : links)
        a.push_back({{"name", l.name},
                     {"bytes", l.stats.bytes},
                     {"transfers", l.stats.transfers},
                     {"seconds", l.stats.seconds()},
                     {"gb_per_s", l.stats.gb_per_s()},
                     {"transfer_seconds", double(l.stats.transfer_ns) / 1e9},
                     {"failed", l.stats.failed}});
    return a;
}

}  // namespace moe::cli
