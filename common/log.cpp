// The process-wide log sink (see log.h). A mutex guards the installed callback and a count of the calls running
// outside it, so replacing the callback can wait until none of the old one's calls is still running; messages
// themselves are delivered without holding the lock (a callback may log or replace the callback).
#include "common/log.h"

#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>

namespace moe {

namespace {

struct sink_state {
    std::mutex mu;
    std::condition_variable idle;
    log_fn fn = nullptr;
    void* user = nullptr;
    uint64_t running = 0;  // callback calls in progress
};

// Never destroyed: threads may still log while static objects are torn down at exit.
sink_state& state() {
    static sink_state* s = new sink_state;
    return *s;
}

thread_local int t_in_callback = 0;  // callback calls on this thread's stack

void default_sink(log_level level, std::string_view text) {
    const char* prefix = "";
    switch (level) {
        case log_level::debug:
            return;
        case log_level::info:
            break;
        case log_level::warn:
            prefix = "warning: ";
            break;
        case log_level::error:
            prefix = "error: ";
            break;
    }
    std::fprintf(stderr, "%s%.*s\n", prefix, int(text.size()), text.data());
}

}  // namespace

std::string_view log_level_name(log_level level) {
    switch (level) {
        case log_level::debug:
            return "debug";
        case log_level::info:
            return "info";
        case log_level::warn:
            return "warning";
        case log_level::error:
            return "error";
    }
    return "?";
}

bool swap_log_callback(log_fn fn, void* user, log_fn& previous_fn, void*& previous_user) {
    sink_state& s = state();
    std::unique_lock<std::mutex> lock(s.mu);
    previous_fn = s.fn;
    previous_user = s.user;
    s.fn = fn;
    s.user = fn ? user : nullptr;
    if (t_in_callback > 0) return false;  // waiting would wait for this very call
    s.idle.wait(lock, [&] { return s.running == 0; });
    return true;
}

void set_log_callback(log_fn fn, void* user) {
    log_fn previous_fn;
    void* previous_user;
    swap_log_callback(fn, user, previous_fn, previous_user);
}

void log_message(log_level level, std::string_view text) {
    sink_state& s = state();
    log_fn fn;
    void* user;
    {
        std::lock_guard<std::mutex> lock(s.mu);
        fn = s.fn;
        user = s.user;
        if (fn) s.running++;
    }
    if (!fn) {
        default_sink(level, text);
        return;
    }
    t_in_callback++;
    try {
        const std::string z(text);  // the callback gets a NUL-terminated copy
        fn(level, z.c_str(), user);
    } catch (...) {
        // Out of memory for the copy, or a C++ callback that threw: the message is lost, the caller goes on.
    }
    t_in_callback--;
    {
        std::lock_guard<std::mutex> lock(s.mu);
        s.running--;
    }
    s.idle.notify_all();
}

}  // namespace moe
