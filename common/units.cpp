// Size parsing/formatting for budgets and reports.
#include "common/units.h"

#include <cctype>
#include <cmath>
#include <cstdlib>

#include "common/error.h"

namespace moe {

uint64_t parse_bytes(std::string_view text, std::string_view what) {
    std::string s(text);
    if (s.empty()) fail("{}: expected a size such as 8G or 512M, got an empty string", what);
    size_t i = 0;
    while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) i++;
    std::string number = s.substr(0, i);
    std::string suffix = s.substr(i);
    for (auto& c : suffix) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (number.empty() || number.find('.') != number.rfind('.'))
        fail("{}: expected a size such as 8G or 512M, got '{}'", what, s);
    double shift = 0;
    if (suffix.empty() || suffix == "B") shift = 0;
    else if (suffix == "K" || suffix == "KB" || suffix == "KIB") shift = 10;
    else if (suffix == "M" || suffix == "MB" || suffix == "MIB") shift = 20;
    else if (suffix == "G" || suffix == "GB" || suffix == "GIB") shift = 30;
    else if (suffix == "T" || suffix == "TB" || suffix == "TIB") shift = 40;
    else fail("{}: unknown size suffix '{}' in '{}' (use K, M, G or T)", what, text.substr(i), s);
    double value = std::strtod(number.c_str(), nullptr) * std::ldexp(1.0, static_cast<int>(shift));
    if (!(value < 18446744073709551615.0)) fail("{}: size '{}' is too large", what, s);
    return static_cast<uint64_t>(value);
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
