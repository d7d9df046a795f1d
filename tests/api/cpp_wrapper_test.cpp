// The C++ RAII wrapper (runtime/api/moe_runtime.hpp): errors arrive as moe_rt::error with the status and the
// library's message; handles unpin when they go out of scope (so a 2-slot context never runs out of slots).
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "runtime/api/moe_runtime.hpp"

namespace {

const std::string k_model = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/mixtral-tiny-f32.gguf";

TEST(cpp_wrapper, errors_carry_status_and_message) {
    try {
        moe_rt::model m("/nonexistent/x.gguf");
        FAIL() << "no exception";
    } catch (const moe_rt::error& e) {
        EXPECT_EQ(e.status(), MOE_ERR_IO);
        EXPECT_NE(std::string(e.what()).find("MOE_ERR_IO: moe_model_open: /nonexistent/x.gguf"), std::string::npos)
            << e.what();
    }
    moe_rt::model m(k_model);
    moe_options o = moe_rt::default_options();
    o.policy = "nope";
    try {
        moe_rt::context c(m, o);
        FAIL() << "no exception";
    } catch (const moe_rt::error& e) {
        EXPECT_EQ(e.status(), MOE_ERR_UNKNOWN_NAME);
    }
}

TEST(cpp_wrapper, raii_handles_release_their_pins) {
    moe_rt::model m(k_model);
    EXPECT_EQ(m.info().n_experts, 4);
    EXPECT_EQ(m.expert_parts(0, 0).size(), 3u);
    moe_options o = moe_rt::default_options();
    o.expert_budget_bytes = 2 * 24576;
    moe_rt::context c(m, o);
    EXPECT_EQ(c.info().n_slots, 2u);
    // 16 acquires over 8 experts through 2 slots: only possible if every handle unpinned on destruction.
    for (int rep = 0; rep < 2; ++rep)
        for (int i = 0; i < 8; ++i) {
            moe_rt::handle h = c.acquire(i / 4, i % 4);
            auto [p, n] = h.data();
            EXPECT_NE(p, nullptr);
            EXPECT_EQ(n, 24576u);
        }
    EXPECT_EQ(c.stats().hits + c.stats().misses, 16u);
    moe_rt::handle a = c.acquire(0, 0), b = c.acquire(0, 1);
    try {
        c.acquire(1, 0);
        FAIL() << "no exception";
    } catch (const moe_rt::error& e) {
        EXPECT_EQ(e.status(), MOE_ERR_BUSY);
    }
    a.wait();  // a slot whose load is still in flight cannot be reused, pinned or not
    a.release();
    EXPECT_NO_THROW(c.acquire(1, 0).wait());
    const int32_t ids[2] = {1, 2};
    EXPECT_EQ(c.route(0, ids), 0u);  // the predictor has nothing learnt yet
    EXPECT_EQ(c.layer_stats(0).routed_rows, 1u);
}

}  // namespace
