// Entry point of the `moe` tool: dispatches to a subcommand and turns what it throws into one clear line on
// stderr, "moe <command>: error: <reason>", and the exit status: 2 for a bad flag or flag value
// (moe::usage_error), 1 for any other moe::error (a model or trace that cannot be used).
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "common/error.h"
#include "common/log.h"
#include "common/printable.h"
#include "runtime/cli/commands.h"

namespace {

// The library's messages, as "moe: warning: ..." lines.
void print_log(moe::log_level level, const char* text, void*) {
    if (level == moe::log_level::debug) return;
    const std::string_view name = moe::log_level_name(level);
    std::fprintf(stderr, "moe: %.*s: %s\n", int(name.size()), name.data(), text);
}

void usage(FILE* out) {
    std::fprintf(out,
                 "moe - run and profile Mixture-of-Experts models larger than VRAM\n\n"
                 "usage: moe <command> [options]   (moe <command> --help for its options)\n\n"
                 "commands:\n"
                 "  run       generate text, streaming experts through a cache of the given budget\n"
                 "  serve     an OpenAI-compatible HTTP server, many conversations on one expert cache\n"
                 "  inspect   describe a GGUF/safetensors model: architecture, experts, byte layout, capacity plan\n"
                 "  sim       replay a routing trace through eviction policies (hit rates vs Belady's optimum)\n"
                 "  trace     write a synthetic routing trace (moe-trace v1) for tests and benchmarks\n"
                 "  bench     measure the expert streaming path (moe bench io -m MODEL)\n"
                 "  gen       write a random-weight GGUF with the shapes and types of a real MoE model\n\n"
                 "options:\n"
                 "  -h, --help     this list\n"
                 "  --version      print the version of moe-runtime\n\n"
                 "exit status: 0 ok, 1 bad input file, 2 bad flags or flag values, 3 budget too small\n");
}

}  // namespace

int main(int argc, char** argv) {
    moe::set_log_callback(&print_log, nullptr);
    if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!std::strcmp(argv[1], "--version")) {
        std::printf("moe %s\n", MOE_VERSION_STRING);
        return 0;
    }
    std::string cmd = argv[1];
    // Messages name the command as its help does: "moe bench io", not "moe bench".
    if (cmd == "bench" && argc > 2 && (!std::strcmp(argv[2], "io") || !std::strcmp(argv[2], "run")))
        cmd += std::string(" ") + argv[2];
    try {
        if (cmd == "inspect") return moe::cli::run_inspect(argc - 1, argv + 1);
        if (cmd == "sim") return moe::cli::run_sim(argc - 1, argv + 1);
        if (cmd == "trace") return moe::cli::run_trace(argc - 1, argv + 1);
        if (cmd == "bench" || cmd.rfind("bench ", 0) == 0) return moe::cli::run_bench(argc - 1, argv + 1);
        if (cmd == "run") return moe::cli::run_run(argc - 1, argv + 1);
        if (cmd == "gen") return moe::cli::run_gen(argc - 1, argv + 1);
        if (cmd == "serve") return moe::cli::run_serve(argc - 1, argv + 1);
        std::fprintf(stderr, "moe: unknown command '%s'\n\n", moe::printable(cmd).c_str());
        usage(stderr);
        return 2;
    } catch (const moe::usage_error& e) {
        std::fprintf(stderr, "moe %s: error: %s\n(see moe %s --help)\n", cmd.c_str(), e.what(), cmd.c_str());
        return 2;
    } catch (const moe::budget_error& e) {
        std::fprintf(stderr, "moe %s: error: %s\n", cmd.c_str(), e.what());
        return 3;
    } catch (const moe::error& e) {
        std::fprintf(stderr, "moe %s: error: %s\n", cmd.c_str(), e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "moe %s: unexpected error: %s\n", cmd.c_str(), e.what());
        return 1;
    }
}
