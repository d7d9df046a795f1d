// The prefetcher behind the C API (moe_route, moe_route_hidden, moe_layout_set_router; prefetch/prefetcher.h):
// speculative gating on hand-made routers whose top-k is known by construction and on the fixture's routers against
// a top-k computed here in double, the history predictor on a scripted sequence whose co-activation is known,
// stale-hint cancellation, the statistics, and every new function's error paths.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "runtime/api/moe_runtime.h"
#include "tests/api/capi_test_util.h"
#include "tests/prefetch/io_test_util.h"

namespace {
using moe::test::context_info;
using moe::test::layer_stats;

const std::string k_mixtral = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/mixtral-tiny-f32.gguf";
constexpr uint64_t k_mixtral_slot = 24576;  // mixtral-tiny-f32: one expert, 3 x (32 x 64) F32
constexpr uint64_t k_page = 4096;

using fixture = moe::test::capi_fixture;
using moe::test::tmp_dir;

moe_options options(int32_t mode, uint64_t budget = 0, int32_t depth = 1) {
    moe_options o;
    EXPECT_EQ(moe_options_init(&o), MOE_OK);
    o.expert_budget_bytes = budget;
    o.reader = MOE_READER_PREAD;
    o.prefetch_mode = mode;
    o.prefetch_depth = depth;
    return o;
}

// Waits until `layer` has completed `bytes` of loads (prefetches land in the background).
bool wait_loaded(const moe_context* c, int layer, uint64_t bytes) {
    for (int i = 0; i < 5000; ++i) {
        if (layer_stats(c, layer).bytes_loaded >= bytes) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
}

// Acquire + wait + release; returns false on any failure.
bool use(moe_context* c, int layer, int expert) {
    moe_handle* h = nullptr;
    if (moe_acquire(c, layer, expert, &h) != MOE_OK) return false;
    const bool ok = moe_wait(h) == MOE_OK;
    return moe_release(h) == MOE_OK && ok;
}

// A layout over one file: expert (l, e) is bytes_of(l) bytes at consecutive offsets.
template <typename F>
void describe(moe_layout* l, const std::string& path, int n_layers, int n_experts, F bytes_of) {
    int32_t fi = -1;
    ASSERT_EQ(moe_layout_add_file(l, path.c_str(), &fi), MOE_OK) << moe_last_error();
    uint64_t off = 0;
    for (int layer = 0; layer < n_layers; ++layer)
        for (int e = 0; e < n_experts; ++e) {
            const moe_range r{off, bytes_of(layer)};
            ASSERT_EQ(moe_layout_set_expert(l, layer, e, fi, 1, &r), MOE_OK) << moe_last_error();
            off += r.bytes;
        }
}

// Routers of a 3-layer x 8-expert layout over n_embd = 4, built so that the top-2 of each hidden state below is
// known: with h1 = (1, 1, 0, 0), layer 1 scores expert 5 at 2 and expert 2 at 1 (the rest 0) and layer 2 scores
// 7 at 3 and 1 at 1; with h2 = (0, 0, 1, 1), layer 1 scores only 6 (3), so its top-2 is {6, 0} (ties to the
// lower id), and layer 2 only 4 (2): {4, 0}.
constexpr int k_embd = 4;
const float k_h1[k_embd] = {1, 1, 0, 0};
const float k_h2[k_embd] = {0, 0, 1, 1};

std::vector<float> router(int layer) {
    std::vector<float> W(8 * k_embd, 0.0f);
    auto set = [&](int e, int j, float v) { W[size_t(e * k_embd + j)] = v; };
    if (layer == 1) set(5, 0, 2), set(2, 1, 1), set(6, 2, 3);
    if (layer == 2) set(7, 1, 3), set(1, 0, 1), set(4, 3, 2);
    return W;
}

void make_spec_layout(fixture& f, const std::string& path) {
    ASSERT_EQ(moe_layout_create(3, 8, 2, &f.layout), MOE_OK);
    describe(f.layout, path, 3, 8, [](int) { return k_page; });
    for (int l = 1; l < 3; ++l) ASSERT_EQ(moe_layout_set_router(f.layout, l, router(l).data(), k_embd), MOE_OK);
}

// Speculative gating, depth 2: routing layer 0 with h1 prefetches exactly layer 1's {5, 2} and layer 2's {7, 1}.
TEST(capi_prefetch, spec_prefetches_the_top_k_of_the_next_routers) {
    moe::test::temp_file tf(tmp_dir(), 24 * k_page, 3);
    fixture f;
    make_spec_layout(f, tf.path);
    moe_options o = options(MOE_PREFETCH_SPEC, 0, 2);
    ASSERT_EQ(moe_context_create_from_layout(f.layout, &o, &f.ctx), MOE_OK) << moe_last_error();
    const moe_context_info info = context_info(f.ctx);
    EXPECT_EQ(info.prefetch_mode, MOE_PREFETCH_SPEC);
    EXPECT_EQ(info.prefetch_depth, 2);
    EXPECT_EQ(info.prefetch_k, 2);
    EXPECT_EQ(info.router_n_embd, k_embd);

    const int32_t r0[2] = {0, 1};
    uint32_t n = 99;
    ASSERT_EQ(moe_route_hidden(f.ctx, 0, 2, r0, nullptr, k_h1, k_embd, &n), MOE_OK) << moe_last_error();
    EXPECT_EQ(n, 4u);
    ASSERT_TRUE(wait_loaded(f.ctx, 1, 2 * k_page));
    ASSERT_TRUE(wait_loaded(f.ctx, 2, 2 * k_page));
    for (int l = 1; l < 3; ++l) {
        const moe_stats s = layer_stats(f.ctx, l);
        EXPECT_EQ(s.prefetch_loads, 2u) << l;
        EXPECT_EQ(s.loads, 2u) << l;
        EXPECT_EQ(s.predicted, 2u) << l;
        EXPECT_EQ(s.prefetch_issued, 2u) << l;
    }
    EXPECT_EQ(layer_stats(f.ctx, 0).loads, 0u);
    // Exactly those are resident: acquiring them hits (prefetch hits), anything else of the layer misses.
    for (int e : {5, 2}) EXPECT_TRUE(use(f.ctx, 1, e));
    moe_stats s1 = layer_stats(f.ctx, 1);
    EXPECT_EQ(s1.hits, 2u);
    EXPECT_EQ(s1.prefetch_hits, 2u);
    EXPECT_EQ(s1.misses, 0u);
    EXPECT_TRUE(use(f.ctx, 1, 3));
    EXPECT_EQ(layer_stats(f.ctx, 1).misses, 1u);
    for (int e : {7, 1}) EXPECT_TRUE(use(f.ctx, 2, e));
    EXPECT_EQ(layer_stats(f.ctx, 2).prefetch_hits, 2u);

    // Spec mode without a hidden state: the rows feed the statistics, nothing is guessed.
    const int32_t r1[2] = {5, 2}, r2[2] = {7, 1};
    ASSERT_EQ(moe_route_ex(f.ctx, 1, 2, r1, nullptr, &n), MOE_OK);
    EXPECT_EQ(n, 0u);
    ASSERT_EQ(moe_route_ex(f.ctx, 2, 2, r2, nullptr, &n), MOE_OK);
    EXPECT_EQ(n, 0u);
    s1 = layer_stats(f.ctx, 1);
    EXPECT_EQ(s1.needed, 2u);
    EXPECT_EQ(s1.predicted_needed, 2u);
    EXPECT_DOUBLE_EQ(s1.prediction_recall, 1.0);
    EXPECT_DOUBLE_EQ(s1.prefetch_recall, 2.0 / 3.0);  // 5 and 2 of the 3 acquired
    EXPECT_DOUBLE_EQ(s1.prefetch_precision, 1.0);
    EXPECT_EQ(layer_stats(f.ctx, 2).predicted_needed, 2u);

    // Next token, h2: layer 1's {6, 0} and layer 2's {4, 0}, none resident.
    ASSERT_EQ(moe_route_hidden(f.ctx, 0, 2, r0, nullptr, k_h2, k_embd, &n), MOE_OK) << moe_last_error();
    EXPECT_EQ(n, 4u);
    ASSERT_TRUE(wait_loaded(f.ctx, 1, 5 * k_page));
    ASSERT_TRUE(wait_loaded(f.ctx, 2, 4 * k_page));
    for (int e : {6, 0}) EXPECT_TRUE(use(f.ctx, 1, e));
    for (int e : {4, 0}) EXPECT_TRUE(use(f.ctx, 2, e));
    EXPECT_EQ(layer_stats(f.ctx, 1).prefetch_hits, 4u);
    EXPECT_EQ(layer_stats(f.ctx, 2).prefetch_hits, 4u);
    moe_stats total{};
    total.struct_size = sizeof(total);
    ASSERT_EQ(moe_get_stats(f.ctx, &total), MOE_OK);
    EXPECT_EQ(total.prefetch_loads, 8u);
    EXPECT_EQ(total.predicted, 8u);
    EXPECT_EQ(total.routed_rows, 4u);
}

// The fixture's own routers, read from the file at context creation: the experts prefetched for layer 1 are the
// top-2 of blk.1.ffn_gate_inp (read here with moe_model_read_tensor_f32) applied to the hidden state in double.
TEST(capi_prefetch, spec_reads_the_model_routers) {
    fixture f;
    ASSERT_EQ(moe_model_open(k_mixtral.c_str(), &f.model), MOE_OK) << moe_last_error();
    moe_model_info mi{};
    mi.struct_size = sizeof(mi);
    ASSERT_EQ(moe_model_get_info(f.model, &mi), MOE_OK);
    ASSERT_EQ(mi.n_layers, 2);
    const size_t D = size_t(mi.n_embd), E = size_t(mi.n_experts);
    std::vector<float> W(D * E);
    ASSERT_EQ(moe_model_read_tensor_f32(f.model, "blk.1.ffn_gate_inp.weight", W.data(), W.size()), MOE_OK)
        << moe_last_error();
    moe_options o = options(MOE_PREFETCH_SPEC);
    ASSERT_EQ(moe_context_create(f.model, &o, &f.ctx), MOE_OK) << moe_last_error();
    EXPECT_EQ(context_info(f.ctx).router_n_embd, mi.n_embd);

    std::vector<float> h(D);
    for (size_t j = 0; j < D; ++j) h[j] = float(int(j * 7 % 11) - 5) / 4.0f;
    std::vector<double> logit(E, 0.0);
    for (size_t e = 0; e < E; ++e)
        for (size_t j = 0; j < D; ++j) logit[e] += double(W[e * D + j]) * double(h[j]);
    std::vector<int> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logit[size_t(a)] > logit[size_t(b)]; });
    ASSERT_NE(logit[size_t(order[1])], logit[size_t(order[2])]) << "the reference top-2 must be unambiguous";

    const int32_t r0[2] = {0, 1};
    uint32_t n = 0;
    ASSERT_EQ(moe_route_hidden(f.ctx, 0, 2, r0, nullptr, h.data(), D, &n), MOE_OK) << moe_last_error();
    EXPECT_EQ(n, 2u);
    ASSERT_TRUE(wait_loaded(f.ctx, 1, 2 * k_mixtral_slot));
    for (int r = 0; r < 2; ++r) EXPECT_TRUE(use(f.ctx, 1, order[size_t(r)]));
    const moe_stats s = layer_stats(f.ctx, 1);
    EXPECT_EQ(s.prefetch_hits, 2u);
    EXPECT_EQ(s.misses, 0u);
    EXPECT_EQ(s.prefetch_loads, 2u);

    // The last layer has no router ahead of it: nothing to prefetch.
    ASSERT_EQ(moe_route_hidden(f.ctx, 1, 2, r0, nullptr, h.data(), D, &n), MOE_OK) << moe_last_error();
    EXPECT_EQ(n, 0u);
    EXPECT_EQ(moe_route_hidden(f.ctx, 0, 2, r0, nullptr, h.data(), D - 1, &n), MOE_ERR_INVALID_ARGUMENT);
}

// History mode on a scripted sequence: even tokens select {0, 1} at layer 0 and {4, 5} at layer 1, odd tokens
// {2, 3} and {6, 7}. Once both pairs were seen, the co-activation counts name the next layer's experts (and, past
// the last layer, the next token's layer-0 experts) exactly and nothing else scores. With 6 slots the 8 experts
// of the cycle cannot stay resident (LRU over a cycle longer than the cache), so every needed expert must come
// from a prefetch: recall, precision and prediction recall all reach 1 after warm-up.
TEST(capi_prefetch, history_reaches_full_recall_on_a_scripted_sequence) {
    moe::test::temp_file tf(tmp_dir(), 16 * k_page, 4);
    fixture f;
    ASSERT_EQ(moe_layout_create(2, 8, 2, &f.layout), MOE_OK);
    describe(f.layout, tf.path, 2, 8, [](int) { return k_page; });
    moe_options o = options(MOE_PREFETCH_HISTORY, 6 * k_page);
    ASSERT_EQ(moe_context_create_from_layout(f.layout, &o, &f.ctx), MOE_OK) << moe_last_error();
    const int32_t rows[2][2][2] = {{{0, 1}, {4, 5}}, {{2, 3}, {6, 7}}};
    // As an engine does it: pin the layer's experts (starting loads), route (the prefetcher guesses ahead and
    // can never evict a pinned expert), wait, compute, release.
    auto token = [&](int t) {
        for (int l = 0; l < 2; ++l) {
            const int32_t* ids = rows[t % 2][l];
            moe_handle* h[2] = {nullptr, nullptr};
            for (int r = 0; r < 2; ++r) ASSERT_EQ(moe_acquire(f.ctx, l, ids[r], &h[r]), MOE_OK) << moe_last_error();
            ASSERT_EQ(moe_route(f.ctx, l, 2, ids, nullptr), MOE_OK) << moe_last_error();
            for (int r = 0; r < 2; ++r) {
                EXPECT_EQ(moe_wait(h[r]), MOE_OK);
                EXPECT_EQ(moe_release(h[r]), MOE_OK);
            }
        }
    };
    for (int t = 0; t < 4; ++t) token(t);
    ASSERT_EQ(moe_reset_stats(f.ctx), MOE_OK);
    const int n_tok = 8;
    for (int t = 4; t < 4 + n_tok; ++t) token(t);
    for (int l = 0; l < 2; ++l) {
        const moe_stats s = layer_stats(f.ctx, l);
        EXPECT_EQ(s.needed, uint64_t(2 * n_tok)) << l;
        EXPECT_EQ(s.predicted_needed, uint64_t(2 * n_tok)) << l;
        EXPECT_DOUBLE_EQ(s.prediction_recall, 1.0) << l;
        EXPECT_EQ(s.hits + s.misses, uint64_t(2 * n_tok)) << l;
        EXPECT_EQ(s.prefetch_hits + s.prefetch_joins, uint64_t(2 * n_tok)) << l;
        EXPECT_DOUBLE_EQ(s.prefetch_recall, 1.0) << l;
        EXPECT_EQ(s.prefetch_wasted, 0u) << l;
        EXPECT_EQ(s.prefetch_wasted_bytes, 0u) << l;
        EXPECT_EQ(s.failed_loads, 0u) << l;
    }
    // Layer 1's prefetches are issued and used within a token: every one was used. (Layer 0's are issued one token
    // ahead, so the window after the reset shifts its loads by a token against its uses.)
    const moe_stats s1 = layer_stats(f.ctx, 1);
    EXPECT_EQ(s1.prefetch_loads, uint64_t(2 * n_tok));
    EXPECT_DOUBLE_EQ(s1.prefetch_precision, 1.0);
    EXPECT_EQ(s1.predicted, uint64_t(2 * n_tok));  // nothing but the right experts scored
}

// Rows may hold fewer than top_k experts: the history learns from a 1-expert row as from a full one.
TEST(capi_prefetch, short_rows_feed_the_history) {
    moe::test::temp_file tf(tmp_dir(), 16 * k_page, 9);
    fixture f;
    ASSERT_EQ(moe_layout_create(2, 8, 2, &f.layout), MOE_OK);
    describe(f.layout, tf.path, 2, 8, [](int) { return k_page; });
    moe_options o = options(MOE_PREFETCH_HISTORY);
    ASSERT_EQ(moe_context_create_from_layout(f.layout, &o, &f.ctx), MOE_OK) << moe_last_error();
    const int32_t a[1] = {3}, b[1] = {6};
    uint32_t n = 99;
    ASSERT_EQ(moe_route_ex(f.ctx, 0, 1, a, nullptr, &n), MOE_OK) << moe_last_error();
    EXPECT_EQ(n, 0u);
    ASSERT_EQ(moe_route_ex(f.ctx, 1, 1, b, nullptr, &n), MOE_OK) << moe_last_error();
    ASSERT_EQ(moe_route_ex(f.ctx, 0, 1, a, nullptr, &n), MOE_OK) << moe_last_error();
    EXPECT_EQ(n, 1u);  // 3 -> 6 is the only evidence: one guess, not top_k
    ASSERT_TRUE(wait_loaded(f.ctx, 1, k_page));
    EXPECT_TRUE(use(f.ctx, 1, 6));
    const moe_stats s = layer_stats(f.ctx, 1);
    EXPECT_EQ(s.predicted, 1u);
    EXPECT_EQ(s.prefetch_hits, 1u);
    ASSERT_EQ(moe_route_ex(f.ctx, 1, 1, b, nullptr, &n), MOE_OK);
    EXPECT_EQ(layer_stats(f.ctx, 1).needed, 2u);
    EXPECT_EQ(layer_stats(f.ctx, 1).predicted_needed, 1u);
}

// Both: the hidden state's guesses come first and take the per-layer quota (prefetch_k loads per layer and
// token); the history's guesses are made but not issued. Without a hidden state the history alone prefetches.
TEST(capi_prefetch, both_puts_spec_first_and_history_fills) {
    moe::test::temp_file tf(tmp_dir(), 24 * k_page, 5);
    fixture f;
    make_spec_layout(f, tf.path);
    moe_options o = options(MOE_PREFETCH_BOTH);
    ASSERT_EQ(moe_context_create_from_layout(f.layout, &o, &f.ctx), MOE_OK) << moe_last_error();
    const int32_t r0[2] = {0, 1}, r1[2] = {5, 2}, r2[2] = {7, 1};
    uint32_t n = 99;
    // Token 0: nothing learnt; the history sees 0,1 -> 5,2 -> 7,1.
    ASSERT_EQ(moe_route_ex(f.ctx, 0, 2, r0, nullptr, &n), MOE_OK);
    EXPECT_EQ(n, 0u);
    ASSERT_EQ(moe_route_ex(f.ctx, 1, 2, r1, nullptr, &n), MOE_OK);
    ASSERT_EQ(moe_route_ex(f.ctx, 2, 2, r2, nullptr, &n), MOE_OK);
    const moe_stats before = layer_stats(f.ctx, 1);
    // Token 1 with h2: spec guesses layer 1's {6, 0} (issued), the history {5, 2} (over the quota: skipped).
    ASSERT_EQ(moe_route_hidden(f.ctx, 0, 2, r0, nullptr, k_h2, k_embd, &n), MOE_OK) << moe_last_error();
    EXPECT_EQ(n, 2u);
    moe_stats s = layer_stats(f.ctx, 1);
    EXPECT_EQ(s.predicted - before.predicted, 4u);
    EXPECT_EQ(s.prefetch_issued - before.prefetch_issued, 2u);
    EXPECT_EQ(s.prefetch_skipped - before.prefetch_skipped, 2u);
    ASSERT_TRUE(wait_loaded(f.ctx, 1, 2 * k_page));
    for (int e : {6, 0}) EXPECT_TRUE(use(f.ctx, 1, e));
    EXPECT_EQ(layer_stats(f.ctx, 1).prefetch_hits, 2u);
    ASSERT_EQ(moe_route_ex(f.ctx, 1, 2, r1, nullptr, &n), MOE_OK);
    ASSERT_EQ(moe_route_ex(f.ctx, 2, 2, r2, nullptr, &n), MOE_OK);
    // Token 2 without a hidden state: the history's {5, 2} for layer 1.
    ASSERT_EQ(moe_route_ex(f.ctx, 0, 2, r0, nullptr, &n), MOE_OK);
    EXPECT_EQ(n, 2u);
    ASSERT_TRUE(wait_loaded(f.ctx, 1, 4 * k_page));
    for (int e : {5, 2}) EXPECT_TRUE(use(f.ctx, 1, e));
    EXPECT_EQ(layer_stats(f.ctx, 1).prefetch_hits, 4u);
}

// A prefetch still queued when its layer is routed without it is a stale hint: it is cancelled (the slot is freed,
// no bytes move, nothing fails). To keep it queued, the reader takes one load at a time (max_in_flight = 1) and is
// busy with a 4 MiB demand load of layer 0; whether the read of those 4 MiB outlasts the two calls that follow is
// up to the scheduler, so the test tries up to 50 fresh contexts and needs one cancellation, while every attempt
// must keep the counters consistent.
TEST(capi_prefetch, stale_prefetch_is_cancelled) {
    constexpr uint64_t big = 4u << 20;
    moe::test::temp_file tf(tmp_dir(), 4 * big + 4 * k_page, 6);
    fixture f;
    ASSERT_EQ(moe_layout_create(2, 4, 1, &f.layout), MOE_OK);
    describe(f.layout, tf.path, 2, 4, [&](int layer) { return layer == 0 ? big : k_page; });
    // Layer 1's router picks expert 3 for the hidden state (1, 0).
    std::vector<float> W(4 * 2, 0.0f);
    W[3 * 2 + 0] = 1.0f;
    ASSERT_EQ(moe_layout_set_router(f.layout, 1, W.data(), 2), MOE_OK);
    const float h[2] = {1.0f, 0.0f};
    bool cancelled = false;
    for (int attempt = 0; attempt < 50 && !cancelled; ++attempt) {
        moe_options o = options(MOE_PREFETCH_SPEC, 3 * big);
        o.max_in_flight = 1;
        moe_context* c = nullptr;
        ASSERT_EQ(moe_context_create_from_layout(f.layout, &o, &c), MOE_OK) << moe_last_error();
        moe_handle* hd = nullptr;
        ASSERT_EQ(moe_acquire(c, 0, 0, &hd), MOE_OK);
        const int32_t e0[1] = {0}, e2[1] = {2};
        uint32_t n = 0;
        ASSERT_EQ(moe_route_hidden(c, 0, 1, e0, nullptr, h, 2, &n), MOE_OK) << moe_last_error();
        EXPECT_EQ(n, 1u);                                    // (1, 3), queued behind the demand load
        ASSERT_EQ(moe_route(c, 1, 1, e2, nullptr), MOE_OK);  // layer 1 selected 2: the hint for 3 is stale
        EXPECT_EQ(moe_wait(hd), MOE_OK);
        EXPECT_EQ(moe_release(hd), MOE_OK);
        moe_stats s = layer_stats(c, 1);
        EXPECT_EQ(s.prefetch_loads, 1u);
        EXPECT_EQ(s.failed_loads, 0u);
        EXPECT_EQ(s.cancelled_loads, s.prefetch_cancelled);
        if (s.cancelled_loads == 1) {
            cancelled = true;
            EXPECT_EQ(s.prefetch_wasted, 1u);
            EXPECT_EQ(s.prefetch_wasted_bytes, 0u);  // it never reached the reader
            EXPECT_EQ(s.bytes_loaded, 0u);
            EXPECT_DOUBLE_EQ(s.prefetch_precision, 0.0);
            EXPECT_TRUE(use(c, 1, 3));  // absent again: a demand miss, not a join of the cancelled load
            s = layer_stats(c, 1);
            EXPECT_EQ(s.misses, 1u);
            EXPECT_EQ(s.joins, 0u);
            EXPECT_EQ(s.prefetch_hits, 0u);
        }
        moe_context_destroy(c);
    }
    EXPECT_TRUE(cancelled) << "no prefetch was still queued when its layer was routed, in 50 tries";
}

TEST(capi_prefetch, error_paths) {
    moe::test::temp_file tf(tmp_dir(), 24 * k_page, 7);
    fixture f;
    ASSERT_EQ(moe_layout_create(3, 8, 2, &f.layout), MOE_OK);
    describe(f.layout, tf.path, 3, 8, [](int) { return k_page; });
    const std::vector<float> W = router(1);
    // moe_layout_set_router
    EXPECT_EQ(moe_layout_set_router(nullptr, 1, W.data(), k_embd), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_layout_set_router(f.layout, 1, nullptr, k_embd), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_layout_set_router(f.layout, 3, W.data(), k_embd), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_layout_set_router(f.layout, -1, W.data(), k_embd), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_layout_set_router(f.layout, 1, W.data(), 0), MOE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ(moe_layout_set_router(f.layout, 1, W.data(), k_embd), MOE_OK);
    EXPECT_EQ(moe_layout_set_router(f.layout, 2, W.data(), k_embd - 1), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(moe_last_error()).find("same hidden state"), std::string::npos) << moe_last_error();

    // A spec context needs every router after the first: layer 2 has none yet.
    moe_context* c = nullptr;
    moe_options o = options(MOE_PREFETCH_SPEC);
    EXPECT_EQ(moe_context_create_from_layout(f.layout, &o, &c), MOE_ERR_UNSUPPORTED);
    EXPECT_EQ(c, nullptr);
    EXPECT_NE(std::string(moe_last_error()).find("layer 2 has none"), std::string::npos) << moe_last_error();
    o = options(MOE_PREFETCH_BOTH);
    EXPECT_EQ(moe_context_create_from_layout(f.layout, &o, &c), MOE_ERR_UNSUPPORTED);
    o = options(7);
    EXPECT_EQ(moe_context_create_from_layout(f.layout, &o, &c), MOE_ERR_INVALID_ARGUMENT);
    o = options(MOE_PREFETCH_HISTORY, 0, 0);
    EXPECT_EQ(moe_context_create_from_layout(f.layout, &o, &c), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(moe_last_error()).find("prefetch depth 0"), std::string::npos) << moe_last_error();

    // moe_route_hidden without spec: unsupported, whatever the layout has.
    o = options(MOE_PREFETCH_HISTORY);
    ASSERT_EQ(moe_context_create_from_layout(f.layout, &o, &f.ctx), MOE_OK) << moe_last_error();
    EXPECT_EQ(context_info(f.ctx).router_n_embd, 0);
    const int32_t ids[2] = {0, 1};
    uint32_t n = 99;
    EXPECT_EQ(moe_route_hidden(f.ctx, 0, 2, ids, nullptr, k_h1, k_embd, &n), MOE_ERR_UNSUPPORTED);
    EXPECT_EQ(n, 0u);
    EXPECT_NE(std::string(moe_last_error()).find("history"), std::string::npos) << moe_last_error();
    moe_context_destroy(f.ctx);
    f.ctx = nullptr;
    o = options(MOE_PREFETCH_SPEC);
    o.prefetch_in_flight = 0;  // prefetching off: no mode at all
    ASSERT_EQ(moe_context_create_from_layout(f.layout, &o, &f.ctx), MOE_OK) << moe_last_error();
    EXPECT_EQ(context_info(f.ctx).prefetch_mode, MOE_PREFETCH_NONE);
    EXPECT_EQ(moe_route_hidden(f.ctx, 0, 2, ids, nullptr, k_h1, k_embd, &n), MOE_ERR_UNSUPPORTED);
    moe_context_destroy(f.ctx);
    f.ctx = nullptr;

    // Every router set: a spec context, and the argument checks of moe_route_hidden.
    ASSERT_EQ(moe_layout_set_router(f.layout, 2, router(2).data(), k_embd), MOE_OK);
    o = options(MOE_PREFETCH_SPEC);
    ASSERT_EQ(moe_context_create_from_layout(f.layout, &o, &f.ctx), MOE_OK) << moe_last_error();
    EXPECT_EQ(moe_route_hidden(nullptr, 0, 2, ids, nullptr, k_h1, k_embd, &n), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_route_hidden(f.ctx, 0, 2, nullptr, nullptr, k_h1, k_embd, &n), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_route_hidden(f.ctx, 0, 2, ids, nullptr, nullptr, k_embd, &n), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_route_hidden(f.ctx, 0, 2, ids, nullptr, k_h1, k_embd + 1, &n), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(moe_last_error()).find("n_embd = 5"), std::string::npos) << moe_last_error();
    EXPECT_EQ(moe_route_hidden(f.ctx, 3, 2, ids, nullptr, k_h1, k_embd, &n), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_route_hidden(f.ctx, -1, 2, ids, nullptr, k_h1, k_embd, &n), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_route_hidden(f.ctx, 0, 3, ids, nullptr, k_h1, k_embd, &n), MOE_ERR_INVALID_ARGUMENT);
    const int32_t far[2] = {0, 8};
    EXPECT_EQ(moe_route_hidden(f.ctx, 0, 2, far, nullptr, k_h1, k_embd, &n), MOE_ERR_OUT_OF_RANGE);
    // Nothing above was recorded.
    EXPECT_EQ(layer_stats(f.ctx, 0).routed_rows, 0u);
    ASSERT_EQ(moe_route_hidden(f.ctx, 0, 2, ids, nullptr, k_h1, k_embd, nullptr), MOE_OK) << moe_last_error();
    EXPECT_EQ(layer_stats(f.ctx, 0).routed_rows, 1u);
}

// A caller built against API version 2 (moe_options and moe_stats without the new fields) gets the history mode
// at depth 1, and its stats struct is written up to its own size only.
TEST(capi_prefetch, older_structs_keep_working) {
    moe::test::temp_file tf(tmp_dir(), 24 * k_page, 8);
    fixture f;
    make_spec_layout(f, tf.path);
    moe_options o = options(MOE_PREFETCH_SPEC, 0, 3);
    o.struct_size = uint32_t(offsetof(moe_options, prefetch_mode));
    ASSERT_EQ(moe_context_create_from_layout(f.layout, &o, &f.ctx), MOE_OK) << moe_last_error();
    const moe_context_info info = context_info(f.ctx);
    EXPECT_EQ(info.prefetch_mode, MOE_PREFETCH_HISTORY);
    EXPECT_EQ(info.prefetch_depth, 1);
    EXPECT_EQ(info.router_n_embd, 0);
    moe_stats s;
    std::memset(&s, 0xAB, sizeof(s));
    s.struct_size = uint32_t(offsetof(moe_stats, prefetch_joins));
    ASSERT_EQ(moe_get_stats(f.ctx, &s), MOE_OK);
    EXPECT_EQ(s.routed_rows, 0u);
    EXPECT_EQ(s.prefetch_joins, 0xABABABABABABABABull);  // past the caller's size: untouched
}

}  // namespace
