// Size parsing/formatting for budgets and reports.
#include "common/units.h"

#include <cctype>
#include <cstdint>

#include "common/error.h"
#include "common/printable.h"

namespace moe {

namespace {

// floor(0.<digits> x 2^shift), exactly: the decimal fraction is doubled `shift` times and each carry out of it is
// the next bit (no floating point, so "1.5G" and a 40-digit fraction round the same way everywhere).
uint64_t fraction_bytes(std::string_view digits, int shift) {
    std::string d(digits);
    uint64_t bits = 0;
    for (int k = 0; k < shift; ++k) {
        int carry = 0;
        for (size_t i = d.size(); i-- > 0;) {
            const int v = (d[i] - '0') * 2 + carry;
            d[i] = static_cast<char>('0' + v % 10);
            carry = v / 10;
        }
        bits = (bits << 1) | uint64_t(carry);
    }
    return bits;
}

}  // namespace

uint64_t parse_bytes(std::string_view text, std::string_view what) {
    const std::string shown = printable(text);
    if (text.empty()) fail_usage("{}: expected a size such as 8G or 512M, got an empty string", what);
    // Digits, optionally '.' and more digits, then an optional suffix; nothing before, between or after.
    size_t i = 0;
    uint64_t whole = 0;
    bool overflow = false;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
        const uint64_t d = uint64_t(text[i] - '0');
        if (whole > (UINT64_MAX - d) / 10) overflow = true;
        whole = whole * 10 + d;
        i++;
    }
    const size_t int_digits = i;
    std::string_view fraction;
    const bool dot = i < text.size() && text[i] == '.';
    if (dot) {
        const size_t f0 = ++i;
        while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) i++;
        fraction = text.substr(f0, i - f0);
    }
    if (int_digits == 0 || (dot && fraction.empty()))  // "", "-3", ".5", "8." and "x" are not sizes
        fail_usage("{}: expected a size such as 8G or 512M (digits, then an optional K, M, G or T), got '{}'", what,
                   shown);
    std::string suffix(text.substr(i));
    for (auto& c : suffix) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    int shift = 0;
    if (suffix.empty() || suffix == "B")
        shift = 0;
    else if (suffix == "K" || suffix == "KB" || suffix == "KIB")
        shift = 10;
    else if (suffix == "M" || suffix == "MB" || suffix == "MIB")
        shift = 20;
    else if (suffix == "G" || suffix == "GB" || suffix == "GIB")
        shift = 30;
    else if (suffix == "T" || suffix == "TB" || suffix == "TIB")
        shift = 40;
    else
        fail_usage("{}: unknown size suffix '{}' in '{}' (use K, M, G or T, optionally followed by B or iB)", what,
                   printable(text.substr(i)), shown);
    if (overflow || whole > (UINT64_MAX >> shift)) fail_usage("{}: size '{}' is too large", what, shown);
    uint64_t value = whole << shift;
    const uint64_t part = fraction_bytes(fraction, shift);
    if (part > UINT64_MAX - value) fail_usage("{}: size '{}' is too large", what, shown);
    return value + part;
}

std::string format_bytes(uint64_t bytes) {
    static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    if (bytes < 1024) return std::to_string(bytes) + " B";
    double v = static_cast<double>(bytes);
    int u = 0;
    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        u++;
    }
    return fmt::format("{:.2f} {}", v, units[u]);
}

}  // namespace moe
