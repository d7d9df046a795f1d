// PLACEHOLDER: replaced by the real `moe sim` implementation.
#include <cstdio>

#include "runtime/cli/commands.h"

namespace moe::cli {
int run_sim(int, char**) {
    std::fprintf(stderr, "moe sim: not built yet\n");
    return 2;
}
}  // namespace moe::cli
