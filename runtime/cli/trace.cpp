// PLACEHOLDER: replaced by the real `moe trace` implementation.
#include <cstdio>

#include "runtime/cli/commands.h"

namespace moe::cli {
int run_trace(int, char**) {
    std::fprintf(stderr, "moe trace: not built yet\n");
    return 2;
}
}  // namespace moe::cli
