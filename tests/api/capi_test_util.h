// What the C API tests share: a scratch folder, an owner of the handles a test opens, and one-call readers of a
// context's info and statistics that fail the test (with moe_last_error) when the call does.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "runtime/api/moe_runtime.h"

namespace moe::test {

inline std::string tmp_dir() {
    const char* t = std::getenv("TMPDIR");
    return t && *t ? t : "/tmp";
}

// Owns what a test opens, so a failing ASSERT leaks nothing.
struct capi_fixture {
    moe_model* model = nullptr;
    moe_context* ctx = nullptr;
    moe_layout* layout = nullptr;
    ~capi_fixture() {
        moe_context_destroy(ctx);
        moe_model_close(model);
        moe_layout_destroy(layout);
    }
};

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
