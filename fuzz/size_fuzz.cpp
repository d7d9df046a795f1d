// libFuzzer target: the command line's size parser (common/units.h) on arbitrary text must either return a size or
// throw moe::usage_error; anything else (a crash, another exception, a sanitizer report) is a bug. What it accepts
// must be digits, at most one '.', and a known suffix, and a plain number must read back as itself.
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/units.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    uint64_t v = 0;
    try {
        v = moe::parse_bytes(text, "--fuzz");
    } catch (const moe::usage_error&) {
        return 0;
    }
    if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0]))) __builtin_trap();
    size_t digits = 0;
    while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) digits++;
    if (digits == text.size()) {
        // A plain number: exactly its value (no suffix, no rounding).
        uint64_t want = 0;
        for (char c : text) want = want * 10 + uint64_t(c - '0');
        if (v != want) __builtin_trap();
    }
    return 0;
}
