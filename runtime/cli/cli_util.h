// Helpers shared by `moe run` and `moe bench run`: timing, number lists and the --backend flag. What a run holds in
// memory and its statistics are the library's (runtime/run_stats.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/model.h"

namespace moe::cli {

using clock_type = std::chrono::steady_clock;

inline double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}
// n per second; 0 for no time.
inline double rate(uint64_t n, double s) {
    return s > 0.0 ? double(n) / s : 0.0;
}

// "1,17,42" -> {"1", "17", "42"} (an empty text gives no items).
std::vector<std::string> split_commas(const std::string& text);
// The whole of `item` as an int; nullopt for anything else ("", "4x", "1e3", out of range).
std::optional<int> parse_int(const std::string& item);

// --backend cpu|cuda|auto.
backend_kind parse_backend(std::string_view name);

}  // namespace moe::cli
