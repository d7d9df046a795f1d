// PLACEHOLDER: replaced by the real `moe bench` implementation.
#include <cstdio>

#include "runtime/cli/commands.h"

namespace moe::cli {
int run_bench(int, char**) {
    std::fprintf(stderr, "moe bench: not built yet\n");
    return 2;
}
}  // namespace moe::cli
