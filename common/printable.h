// Strings from files (tensor names, metadata keys, trace lines) quoted safely in messages: every byte that could
// end the message early or drive the terminal is spelled out instead of printed.
#pragma once

#include <string>
#include <string_view>

namespace moe {

// `s` with C0 control bytes (NUL included), DEL, C1 control characters and bytes that are not valid UTF-8 written
// as \xNN, and a backslash written as \\ (so an escape in the output always means one). Valid UTF-8 text,
// non-ASCII letters included, is kept as it is.
std::string printable(std::string_view s);

}  // namespace moe
