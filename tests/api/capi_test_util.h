// Small readers shared by the C API tests: one call each for a context's info and statistics, failing the test
// (with moe_last_error) when the call does.
#pragma once

#include <gtest/gtest.h>

#include "runtime/api/moe_runtime.h"

namespace moe::test {

inline moe_stats layer_stats(const moe_context* c, int layer) {
    moe_stats s{};
    s.struct_size = sizeof(s);
    EXPECT_EQ(moe_get_layer_stats(c, layer, &s), MOE_OK) << moe_last_error();
    return s;
}

inline moe_stats total_stats(const moe_context* c) {
    moe_stats s{};
    s.struct_size = sizeof(s);
    EXPECT_EQ(moe_get_stats(c, &s), MOE_OK) << moe_last_error();
    return s;
}

inline moe_context_info context_info(const moe_context* c) {
    moe_context_info i{};
    i.struct_size = sizeof(i);
    EXPECT_EQ(moe_context_get_info(c, &i), MOE_OK) << moe_last_error();
    return i;
}

}  // namespace moe::test
