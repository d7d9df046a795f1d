// The subcommands of the `moe` tool. Each takes the arguments after its name (argv[0] is the subcommand)
// and returns the process exit status; bad input is reported on stderr with a non-zero status.
#pragma once

namespace moe::cli {

int run_inspect(int argc, char** argv);    // inspect.cpp: model files, expert layout, capacity plan
int run_sim(int argc, char** argv);        // sim.cpp: replay a routing trace through eviction policies
int run_trace(int argc, char** argv);      // trace.cpp: generate synthetic routing traces
int run_bench(int argc, char** argv);      // bench.cpp: `moe bench io` and friends
int run_bench_run(int argc, char** argv);  // bench_run.cpp: `moe bench run`, tokens/s at several expert budgets
int run_run(int argc, char** argv);        // run.cpp: generate text, streaming experts through the cache
int run_gen(int argc, char** argv);        // gen.cpp: write random-weight GGUF models of real shapes
int run_serve(int argc, char** argv);      // serve.cpp: the OpenAI-compatible HTTP server

}  // namespace moe::cli
