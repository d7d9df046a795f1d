// Error tiers: moe::error for bad input (file, trace, flag, budget) with a message that says
// what and where; MOE_CHECK for broken invariants, which abort; warn_once for degraded-but-workable paths.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace moe {

// Bad input: the message names the file/field/offset, what was expected and what was found.
struct error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A bad command-line flag or flag value (the `moe` tool exits 2 for these, 1 for other moe::errors).
struct usage_error : error {
    using error::error;
};

// A budget too small for what one token needs (the `moe` tool exits 3 for these).
struct budget_error : error {
    using error::error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
    throw error(fmt::format(f, std::forward<Args>(args)...));
}

// fail() for a bad flag or flag value: throws usage_error.
template <typename... Args>
[[noreturn]] void fail_usage(fmt::format_string<Args...> f, Args&&... args) {
    throw usage_error(fmt::format(f, std::forward<Args>(args)...));
}

// Logs <msg> as a warning (common/log.h; stderr by default) the first time a given key is seen in this process.
void warn_once(const std::string& key, const std::string& msg);

[[noreturn]] void check_failed(const char* expr, const char* file, int line, const std::string& detail);

}  // namespace moe

// A broken invariant is a bug: print the statement and where, then abort.
#define MOE_CHECK(cond)                                                  \
    do {                                                                 \
        if (!(cond)) ::moe::check_failed(#cond, __FILE__, __LINE__, ""); \
    } while (0)
