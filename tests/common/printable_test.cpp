// printable (common/printable.h): file-provided text quoted in messages keeps valid UTF-8 and spells out every
// byte that could cut the message short (NUL) or drive the terminal (C0, DEL, C1 controls, broken UTF-8).
#include "common/printable.h"

#include <gtest/gtest.h>

#include <string>

namespace moe {
namespace {

TEST(printable, plain_text_and_utf8_are_kept) {
    EXPECT_EQ(printable(""), "");
    EXPECT_EQ(printable("blk.0.ffn_up_exps.weight"), "blk.0.ffn_up_exps.weight");
    EXPECT_EQ(printable("caf\xc3\xa9 \xe6\xbc\xa2 \xf0\x9f\x98\x80"), "caf\xc3\xa9 \xe6\xbc\xa2 \xf0\x9f\x98\x80");
}

TEST(printable, controls_are_escaped) {
    EXPECT_EQ(printable(std::string("a\0b", 3)), "a\\x00b");
    EXPECT_EQ(printable("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
    EXPECT_EQ(printable("tab\there\nnew\rline\x7f"), "tab\\x09here\\x0anew\\x0dline\\x7f");
    EXPECT_EQ(printable("\xc2\x9b"
                        "2J"),
              "\\xc2\\x9b2J");                             // C1 CSI, valid UTF-8 but a terminal control
    EXPECT_EQ(printable("back\\slash"), "back\\\\slash");  // so an escape in the output always means one
}

TEST(printable, broken_utf8_is_escaped_byte_by_byte) {
    EXPECT_EQ(printable("\xff\xfe"), "\\xff\\xfe");
    EXPECT_EQ(printable("\xc3"), "\\xc3");                             // truncated sequence
    EXPECT_EQ(printable("\xc0\xaf"), "\\xc0\\xaf");                    // overlong '/'
    EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");           // a surrogate
    EXPECT_EQ(printable("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // above U+10FFFF
    EXPECT_EQ(printable("a\xe6\xbc"), "a\\xe6\\xbc");
}

}  // namespace
}  // namespace moe
