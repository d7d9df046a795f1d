// `moe sim`: replays a routing trace through eviction policies at one capacity (table or JSON), optionally
// per layer, or over a sweep of capacities with the smallest one reaching a target hit rate. Belady's
// optimum is always computed so every policy is shown with its gap to the best possible.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cache/policies.h"
#include "cache/simulator.h"
#include "cache/trace.h"
#include "common/error.h"
#include "common/printable.h"
#include "common/units.h"
#include "runtime/cli/cli_args.h"
#include "runtime/cli/commands.h"
#include "runtime/model_desc.h"
#include "runtime/model_file.h"

namespace moe::cli {

namespace {

struct outcome {
    std::string policy;
    std::optional<sim_result> result;  // nullopt when the policy cannot run at this capacity
    std::string why;                   // the reason then
};

std::vector<std::string> parse_policy_list(const std::string& text) {
    std::vector<std::string> valid = policy_names(), out;
    std::stringstream ss(text);
    std::string name;
    while (std::getline(ss, name, ',')) {
        if (name.empty()) continue;
        if (std::find(valid.begin(), valid.end(), name) == valid.end())
            fail_usage("--policy: unknown policy '{}': valid policies are {}", printable(name), fmt::join(valid, ", "));
        if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
    }
    if (out.empty()) fail_usage("--policy: empty list: valid policies are {}", fmt::join(valid, ", "));
    return out;
}

std::vector<outcome> run_all(const routing_trace& t, const std::vector<std::string>& policies, uint64_t capacity,
                             const std::vector<uint64_t>* bytes) {
    std::vector<outcome> out;
    for (const auto& name : policies) {
        outcome o{name, std::nullopt, ""};
        try {
            o.result = simulate(t, name, capacity, bytes);
        } catch (const error& e) {
            o.why = e.what();  // e.g. lru-layer whose per-layer quota is below top_k
        }
        out.push_back(std::move(o));
    }
    return out;
}

const sim_result& belady_of(const std::vector<outcome>& v) {
    for (const auto& o : v)
        if (o.policy == "belady" && o.result) return *o.result;
    MOE_CHECK(false);
    std::abort();
}

nlohmann::json to_json(const outcome& o, const sim_result& best, bool per_layer) {
    nlohmann::json j;
    j["policy"] = o.policy;
    if (!o.result) {
        j["error"] = o.why;
        return j;
    }
    const sim_result& r = *o.result;
    j["capacity"] = r.capacity;
    j["accesses"] = r.accesses;
    j["hits"] = r.hits;
    j["hit_rate"] = r.hit_rate();
    j["misses"] = r.misses;
    j["misses_per_token"] = r.misses_per_token();
    j["gap_to_belady"] = 100.0 * (best.hit_rate() - r.hit_rate());
    if (r.bytes_moved) j["bytes_moved"] = *r.bytes_moved;
    if (per_layer) {
        nlohmann::json pl = nlohmann::json::array();
        for (size_t l = 0; l < r.per_layer.size(); ++l)
            pl.push_back({{"layer", l},
                          {"accesses", r.per_layer[l].accesses},
                          {"hits", r.per_layer[l].hits},
                          {"hit_rate", r.per_layer[l].hit_rate()}});
        j["per_layer"] = pl;
    }
    return j;
}

void print_table(const routing_trace& t, const std::vector<outcome>& v, uint64_t capacity, bool per_layer) {
    const sim_result& best = belady_of(v);
    uint64_t total = uint64_t(t.n_layers) * t.n_experts;
    fmt::print("capacity: {} expert slots ({:.1f}% of {} experts)\n", capacity,
               100.0 * double(capacity) / double(total), total);
    bool bytes = best.bytes_moved.has_value();
    fmt::print("{:<12} {:>12} {:>12} {:>9} {:>13} {:>14}{}\n", "policy", "accesses", "hits", "hit rate", "misses/token",
               "gap to belady", bytes ? "     bytes moved" : "");
    for (const auto& o : v) {
        if (!o.result) {
            fmt::print("{:<12} n/a: {}\n", o.policy, o.why);
            continue;
        }
        const sim_result& r = *o.result;
        fmt::print("{:<12} {:>12} {:>12} {:>8.2f}% {:>13.3f} {:>10.2f} pts{}\n", o.policy, r.accesses, r.hits,
                   100.0 * r.hit_rate(), r.misses_per_token(), 100.0 * (best.hit_rate() - r.hit_rate()),
                   bytes ? fmt::format(" {:>15}", format_bytes(*r.bytes_moved)) : "");
    }
    if (!per_layer) return;
    fmt::print("\nper-layer hit rate (%)\n{:<6}", "layer");
    for (const auto& o : v) fmt::print(" {:>11}", o.policy);
    fmt::print("\n");
    for (uint32_t l = 0; l < t.n_layers; ++l) {
        fmt::print("{:<6}", l);
        for (const auto& o : v) {
            if (o.result)
                fmt::print(" {:>11.2f}", 100.0 * o.result->per_layer[l].hit_rate());
            else
                fmt::print(" {:>11}", "n/a");
        }
        fmt::print("\n");
    }
}

std::vector<uint64_t> bytes_from_model(const std::string& path, const routing_trace& t) {
    model_desc d = describe_model(open_model_file(path));
    const expert_layout& lay = d.layout;
    if (uint32_t(lay.n_moe_layers) != t.n_layers || uint32_t(lay.n_experts) != t.n_experts)
        fail("--model {}: {} MoE layers x {} experts, but the trace has {} layers x {} experts", path, lay.n_moe_layers,
             lay.n_experts, t.n_layers, t.n_experts);
    std::vector<uint64_t> bytes(size_t(t.n_layers) * t.n_experts);
    for (uint32_t l = 0; l < t.n_layers; ++l)
        for (uint32_t e = 0; e < t.n_experts; ++e) bytes[size_t(l) * t.n_experts + e] = lay.at(int(l), int(e)).bytes;
    return bytes;
}

}  // namespace

int run_sim(int argc, char** argv) {
    CLI::App app{
        "Replay a routing trace (moe-trace v1) through eviction policies and compare them with Belady's "
        "offline optimum.",
        "moe sim"};
    std::string trace_path, policies_text, model_path;
    std::optional<uint64_t> capacity;
    std::optional<double> frac;
    bool json = false, per_layer = false, sweep = false;
    double target = 0.9;
    std::string all = fmt::format("{}", fmt::join(policy_names(), ","));
    policies_text = all;
    app.add_option("--trace,-t", trace_path, "routing trace (moe-trace v1)")->required();
    auto* cap_opt =
        app.add_option("--capacity,-n", capacity, "expert slots shared by all layers")->check(unsigned_integer());
    auto* frac_opt = app.add_option("--capacity-frac,-f", frac, "capacity as a fraction of all experts, in (0, 1]");
    cap_opt->excludes(frac_opt);
    app.add_option("--policy,-p", policies_text, "comma-separated policies (" + all + ")")->default_str(all);
    app.add_flag("--json", json, "print JSON instead of tables");
    app.add_flag("--per-layer", per_layer, "add per-layer hit rates");
    app.add_flag("--sweep", sweep, "hit-rate curve over capacities: top_k, then 5%, 10%, ..., 100% of all experts");
    app.add_option("--target-hit-rate", target, "with --sweep: recommend the smallest capacity reaching this")
        ->default_val(0.9);
    app.add_option("--model,-m", model_path, "GGUF/safetensors model: report the bytes the misses would move");
    if (auto status = parse_args(app, argc, argv)) return *status;
    if (!capacity && !frac && !sweep) fail_usage("give --capacity N or --capacity-frac F (or --sweep)");
    if (capacity && *capacity == 0) fail_usage("--capacity 0: expected at least 1 expert slot");
    if (frac && !(*frac > 0.0 && *frac <= 1.0)) fail_usage("--capacity-frac {} is outside (0, 1]", *frac);
    if (!(target > 0.0 && target <= 1.0)) fail_usage("--target-hit-rate {} is outside (0, 1]", target);
    std::vector<std::string> policies = parse_policy_list(policies_text);

    routing_trace t = read_trace(trace_path);
    if (t.rows.empty()) fail("{}: the trace has no rows", trace_path);
    uint64_t total = uint64_t(t.n_layers) * t.n_experts;
    if (frac) capacity = std::max<uint64_t>(1, uint64_t(std::llround(*frac * double(total))));
    if (capacity && *capacity < t.top_k) {
        // A budget too small for the trace: the status moe inspect gives a budget below one layer's top-k.
        fmt::print(stderr,
                   "moe sim: error: capacity {} is smaller than the trace's top_k={}: one token's experts for one "
                   "layer must fit\n",
                   *capacity, t.top_k);
        return k_exit_budget_too_small;
    }
    if (capacity && *capacity > total) capacity = total;
    std::vector<uint64_t> bytes;
    if (!model_path.empty()) bytes = bytes_from_model(model_path, t);
    const std::vector<uint64_t>* bytes_ptr = model_path.empty() ? nullptr : &bytes;

    // Belady is always replayed (last) for the gap column, listed or not.
    std::vector<std::string> with_best = policies;
    if (std::find(with_best.begin(), with_best.end(), "belady") == with_best.end()) with_best.push_back("belady");

    nlohmann::json out;
    if (!json)
        fmt::print("trace: {} (model={}, {} layers x {} experts, top-{}, {} tokens, {} accesses)\n", trace_path,
                   printable(t.model), t.n_layers, t.n_experts, t.top_k, t.n_tokens(), t.n_accesses());
    if (capacity) {
        auto v = run_all(t, with_best, *capacity, bytes_ptr);
        if (json) {
            const sim_result& best = belady_of(v);
            out["policies"] = nlohmann::json::array();
            for (const auto& o : v) out["policies"].push_back(to_json(o, best, per_layer));
        } else {
            print_table(t, v, *capacity, per_layer);
        }
    }
    if (sweep) {
        std::vector<uint64_t> caps = sweep_capacities(t);
        std::vector<std::vector<std::optional<double>>> rates(with_best.size());  // (policy, capacity)
        for (uint64_t c : caps) {
            auto v = run_all(t, with_best, c, bytes_ptr);
            for (size_t i = 0; i < v.size(); ++i)
                rates[i].push_back(v[i].result ? std::optional<double>(v[i].result->hit_rate()) : std::nullopt);
        }
        std::vector<std::optional<uint64_t>> rec(with_best.size());
        for (size_t i = 0; i < with_best.size(); ++i)
            for (size_t c = 0; c < caps.size() && !rec[i]; ++c)
                if (rates[i][c] && *rates[i][c] >= target) rec[i] = caps[c];
        if (json) {
            nlohmann::json s;
            s["capacities"] = caps;
            s["total_experts"] = total;
            s["target_hit_rate"] = target;
            s["curves"] = nlohmann::json::array();
            for (size_t i = 0; i < with_best.size(); ++i) {
                nlohmann::json hr = nlohmann::json::array();
                for (const auto& x : rates[i]) hr.push_back(x ? nlohmann::json(*x) : nlohmann::json(nullptr));
                s["curves"].push_back(
                    {{"policy", with_best[i]},
                     {"hit_rates", hr},
                     {"recommended_capacity", rec[i] ? nlohmann::json(*rec[i]) : nlohmann::json(nullptr)}});
            }
            out["sweep"] = s;
        } else {
            fmt::print("\nhit rate (%) by capacity\n{:>9} {:>6}", "capacity", "%");
            for (const auto& p : with_best) fmt::print(" {:>11}", p);
            fmt::print("\n");
            for (size_t c = 0; c < caps.size(); ++c) {
                fmt::print("{:>9} {:>5.1f}%", caps[c], 100.0 * double(caps[c]) / double(total));
                for (size_t i = 0; i < with_best.size(); ++i) {
                    if (rates[i][c])
                        fmt::print(" {:>11.2f}", 100.0 * *rates[i][c]);
                    else
                        fmt::print(" {:>11}", "n/a");
                }
                fmt::print("\n");
            }
            fmt::print("\nsmallest capacity reaching {:.1f}% hits:\n", 100.0 * target);
            for (size_t i = 0; i < with_best.size(); ++i) {
                if (rec[i])
                    fmt::print("  {:<12} {} slots ({:.1f}% of experts)\n", with_best[i], *rec[i],
                               100.0 * double(*rec[i]) / double(total));
                else
                    fmt::print("  {:<12} not reached\n", with_best[i]);
            }
        }
    }
    if (json) fmt::print("{}\n", out.dump(2));
    return 0;
}

}  // namespace moe::cli
