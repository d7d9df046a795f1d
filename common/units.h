// Byte sizes as users write them on the command line ("8G", "512M", "1.5GiB", "4096") and back.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace moe {

// Parses a size with an optional binary suffix (K, M, G, T; optional "B"/"iB"; case-insensitive), so "8G" is
// 8 GiB; a fraction ("1.5G") is rounded down to whole bytes. Throws moe::usage_error naming `what` (e.g.
// "--vram-budget") on anything else: signs, spaces, other suffixes or trailing text, and sizes above 2^64 - 1.
uint64_t parse_bytes(std::string_view text, std::string_view what);

// "1.50 GiB", "512.00 MiB", "123 B".
std::string format_bytes(uint64_t bytes);

}  // namespace moe
