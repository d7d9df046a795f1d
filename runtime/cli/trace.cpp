// `moe trace`: writes synthetic routing traces (moe-trace v1) for tests, benchmarks and policy studies.
#include "cache/trace.h"

#include <fmt/format.h>

#include <CLI/CLI.hpp>

#include "cache/trace_gen.h"
#include "common/error.h"
#include "runtime/cli/cli_args.h"
#include "runtime/cli/commands.h"

namespace moe::cli {

int run_trace(int argc, char** argv) {
    CLI::App app{
        "Write a synthetic routing trace (moe-trace v1): Zipf popularity per layer, temporal reuse, "
        "correlation between consecutive layers, router-like weights.",
        "moe trace"};
    synth_params p;
    bool synthetic = false;
    std::string out_path;
    app.add_flag("--synthetic", synthetic, "generate a synthetic trace (the only source for now)")->required();
    app.add_option("--layers", p.n_layers, "MoE layers")->required()->check(unsigned_integer());
    app.add_option("--experts", p.n_experts, "experts per layer")->required()->check(unsigned_integer());
    app.add_option("--top-k", p.top_k, "experts selected per token and layer")->required()->check(unsigned_integer());
    app.add_option("--tokens", p.n_tokens, "tokens in total")->required()->check(unsigned_integer());
    app.add_option("--seqs", p.n_seqs, "sequences the tokens are split over")
        ->default_val(1)
        ->check(unsigned_integer());
    app.add_option("--seed", p.seed, "random seed")->default_val(1)->check(unsigned_integer());
    app.add_option("--skew", p.skew, "Zipf exponent of expert popularity (0 = uniform)")->default_val(1.0);
    app.add_option("--reuse", p.reuse, "probability a slot keeps the previous token's expert")->default_val(0.3);
    app.add_option("--layer-corr", p.layer_corr, "probability a slot follows the previous layer's choice")
        ->default_val(0.3);
    app.add_option("--drift", p.drift, "fraction of popularity order reshuffled per new sequence")->default_val(0.0);
    app.add_option("-o,--output", out_path, "output trace file")->required();
    if (auto status = parse_args(app, argc, argv)) return *status;
    // The shape, the size (cache/trace_gen.h limits) and the knobs are all flags: a refusal is a bad flag value.
    try {
        check_synth_params(p);
    } catch (const usage_error&) {
        throw;
    } catch (const error& e) {
        throw usage_error(e.what());
    }
    routing_trace t = generate_trace(p);
    write_trace(out_path, t);
    fmt::print(stderr, "wrote {}: model={}, {} rows, {} accesses\n", out_path, t.model, t.rows.size(), t.n_accesses());
    return 0;
}

}  // namespace moe::cli
