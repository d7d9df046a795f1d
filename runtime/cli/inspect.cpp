// `moe inspect FILE [--json] [--layout] [--vram-budget X] [--host-budget Y] [--ctx N] [--backend B]`: what a model
// is (architecture, experts, tensor types), where each expert's bytes lie, and how many experts a memory budget
// can hold. The --json form is a stable interface for other engines: docs/inspect-json.md.
//
// Capacity plan: the VRAM budget is planned exactly as `moe run --vram-budget` plans it (runtime/auto_budget.h:
// plan_compute_budget), so the two agree for the same --ctx and backend: the resident weights as the engine holds
// them (F32), the KV cache for --ctx positions and the workspaces first, then expert slots of the engine's slot
// size. The host budget holds pinned expert slots only. A budget that cannot hold all that plus one layer's
// working set (top-k slots) is impossible: the plan says so and the command exits with status 3.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

#include "common/error.h"
#include "common/printable.h"
#include "common/units.h"
#include "runtime/auto_budget.h"
#include "runtime/cli/cli_args.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/engine.h"
#include "runtime/model_desc.h"
#include "runtime/model_file.h"

namespace moe::cli {
namespace {

using json = nlohmann::ordered_json;  // keeps the documented field order

const char* rope_name(rope_style r) {
    return r == rope_style::NORM ? "norm" : "neox";
}
const char* gating_name(gating_func g) {
    switch (g) {
        case gating_func::SOFTMAX:
            return "softmax";
        case gating_func::SIGMOID:
            return "sigmoid";
        case gating_func::SOFTMAX_WEIGHT:
            return "softmax_weight";
    }
    return "?";
}

struct type_count {
    int tensors = 0;
    uint64_t bytes = 0;
};

struct histogram {
    std::map<std::string, type_count> experts, resident;
};

histogram tensor_histogram(const model_file& f, const model_desc& d) {
    std::set<std::string> expert_tensors;
    for (const auto& e : d.layout.experts)
        for (const auto& r : e.ranges) expert_tensors.insert(r.tensor);
    histogram h;
    for (const auto& t : f.tensors) {
        auto& bucket = expert_tensors.count(t.name) ? h.experts : h.resident;
        auto& c = bucket[std::string(type_name(t.type))];
        c.tensors++;
        c.bytes += t.bytes;
    }
    return h;
}

// One tier of the capacity plan.
struct tier_plan {
    std::string name;
    uint64_t budget = 0;
    uint64_t slot_bytes = 0;
    uint64_t resident = 0;   // bytes of resident weights this tier must hold first
    uint64_t kv = 0;         // ... the KV cache
    uint64_t workspace = 0;  // ... and the workspaces
    uint64_t free = 0;       // left for expert slots
    uint64_t slots = 0;      // expert slots that fit (capped at the number of routed experts)
    uint64_t slots_raw = 0;  // before the cap
    double share = 0;        // slots / all routed experts
    double per_layer = 0;    // slots / MoE layers
    bool feasible = true;
    std::string note;
};

// The compute tier, planned as `moe run` plans --vram-budget.
tier_plan plan_vram(uint64_t budget, const memory_need& need, const model_desc& d, const std::string& path) {
    tier_plan p;
    p.name = "vram";
    p.budget = budget;
    p.slot_bytes = engine::slot_bytes_for(d);
    p.resident = need.resident_bytes;
    p.kv = need.kv_bytes;
    p.workspace = need.workspace_bytes;
    const uint64_t n_all = d.layout.experts.size();
    try {
        const budget_plan bp = plan_compute_budget(budget, need, p.slot_bytes, uint32_t(n_all),
                                                   uint32_t(d.n_experts_used), path, "--vram-budget");
        p.slots = bp.n_slots;
    } catch (const error& e) {
        p.feasible = false;
        p.note = fmt::format("impossible: {}", e.what());
    }
    p.free = budget > need.total() ? budget - need.total() : 0;
    p.slots_raw = p.free / p.slot_bytes;
    if (p.feasible) {
        p.share = n_all ? double(p.slots) / double(n_all) : 0;
        p.per_layer = d.layout.n_moe_layers ? double(p.slots) / d.layout.n_moe_layers : 0;
        if (p.slots == n_all) p.note = "every routed expert fits: nothing needs streaming";
    }
    return p;
}

// The host tier: pinned expert slots only.
tier_plan plan_host(uint64_t budget, const model_desc& d) {
    tier_plan p;
    p.name = "host";
    p.budget = budget;
    p.slot_bytes = engine::slot_bytes_for(d);
    const uint64_t n_all = d.layout.experts.size();
    p.free = budget;
    p.slots_raw = budget / p.slot_bytes;
    p.slots = std::min<uint64_t>(p.slots_raw, n_all);
    p.share = n_all ? double(p.slots) / double(n_all) : 0;
    p.per_layer = d.layout.n_moe_layers ? double(p.slots) / d.layout.n_moe_layers : 0;
    if (p.slots == n_all) p.note = "every routed expert fits: nothing needs streaming";
    return p;
}

json tier_json(const tier_plan& p) {
    return json{{"budget", p.budget},
                {"resident_bytes", p.resident},
                {"kv_cache_bytes", p.kv},
                {"workspace_bytes", p.workspace},
                {"free_bytes", p.free},
                {"slots", p.slots},
                {"slots_uncapped", p.slots_raw},
                {"share", p.share},
                {"slots_per_layer", p.per_layer},
                {"feasible", p.feasible},
                {"note", p.note}};
}

json layout_json(const model_desc& d) {
    json arr = json::array();
    for (const auto& e : d.layout.experts) {
        json ranges = json::array();
        for (const auto& r : e.ranges)
            ranges.push_back({{"tensor", r.tensor},
                              {"file", r.file},
                              {"offset", r.offset},
                              {"bytes", r.bytes},
                              {"type", type_name(r.type)},
                              {"part", expert_part_name(r.part)}});
        arr.push_back({{"layer", e.layer},
                       {"moe_layer", e.moe_layer},
                       {"expert", e.expert},
                       {"bytes", e.bytes},
                       {"ranges", std::move(ranges)}});
    }
    return arr;
}

json describe_json(const model_file& f, const model_desc& d, const histogram& h) {
    json files = json::array();
    uint64_t total = 0;
    for (size_t i = 0; i < f.paths.size(); ++i) {
        uint64_t sz = i < f.file_sizes.size() ? f.file_sizes[i] : 0;
        files.push_back({{"path", f.paths[i]}, {"bytes", sz}});
    }
    for (const auto& t : f.tensors) total += t.bytes;
    auto types = [](const std::map<std::string, type_count>& m) {
        json o = json::object();
        for (const auto& [k, v] : m) o[k] = {{"tensors", v.tensors}, {"bytes", v.bytes}};
        return o;
    };
    return json{
        {"schema", "moe-inspect/1"},
        {"format", f.format == model_format::GGUF ? "gguf" : "safetensors"},
        {"files", std::move(files)},
        {"architecture", arch_name(d.architecture)},
        {"name", d.name},
        {"n_layers", d.n_layers},
        {"n_moe_layers", d.layout.n_moe_layers},
        {"moe_layers", d.layout.moe_layers},
        {"n_leading_dense", d.n_leading_dense},
        {"n_embd", d.n_embd},
        {"n_vocab", d.n_vocab},
        {"n_head", d.n_head},
        {"n_head_kv", d.n_head_kv},
        {"head_dim_k", d.head_dim_k},
        {"head_dim_v", d.head_dim_v},
        {"n_ff", d.n_ff},
        {"n_ff_exp", d.n_ff_exp},
        {"n_ff_shexp", d.n_ff_shexp},
        {"n_experts", d.n_experts},
        {"n_experts_used", d.n_experts_used},
        {"n_shared_experts", d.n_shared_experts},
        {"rope", rope_name(d.rope)},
        {"n_rot", d.n_rot},
        {"rope_freq_base", d.rope_freq_base},
        {"rope_scaling",
         {{"type", d.rope_scale.name}, {"factor", d.rope_scale.factor}, {"original_context", d.rope_scale.orig_ctx}}},
        {"rms_eps", d.rms_eps},
        {"context_length", d.n_ctx_train},
        {"gating", gating_name(d.gating)},
        {"norm_topk", d.norm_topk},
        {"weights_scale", d.weights_scale},
        {"expert_bytes", d.layout.max_expert_bytes},
        {"total_expert_bytes", d.layout.total_bytes},
        {"resident_bytes", d.resident_bytes},
        {"total_tensor_bytes", total},
        {"n_tensors", f.tensors.size()},
        {"tensor_types", {{"experts", types(h.experts)}, {"resident", types(h.resident)}}}};
}

std::string pct(double x) {
    return fmt::format("{:.1f}%", 100.0 * x);
}

void print_types(const char* label, const std::map<std::string, type_count>& m) {
    std::string s;
    for (const auto& [k, v] : m)
        s += fmt::format("{}{} x{} ({})", s.empty() ? "" : ", ", k, v.tensors, format_bytes(v.bytes));
    std::printf("  %-9s %s\n", label, s.empty() ? "-" : s.c_str());
}

void print_human(const model_file& f, const model_desc& d, const histogram& h, const std::vector<tier_plan>& plans,
                 bool layout, const std::string& plan_basis) {
    uint64_t file_bytes = 0;
    for (auto s : f.file_sizes) file_bytes += s;
    std::printf("model        %s\n", f.paths.empty() ? "?" : f.paths[0].c_str());
    std::printf("format       %s, %zu file(s), %s, %zu tensors\n",
                f.format == model_format::GGUF ? "GGUF" : "safetensors", f.paths.size(),
                format_bytes(file_bytes).c_str(), f.tensors.size());
    std::printf("architecture %s (%s)\n", std::string(arch_name(d.architecture)).c_str(), printable(d.name).c_str());
    std::string moe_layers;
    if (!d.layout.moe_layers.empty())
        moe_layers = d.layout.n_moe_layers == d.n_layers
                         ? "all"
                         : fmt::format("blocks {}..{}", d.layout.moe_layers.front(), d.layout.moe_layers.back());
    std::printf("layers       %d (%d MoE: %s), n_embd %d, heads %d/%d (q/k dim %d, v dim %d), vocab %d\n", d.n_layers,
                d.layout.n_moe_layers, moe_layers.c_str(), d.n_embd, d.n_head, d.n_head_kv, d.head_dim_k, d.head_dim_v,
                d.n_vocab);
    std::string shared =
        d.n_shared_experts ? fmt::format(", {} shared (width {}, resident)", d.n_shared_experts, d.n_ff_shexp) : "";
    std::printf("experts      %d routed per layer, top-%d, width %d%s\n", d.n_experts, d.n_experts_used, d.n_ff_exp,
                shared.c_str());
    std::string scaling = d.rope_scale.type == rope_scaling_type::NONE
                              ? std::string()
                              : fmt::format(", {} x{}{}", d.rope_scale.name, d.rope_scale.factor,
                                            d.rope_scale.orig_ctx ? fmt::format(" of {}", d.rope_scale.orig_ctx) : "");
    std::printf("routing      %s%s%s, rope %s (n_rot %d, base %g%s)\n", gating_name(d.gating),
                d.norm_topk ? ", top-k weights renormalised" : "",
                d.weights_scale != 1.0 ? fmt::format(", scaled x{}", d.weights_scale).c_str() : "", rope_name(d.rope),
                d.n_rot, d.rope_freq_base, scaling.c_str());
    if (d.n_ctx_train > 0)
        std::printf("context      %d positions trained (moe run's default --ctx stops there)\n", d.n_ctx_train);
    else
        std::printf("context      not given by the file\n");
    std::printf("tensor types\n");
    print_types("experts", h.experts);
    print_types("resident", h.resident);
    std::printf(
        "bytes        resident %s, routed experts %s (%zu experts, %s of all weights)\n",
        format_bytes(d.resident_bytes).c_str(), format_bytes(d.layout.total_bytes).c_str(), d.layout.experts.size(),
        pct(double(d.layout.total_bytes) / double(std::max<uint64_t>(1, d.layout.total_bytes + d.resident_bytes)))
            .c_str());
    std::printf(
        "per expert   %s (largest: the slot size), %s per MoE layer\n", format_bytes(d.layout.max_expert_bytes).c_str(),
        format_bytes(d.layout.n_moe_layers ? d.layout.total_bytes / uint64_t(d.layout.n_moe_layers) : 0).c_str());
    if (!plans.empty()) {
        std::printf("capacity plan (slot = %s; %s)\n", format_bytes(engine::slot_bytes_for(d)).c_str(),
                    plan_basis.c_str());
        uint64_t covered = 0;
        for (const auto& p : plans) {
            if (p.name == "vram")
                std::printf("  %-5s %s: resident %s + KV cache %s + workspace %s, %s left for experts\n",
                            p.name.c_str(), format_bytes(p.budget).c_str(), format_bytes(p.resident).c_str(),
                            format_bytes(p.kv).c_str(), format_bytes(p.workspace).c_str(),
                            format_bytes(p.free).c_str());
            else
                std::printf("  %-5s %s: all for expert slots\n", p.name.c_str(), format_bytes(p.budget).c_str());
            if (p.feasible)
                std::printf("        %llu expert slots = %s of the %zu routed experts, %.1f of %d per layer\n",
                            (unsigned long long)p.slots, pct(p.share).c_str(), d.layout.experts.size(), p.per_layer,
                            d.n_experts);
            if (!p.note.empty()) std::printf("        %s%s\n", p.feasible ? "" : "** ", p.note.c_str());
            if (p.feasible) covered += p.slots;
        }
        covered = std::min<uint64_t>(covered, d.layout.experts.size());
        std::printf("  held in memory: %s of the experts; %s stream from the model file\n",
                    pct(double(covered) / double(std::max<size_t>(1, d.layout.experts.size()))).c_str(),
                    pct(1.0 - double(covered) / double(std::max<size_t>(1, d.layout.experts.size()))).c_str());
    }
    if (layout) {
        std::printf("expert layout (block / moe layer / expert: part tensor file:offset+bytes type)\n");
        for (const auto& e : d.layout.experts) {
            std::printf("  blk %d moe %d expert %d  %s\n", e.layer, e.moe_layer, e.expert,
                        format_bytes(e.bytes).c_str());
            for (const auto& r : e.ranges)
                std::printf("    %-14s %s  %d:%llu+%llu %s\n", std::string(expert_part_name(r.part)).c_str(),
                            printable(r.tensor).c_str(), r.file, (unsigned long long)r.offset,
                            (unsigned long long)r.bytes, std::string(type_name(r.type)).c_str());
        }
    }
}

}  // namespace

int run_inspect(int argc, char** argv) {
    CLI::App app{"Describe a GGUF or safetensors MoE model: architecture, experts, byte layout, capacity plan",
                 "moe inspect"};
    std::string path, vram_text, host_text;
    bool as_json = false, layout = false;
    app.add_option("model", path,
                   "model file: .gguf (first shard of a split set), .safetensors, "
                   "model.safetensors.index.json, or a directory")
        ->required();
    app.add_flag("--json", as_json, "print one JSON object (schema: docs/inspect-json.md)");
    app.add_flag("--layout", layout, "list every expert's byte ranges (in --json: the expert_layout array)");
    int n_ctx = 4096;
    std::string backend_text = "auto";
    app.add_option("--vram-budget", vram_text,
                   "the whole compute memory (e.g. 8G, 512M), planned as moe run plans it: resident weights + KV "
                   "cache + workspaces, then expert slots");
    app.add_option("--host-budget", host_text, "pinned host memory for expert slots (e.g. 32G)");
    app.add_option("--ctx", n_ctx,
                   "context length the KV cache in the VRAM plan is sized for (moe run sizes it for the prompt + "
                   "--n-predict unless given --ctx: pass the same value to both for the same plan)")
        ->check(CLI::Range(1, 1 << 24))
        ->capture_default_str();
    app.add_option("--backend", backend_text,
                   "the backend the VRAM plan is for: cuda (adds its fixed matmul/cuBLAS workspaces), cpu, or auto "
                   "(cuda when a GPU is usable, as moe run)")
        ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
        ->capture_default_str();
    if (auto status = parse_args(app, argc, argv)) return *status;
    std::optional<uint64_t> vram, host;
    if (!vram_text.empty()) vram = parse_bytes(vram_text, "--vram-budget");
    if (!host_text.empty()) host = parse_bytes(host_text, "--host-budget");
    // As moe run: a zero budget is a bad value, not a budget too small (leaving the flag out means no plan).
    if (vram && *vram == 0) fail_usage("--vram-budget 0: expected a positive size (leave the flag out for no plan)");
    if (host && *host == 0) fail_usage("--host-budget 0: expected a positive size (leave the flag out for no plan)");

    model_file f = open_model_file(path);
    model_desc d = describe_model(f);
    histogram h = tensor_histogram(f, d);

    std::vector<tier_plan> plans;
    // Only a capacity plan depends on the backend: without one, --backend auto never looks for a GPU (which would
    // initialise CUDA just to describe a file).
    const bool cuda = (vram || host) && computes_on_cuda(parse_backend(backend_text));
    const int n_batch = engine_config{}.n_batch;  // moe run's prefill chunk
    if (vram) plans.push_back(plan_vram(*vram, estimate_memory_need(f, d, n_ctx, n_batch, cuda), d, path));
    if (host) plans.push_back(plan_host(*host, d));
    const std::string plan_basis = fmt::format("KV cache for {} positions (--ctx), {} backend, batches of {}", n_ctx,
                                               cuda ? "cuda" : "cpu", n_batch);
    bool feasible = std::all_of(plans.begin(), plans.end(), [](const tier_plan& p) { return p.feasible; });

    if (as_json) {
        json j = describe_json(f, d, h);
        if (!plans.empty()) {
            json plan = {{"slot_bytes", engine::slot_bytes_for(d)},
                         {"feasible", feasible},
                         {"n_ctx", n_ctx},
                         {"backend", cuda ? "cuda" : "cpu"}};
            for (const auto& p : plans) plan[p.name] = tier_json(p);
            j["plan"] = std::move(plan);
        }
        if (layout) j["expert_layout"] = layout_json(d);
        // Strings from the file that are not valid UTF-8 are replaced (U+FFFD) rather than failing the output.
        std::printf("%s\n", j.dump(1, ' ', false, json::error_handler_t::replace).c_str());
    } else {
        print_human(f, d, h, plans, layout, plan_basis);
    }
    if (!feasible) {
        std::fprintf(stderr, "moe inspect: the budget cannot hold this model (see the capacity plan)\n");
        return k_exit_budget_too_small;
    }
    return 0;
}

}  // namespace moe::cli
