// UTF-8 decoding, Unicode general categories and a small backtracking regex engine: just enough to run the
// pre-tokenizer patterns of byte-level BPE tokenizers (`\p{L}`, `\p{N}`, `(?!\S)`, `(?i:'s)`, ...) which
// std::regex cannot express. The category table is generated from Python's unicodedata (see
// scripts/make_tokenizer_fixtures.py --unicode-table).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moe {

// Unicode general categories, in the order of the generated table.
// clang-format off
enum class ucat : uint8_t {
    Cc, Cf, Cn, Co, Cs, Ll, Lm, Lo, Lt, Lu, Mc, Me, Mn, Nd, Nl, No,
    Pc, Pd, Pe, Pf, Pi, Po, Ps, Sc, Sk, Sm, So, Zl, Zp, Zs,
};
// clang-format on

// A byte that is not part of valid UTF-8 decodes to UNICODE_INVALID_BASE + byte: it keeps its raw value (so
// byte-level tokenizers stay lossless) and has category Cn (neither letter, number nor space).
inline constexpr uint32_t UNICODE_INVALID_BASE = 0x110000;

ucat unicode_category(uint32_t cp);
bool unicode_is_whitespace(uint32_t cp);  // the White_Space property, which is what \s means in the patterns

// One decoded character and where its bytes are in the source string.
struct utf8_char {
    uint32_t cp;
    uint32_t offset;
    uint32_t length;
};
// Decodes strictly (no overlongs, surrogates or values above U+10FFFF); each invalid byte becomes one
// UNICODE_INVALID_BASE + byte character of length 1.
std::vector<utf8_char> utf8_decode(std::string_view s);
std::string utf8_encode(uint32_t cp);

// A compiled pattern. Supports alternation, non-capturing/capturing groups (no captures are reported),
// (?i:...) for ASCII letters, (?=...) and (?!...), classes with ranges, negation and \p{..}/\P{..}/\s/\S/\d/\w,
// greedy ? * + {m} {m,} {m,n}, `.` and `$`. Matching is leftmost-first with backtracking, like PCRE/Oniguruma.
class unicode_regex {
public:
    explicit unicode_regex(std::string_view pattern);  // throws moe::error on syntax it does not support
    ~unicode_regex();
    unicode_regex(unicode_regex&&) noexcept;
    unicode_regex& operator=(unicode_regex&&) noexcept;

    // Splits chars[begin, end) into matches and the stretches between them (HF "Isolated" behaviour), appending
    // [begin, end) index pairs to `out`. `$` matches at `end`.
    void split(const std::vector<utf8_char>& chars, size_t begin, size_t end,
               std::vector<std::pair<size_t, size_t>>& out) const;

    struct node;

private:
    std::string _pattern;
    std::unique_ptr<std::vector<node>> _root;
};

}  // namespace moe
