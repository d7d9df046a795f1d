// Implementation of the error helpers declared in error.h.
#include "common/error.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>

namespace moe {

void warn_once(const std::string& key, const std::string& msg) {
    static std::mutex mu;
    static std::set<std::string> seen;
    std::lock_guard<std::mutex> lock(mu);
    if (!seen.insert(key).second) return;
    std::fprintf(stderr, "warning: %s\n", msg.c_str());
}

void check_failed(const char* expr, const char* file, int line, const std::string& detail) {
    std::fprintf(stderr, "moe: CHECK failed: %s at %s:%d%s%s\n", expr, file, line, detail.empty() ? "" : ": ",
                 detail.c_str());
    std::abort();
}

}  // namespace moe
