// PLACEHOLDER: replaced by the real `moe inspect` implementation.
#include <cstdio>

#include "runtime/cli/commands.h"

namespace moe::cli {
int run_inspect(int, char**) {
    std::fprintf(stderr, "moe inspect: not built yet\n");
    return 2;
}
}  // namespace moe::cli
