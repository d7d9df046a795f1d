// Sizes as users type them (common/units.h): the accepted spellings, and everything else refused as a bad flag
// value (moe::usage_error) naming the flag: no silent suffix garbage, no sign, no overflow.
#include "common/units.h"

#include <gtest/gtest.h>

#include <string>

#include "common/error.h"

namespace moe {
namespace {

// The message of the usage_error parse_bytes throws ("" when it parses).
std::string refusal(const std::string& text) {
    try {
        parse_bytes(text, "--vram-budget");
    } catch (const usage_error& e) {
        return e.what();
    }
    return "";
}

TEST(parse_bytes, accepted_spellings) {
    EXPECT_EQ(parse_bytes("4096", "x"), 4096u);
    EXPECT_EQ(parse_bytes("0", "x"), 0u);
    EXPECT_EQ(parse_bytes("12B", "x"), 12u);
    EXPECT_EQ(parse_bytes("8G", "x"), uint64_t(8) << 30);
    EXPECT_EQ(parse_bytes("8g", "x"), uint64_t(8) << 30);
    EXPECT_EQ(parse_bytes("512MiB", "x"), uint64_t(512) << 20);
    EXPECT_EQ(parse_bytes("3kb", "x"), 3072u);
    EXPECT_EQ(parse_bytes("1.5GiB", "x"), uint64_t(3) << 29);
    EXPECT_EQ(parse_bytes("1.1K", "x"), 1126u);  // rounded down to whole bytes
    EXPECT_EQ(parse_bytes("16777215T", "x"), uint64_t(16777215) << 40);
    EXPECT_EQ(parse_bytes("16777215.99999999999999999999T", "x"), UINT64_MAX);  // rounded down: it fits
    EXPECT_EQ(parse_bytes("18446744073709551615", "x"), UINT64_MAX);
    EXPECT_EQ(parse_bytes("0000000000000000000000008K", "x"), 8192u);
}

TEST(parse_bytes, refused_with_the_flag_named) {
    for (const char* bad : {"",    "-1",  "-1G", "+8G", " 8G",  "8G ",  "8 G",   "8GG", "8Q",  "10Q", "8Gx",
                            "8.G", ".5G", ".",   "1e3", "0x10", "8,5G", "1.2.3", "nan", "inf", "G"}) {
        const std::string m = refusal(bad);
        EXPECT_NE(m, "") << "'" << bad << "' parsed";
        EXPECT_EQ(m.rfind("--vram-budget: ", 0), 0u) << m;
    }
    EXPECT_EQ(refusal("10Q"),
              "--vram-budget: unknown size suffix 'Q' in '10Q' (use K, M, G or T, optionally followed by B or iB)");
    EXPECT_EQ(refusal("-3"),
              "--vram-budget: expected a size such as 8G or 512M (digits, then an optional K, M, G or T), got '-3'");
}

TEST(parse_bytes, overflow_is_refused) {
    for (const char* big : {"18446744073709551616", "99999999999999999999999", "16777216T", "17179869184G",
                            "16777215.99999999999999999999999999999999999999999999999999999T1", "16777216.0T"}) {
        const std::string m = refusal(big);
        EXPECT_NE(m, "") << big << " parsed";
    }
    EXPECT_EQ(refusal("16777216T"), "--vram-budget: size '16777216T' is too large");
}

TEST(parse_bytes, text_is_quoted_escaped) {
    EXPECT_EQ(refusal(std::string("8\x1b[2J")),
              "--vram-budget: unknown size suffix '\\x1b[2J' in '8\\x1b[2J' (use K, M, G or T, optionally followed by "
              "B or iB)");
    EXPECT_EQ(refusal(std::string("8G\0x", 4)),
              "--vram-budget: unknown size suffix 'G\\x00x' in '8G\\x00x' (use K, M, G or T, optionally followed by "
              "B or iB)");
}

}  // namespace
}  // namespace moe
