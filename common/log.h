// The library's messages (warnings about degraded but workable paths, the last words of a failed check) go
// through one process-wide sink instead of straight to stderr, so a program that embeds the library decides
// where they land. With no callback installed they go to stderr as today: "warning: <text>", "error: <text>",
// info as plain lines, debug dropped.
#pragma once

#include <fmt/format.h>

#include <string_view>
#include <utility>

namespace moe {

enum class log_level : int { debug = 0, info = 1, warn = 2, error = 3 };

// "debug", "info", "warning", "error".
std::string_view log_level_name(log_level level);

// `text` is one message, NUL-terminated, without a level prefix or a trailing newline; it is valid only during
// the call. Called from whichever thread logs, possibly from several at once.
using log_fn = void (*)(log_level level, const char* text, void* user);

// Installs `fn` (called with `user`) for every later message; nullptr restores the default (stderr). Thread-safe.
// Returns once no callback call is running any more, so whatever the previous `user` points to may be freed then
// (except when called from inside a callback, which returns at once: that call is still running).
void set_log_callback(log_fn fn, void* user);

// set_log_callback that also hands back the callback it replaced (nullptr for the default) and its `user`.
// Returns true when no call of it can still be running (false only when called from inside a callback).
bool swap_log_callback(log_fn fn, void* user, log_fn& previous_fn, void*& previous_user);

// Sends one message to the installed sink.
void log_message(log_level level, std::string_view text);

template <typename... Args>
void log(log_level level, fmt::format_string<Args...> f, Args&&... args) {
    log_message(level, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace moe
