// Escaping of file-provided strings for messages (see printable.h).
#include "common/printable.h"

#include <cstdint>

namespace moe {

namespace {

// Length of the valid UTF-8 sequence starting at s[i] (1 to 4), or 0 when the bytes there are not one: overlong
// forms, surrogates and code points above U+10FFFF are invalid.
size_t utf8_length(std::string_view s, size_t i) {
    const auto b = [&](size_t k) { return uint8_t(s[i + k]); };
    const uint8_t c = b(0);
    if (c < 0x80) return 1;
    size_t n = 0;
    uint32_t cp = 0, min = 0;
    if ((c & 0xE0) == 0xC0) {
        n = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (i + n > s.size()) return 0;
    for (size_t k = 1; k < n; ++k) {
        if ((b(k) & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (b(k) & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

void append_hex(std::string& out, uint8_t c) {
    static const char digits[] = "0123456789abcdef";
    out += "\\x";
    out += digits[c >> 4];
    out += digits[c & 15];
}

}  // namespace

std::string printable(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
        const uint8_t c = uint8_t(s[i]);
        if (c == '\\') {
            out += "\\\\";
            ++i;
            continue;
        }
        const size_t n = utf8_length(s, i);
        // C0 controls and DEL; C1 controls (U+0080..U+009F, encoded C2 80..C2 9F) act on terminals too.
        const bool control = c < 0x20 || c == 0x7F || (n == 2 && c == 0xC2 && uint8_t(s[i + 1]) < 0xA0);
        if (n == 0 || control) {
            for (size_t k = 0; k < (n == 0 ? 1 : n); ++k) append_hex(out, uint8_t(s[i + k]));
            i += n == 0 ? 1 : n;
            continue;
        }
        out.append(s.substr(i, n));
        i += n;
    }
    return out;
}

}  // namespace moe
