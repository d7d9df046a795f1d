// `moe gen --shape NAME -o FILE`: writes a random-weight GGUF with the exact shapes, metadata and tensor types of
// a real MoE model (runtime/model_gen.h, docs/model-gen.md), so real-size benchmarks need no download. The file
// has no tokenizer: run it with --prompt-ids.
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <string>

#include "common/error.h"
#include "common/units.h"
#include "runtime/cli/cli_args.h"
#include "runtime/cli/commands.h"
#include "runtime/cli/progress.h"
#include "runtime/model_gen.h"

namespace moe::cli {
namespace {

std::atomic<bool> g_interrupted{false};

void on_interrupt(int) {
    g_interrupted.store(true);
}

// Ctrl-C or a kill stops the write at the next chunk, so FILE.tmp is removed instead of left behind.
struct interrupt_guard {
    struct sigaction old_int = {};
    struct sigaction old_term = {};
    interrupt_guard() {
        struct sigaction sa {};
        sa.sa_handler = on_interrupt;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
    }
    ~interrupt_guard() {
        sigaction(SIGINT, &old_int, nullptr);
        sigaction(SIGTERM, &old_term, nullptr);
    }
};

}  // namespace

int run_gen(int argc, char** argv) {
    std::string shapes;
    for (const auto& s : gen_shapes()) shapes += (shapes.empty() ? "" : ", ") + s.name;
    CLI::App app{
        "Write a random-weight GGUF with the exact shapes, metadata and tensor types of a real MoE model, for "
        "real-size benchmarks without a download. No tokenizer: run it with --prompt-ids.",
        "moe gen"};
    gen_options opt;
    std::string out_path, experts_type;
    int threads = 0;
    bool force = false, no_direct = false;
    app.add_option("--shape", opt.shape, "model shape: " + shapes)->required();
    app.add_option("-o,--output", out_path, "the GGUF file to write (written as FILE.tmp, renamed when complete)")
        ->required();
    app.add_option("--seed", opt.seed, "random seed (the same seed gives the same file)")
        ->default_val(1)
        ->check(unsigned_integer());
    app.add_option("--layers", opt.layers, "transformer blocks (default: the shape's), for a smaller file")
        ->check(unsigned_integer());
    app.add_option("--experts-type", experts_type,
                   "type of all expert matrices (default: the shape's): " + gen_type_names());
    app.add_option("--vocab", opt.vocab, "vocabulary size (default: the shape's)")->check(unsigned_integer());
    app.add_option("--threads", threads, "threads filling the write buffers (default: the hardware threads)")
        ->check(unsigned_integer());
    app.add_flag("--force", force, "replace FILE if it exists");
    app.add_flag("--no-direct", no_direct, "write through the page cache instead of O_DIRECT");
    if (auto status = parse_args(app, argc, argv)) return *status;
    if (app.count("--layers") && opt.layers == 0) fail_usage("--layers 0: expected 1..1000");
    if (app.count("--vocab") && opt.vocab == 0) fail_usage("--vocab 0: expected 1..16777216");
    if (threads > 1024) fail_usage("--threads {}: expected 0..1024 (0: the hardware threads)", threads);
    if (!experts_type.empty()) {
        opt.experts_type = parse_gen_type(experts_type);
        if (!opt.experts_type)
            fail_usage("--experts-type: unknown type '{}' (expected one of {})", experts_type, gen_type_names());
    }
    const gen_plan plan = plan_model(opt);

    struct stat st {};
    if (!force && ::stat(out_path.c_str(), &st) == 0) fail("{}: already exists (pass --force to replace it)", out_path);

    const gen_shape& s = plan.shape;
    const uint64_t total = plan.gguf.file_bytes();
    fmt::print(stderr,
               "moe gen: {} ({}): {} layers, {} experts (top-{}), n_embd {}, expert width {}, vocab {}; experts "
               "{}/{}/{} (gate/up/down); {} ({} bytes, experts {}) -> {}\n",
               s.name, s.arch, s.n_layers, s.n_experts, s.n_experts_used, s.n_embd, s.n_ff_exp, s.n_vocab,
               type_name(s.gate_up_type), type_name(s.gate_up_type), type_name(s.down_type), format_bytes(total), total,
               format_bytes(plan.expert_bytes), out_path);

    gguf_write_options wo;
    wo.threads = threads;
    wo.overwrite = force;
    wo.direct = !no_direct;
    wo.cancel = &g_interrupted;
    const bool tty = ::isatty(fileno(stderr));
    if (tty)
        wo.progress = [](uint64_t done, uint64_t all) {
            std::fprintf(stderr, "\rmoe gen: writing %s", progress_bar(done, all).c_str());
            if (done >= all) std::fprintf(stderr, "\n");
        };
    interrupt_guard guard;
    const gguf_write_result r = generate_model(plan, out_path, wo);
    fmt::print(stderr, "wrote {}: {} bytes ({}) in {:.2f} s, {:.2f} GB/s ({} threads, {})\n", out_path, r.bytes,
               format_bytes(r.bytes), r.seconds, r.seconds > 0 ? double(r.bytes) / r.seconds / 1e9 : 0.0, r.threads,
               r.direct ? "O_DIRECT" : "page cache");
    return k_exit_ok;
}

}  // namespace moe::cli
