// Implementation of the error helpers declared in error.h.
#include "common/error.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>

#include "common/log.h"

namespace moe {

void warn_once(const std::string& key, const std::string& msg) {
    static std::mutex mu;
    static std::set<std::string> seen;
    {
        std::lock_guard<std::mutex> lock(mu);
        if (!seen.insert(key).second) return;
    }
    log_message(log_level::warn, msg);  // outside the lock: the log callback may itself warn
}

void check_failed(const char* expr, const char* file, int line, const std::string& detail) {
    char text[1024];  // no allocation on the way to abort
    std::snprintf(text, sizeof text, "CHECK failed: %s at %s:%d%s%s", expr, file, line, detail.empty() ? "" : ": ",
                  detail.c_str());
    log_message(log_level::error, text);
    std::abort();
}

}  // namespace moe
