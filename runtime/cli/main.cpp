// Entry point of the `moe` tool: dispatches to a subcommand and turns any moe::error into one clear line on
// stderr and exit status 1 (STYLE.md §8b).
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "common/error.h"
#include "runtime/cli/commands.h"

namespace {

void usage(FILE* out) {
    std::fprintf(out,
                 "moe - run and profile Mixture-of-Experts models larger than VRAM\n\n"
                 "usage: moe <command> [options]   (moe <command> --help for its options)\n\n"
                 "commands:\n"
                 "  run       generate text, streaming experts through a cache of the given budget\n"
                 "  inspect   describe a GGUF/safetensors model: architecture, experts, byte layout, capacity plan\n"
                 "  sim       replay a routing trace through eviction policies (hit rates vs Belady's optimum)\n"
                 "  trace     write a synthetic routing trace (moe-trace v1) for tests and benchmarks\n"
                 "  bench     measure the expert streaming path (moe bench io -m MODEL)\n");
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    std::string cmd = argv[1];
    try {
        if (cmd == "inspect") return moe::cli::run_inspect(argc - 1, argv + 1);
        if (cmd == "sim") return moe::cli::run_sim(argc - 1, argv + 1);
        if (cmd == "trace") return moe::cli::run_trace(argc - 1, argv + 1);
        if (cmd == "bench") return moe::cli::run_bench(argc - 1, argv + 1);
        if (cmd == "run") return moe::cli::run_run(argc - 1, argv + 1);
        std::fprintf(stderr, "moe: unknown command '%s'\n\n", cmd.c_str());
        usage(stderr);
        return 2;
    } catch (const moe::error& e) {
        std::fprintf(stderr, "moe %s: error: %s\n", cmd.c_str(), e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "moe %s: unexpected error: %s\n", cmd.c_str(), e.what());
        return 1;
    }
}
