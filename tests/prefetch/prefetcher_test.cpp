// The prefetcher's parts on hand-made inputs whose right answers are known: speculative top-n selection from given
// logits; the history predictor's counts, scores and predictions (hand-computed), including a routing rule it
// must learn exactly; BOTH's merge (spec first, history fills, no duplicates, per_layer loads per layer); the
// room rule; a scripted decode with known recall, precision and wasted bytes; and stale-hint cancellation
// through the real streamer (a cancelled prefetch is wasted, never a failed load).
#include "prefetch/prefetcher.h"

#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <thread>

#include "cache/expert_cache.h"
#include "cache/policies.h"
#include "common/error.h"
#include "prefetch/history_predictor.h"
#include "prefetch/reader_factory.h"
#include "prefetch/speculative_gating.h"
#include "prefetch/streamer.h"
#include "tests/cache/fake_expert_loader.h"
#include "tests/prefetch/gated_source.h"
#include "tests/prefetch/io_test_util.h"

namespace moe {
namespace {

using ids = std::vector<int>;

ids top(std::vector<float> logits, int n) {
    ids out(size_t(std::max(n, 0)) + 2, -7);
    const int got = top_experts(logits, n, out);
    out.resize(size_t(got));
    return out;
}

TEST(speculative_gating, top_n_by_logit_best_first_ties_to_the_lower_id) {
    EXPECT_EQ(top({0.5f, 2.0f, -1.0f, 2.0f, 0.7f}, 3), (ids{1, 3, 4}));
    EXPECT_EQ(top({0.5f, 2.0f, -1.0f, 2.0f, 0.7f}, 1), (ids{1}));
    EXPECT_EQ(top({1.0f, 1.0f, 1.0f}, 2), (ids{0, 1}));
    EXPECT_EQ(top({-3.0f, -1.0f}, 5), (ids{1, 0})) << "n is clamped to the expert count";
    EXPECT_EQ(top({-3.0f, -1.0f}, 0), (ids{}));
}

// ---- history predictor ---------------------------------------------------------------------------------------

history_predictor make_history(uint32_t L, uint32_t E, uint32_t K, uint32_t window = 8) {
    history_config c;
    c.n_layers = L;
    c.n_experts = E;
    c.top_k = K;
    c.window = window;
    return history_predictor(c);
}

ids predict(const history_predictor& h, uint32_t layer, const ids& above, const ids& before, int n) {
    std::vector<int> out(static_cast<size_t>(n));
    std::vector<float> scratch(h.config().n_experts);
    out.resize(size_t(h.predict(layer, above, before, n, out, scratch)));
    return out;
}

TEST(history_predictor, counts_and_scores_match_a_hand_computation) {
    auto h = make_history(2, 4, 2);
    h.observe(0, 0, ids{0, 1});
    h.observe(0, 1, ids{2, 3});
    h.observe(1, 0, ids{1, 2});
    h.observe(1, 1, ids{3, 0});
    // Across layers (same token): token 0 gives 0->{2,3}, 1->{2,3}; token 1 gives 1->{3,0}, 2->{3,0}.
    EXPECT_EQ(h.layer_count(1, 0, 2), 1u);
    EXPECT_EQ(h.layer_count(1, 0, 3), 1u);
    EXPECT_EQ(h.layer_count(1, 0, 0), 0u);
    EXPECT_EQ(h.layer_count(1, 1, 3), 2u);
    EXPECT_EQ(h.layer_count(1, 1, 2), 1u);
    EXPECT_EQ(h.layer_count(1, 1, 0), 1u);
    EXPECT_EQ(h.layer_count(1, 2, 0), 1u);
    EXPECT_EQ(h.layer_seen(1, 1), 2u);
    EXPECT_EQ(h.layer_seen(1, 0), 1u);
    EXPECT_EQ(h.layer_seen(1, 3), 0u);
    // Across tokens (same layer): layer 0 {0,1}->{1,2}; layer 1 {2,3}->{3,0}.
    EXPECT_EQ(h.token_count(0, 0, 1), 1u);
    EXPECT_EQ(h.token_count(0, 1, 2), 1u);
    EXPECT_EQ(h.token_count(0, 1, 0), 0u);
    EXPECT_EQ(h.token_seen(0, 1), 1u);
    EXPECT_EQ(h.token_count(1, 3, 0), 1u);
    EXPECT_EQ(h.token_seen(1, 2), 1u);
    EXPECT_EQ(h.token_seen(1, 0), 0u) << "token 1's row has no successor yet";

    // score(1, above {1}): P(j | 1) = C[1][1][j] / 2 -> {0.5, 0, 0.5, 1}.
    std::vector<float> s(4);
    h.score(1, ids{1}, ids{}, s);
    EXPECT_FLOAT_EQ(s[0], 0.5f);
    EXPECT_FLOAT_EQ(s[1], 0.0f);
    EXPECT_FLOAT_EQ(s[2], 0.5f);
    EXPECT_FLOAT_EQ(s[3], 1.0f);
    EXPECT_EQ(predict(h, 1, ids{1}, ids{}, 2), (ids{3, 0})) << "0 and 2 tie at 0.5: the lower id wins";
    EXPECT_EQ(predict(h, 1, ids{1}, ids{}, 4), (ids{3, 0, 2})) << "only positive scores are predictions";
    // above {0, 1}: mean of P(.|0) = {0,0,1,1} and P(.|1) -> {0.25, 0, 0.75, 1}; plus before {2}: P(.|2 at layer
    // 1, previous token) = {1, 0, 0, 1} -> {1.25, 0, 0.75, 2}.
    h.score(1, ids{0, 1}, ids{2}, s);
    EXPECT_FLOAT_EQ(s[0], 1.25f);
    EXPECT_FLOAT_EQ(s[2], 0.75f);
    EXPECT_FLOAT_EQ(s[3], 2.0f);
    EXPECT_EQ(predict(h, 1, ids{0, 1}, ids{2}, 2), (ids{3, 0}));
    EXPECT_EQ(predict(h, 0, ids{}, ids{3}, 2), (ids{})) << "no evidence, no prediction";
}

TEST(history_predictor, a_batch_routed_layer_by_layer_counts_like_token_by_token) {
    std::mt19937 rng(3);
    const uint32_t L = 3, E = 6, K = 2, T = 10;
    std::vector<ids> rows(T * L);
    for (auto& r : rows) {
        const int a = int(rng() % E);
        r = {a, int((uint32_t(a) + 1 + rng() % (E - 1)) % E)};
    }
    auto one = make_history(L, E, K, 4);
    for (uint32_t t = 0; t < T; ++t)
        for (uint32_t l = 0; l < L; ++l) one.observe(t, l, rows[t * L + l]);
    auto batched = make_history(L, E, K, 4);
    for (uint32_t t0 : {0u, 4u, 8u})  // batches of 4, 4, 2 tokens: all rows of layer l before layer l+1
        for (uint32_t l = 0; l < L; ++l)
            for (uint32_t t = t0; t < std::min(T, t0 + 4); ++t) batched.observe(t, l, rows[t * L + l]);
    for (uint32_t l = 0; l < L; ++l)
        for (uint32_t i = 0; i < E; ++i) {
            EXPECT_EQ(one.layer_seen(l, i), batched.layer_seen(l, i));
            EXPECT_EQ(one.token_seen(l, i), batched.token_seen(l, i));
            for (uint32_t j = 0; j < E; ++j) {
                EXPECT_EQ(one.layer_count(l, i, j), batched.layer_count(l, i, j));
                EXPECT_EQ(one.token_count(l, i, j), batched.token_count(l, i, j));
            }
        }
    EXPECT_EQ(one.token_seen(0, uint32_t(rows[0][0])) + one.token_seen(0, uint32_t(rows[0][1])) > 0, true);
}

TEST(history_predictor, a_new_sequence_does_not_pair_with_the_old_one) {
    auto h = make_history(2, 4, 1);
    h.observe(0, 0, ids{1});
    h.observe(0, 1, ids{2});
    h.observe(1, 0, ids{3});
    h.observe(1, 1, ids{0});
    EXPECT_EQ(h.token_count(0, 1, 3), 1u);
    h.observe(0, 0, ids{2});  // position 0 again: a new sequence
    EXPECT_EQ(h.token_seen(0, 3), 0u) << "the old sequence's last token is not this one's predecessor";
    EXPECT_TRUE(h.row(0, 1).empty()) << "the old sequence's rows are forgotten";
    h.observe(0, 1, ids{1});
    EXPECT_EQ(h.layer_count(1, 2, 1), 1u) << "within the new sequence rows pair as usual";
    EXPECT_THROW(h.observe(1, 0, ids{4}), error);
    EXPECT_THROW(h.observe(1, 2, ids{0}), error);
}

// Layer l+1 always selects (e + 1) % E for every e layer l selected (partners drawn at random at layer 0): after
// a warm-up the predictor's guess for layer l+1 from layer l's real choice is exactly right, every time.
TEST(history_predictor, learns_a_deterministic_layer_rule_to_recall_one) {
    const uint32_t L = 4, E = 8, K = 2;
    auto h = make_history(L, E, K);
    std::mt19937 rng(11);
    uint64_t needed = 0, hit = 0;
    for (uint32_t t = 0; t < 200; ++t) {
        const int a = int(rng() % E);
        ids row{a, int((uint32_t(a) + 1 + rng() % (E - 1)) % E)};
        for (uint32_t l = 0; l < L; ++l) {
            if (l > 0 && t >= 40) {  // after warm-up: guess layer l from the real choice at l - 1
                const ids guess = predict(h, l, ids(h.row(t, l - 1).begin(), h.row(t, l - 1).end()), ids{}, int(K));
                for (int e : row) {
                    ++needed;
                    hit += std::find(guess.begin(), guess.end(), e) != guess.end();
                }
            }
            h.observe(t, l, row);
            for (int& e : row) e = int((uint32_t(e) + 1) % E);
        }
    }
    EXPECT_EQ(needed, 160u * (L - 1) * K);
    EXPECT_EQ(hit, needed) << "recall " << double(hit) / double(needed);
    // The counts behind it: C[l][e][(e+1)%E] == N[l][e] for every expert seen.
    for (uint32_t l = 1; l < L; ++l)
        for (uint32_t e = 0; e < E; ++e) EXPECT_EQ(h.layer_count(l, e, (e + 1) % E), h.layer_seen(l, e));
}

// ---- prefetcher over a cache with an immediate loader ----------------------------------------------------------

struct cache_rig {
    static constexpr uint64_t k_bytes = 4096;
    memory_tier tier;
    test::fake_expert_loader loader{test::fake_expert_loader::mode::IMMEDIATE};
    expert_cache cache;
    cache_rig(uint32_t L, uint32_t E, uint32_t n_slots)
        : tier(memory_tier_config{tier_kind::RAM, n_slots * k_bytes, k_bytes}),
          cache(expert_cache_config{L, E, {}}, tier, loader,
                make_policy("lru", policy_params{L, E, n_slots, nullptr})) {}
};

// What the forward pass does at one MoE layer of a decode step: route, pin the selection, prefetch, unpin.
void decode_layer(prefetcher& pf, expert_cache& cache, uint32_t layer, uint32_t pos, const ids& sel,
                  const std::vector<float>& spec_logits, uint64_t time) {
    pf.routed(layer, pos, 1, sel);
    std::vector<expert_handle> pins;
    for (size_t r = 0; r < sel.size(); ++r)
        pins.push_back(cache.acquire({layer, uint32_t(sel[r])}, access_info{time, uint32_t(r), 0.0f}));
    for (auto& h : pins) h.wait();
    pf.prefetch(layer, time, spec_logits);
}

std::vector<float> favour(uint32_t E, const ids& best_first) {
    std::vector<float> l(E, 0.0f);
    for (size_t i = 0; i < best_first.size(); ++i) l[size_t(best_first[i])] = float(10 - int(i));
    return l;
}

prefetch_config mode_cfg(prefetch_mode m, int depth = 1, int per_layer = 0) {
    prefetch_config c;
    c.mode = m;
    c.depth = depth;
    c.per_layer = per_layer;
    return c;
}

// Two layers, four experts, top-1, three slots, LRU, spec depth 1. Hand trace (LRU list front first):
//  step 1: L0 0 miss [00]; guess L1 1 -> prefetch load [11 00]; L1 1: prefetch hit.
//  step 2: L0 0 hit [00 11]; guess 2 -> prefetch load [12 00 11]; L1 3: miss, evicts 11 (used) [13 12 00].
//  step 3: L0 1 miss, evicts 00 [01 13 12]; guess 3: already resident; L1 3: hit (not a prefetch hit).
//  step 4: L0 1 hit [01 13 12]; guess 0 -> prefetch evicts 12 unused (wasted) [10 01 13]; L1 0: prefetch hit.
// Layer 1: 4 needed, prefetch hits 2 -> recall 0.5; 3 prefetch loads, 2 used -> precision 2/3; 1 wasted
// (4096 bytes); the guesses named the needed expert in steps 1, 3, 4 -> prediction recall 0.75.
TEST(prefetcher, scripted_decode_has_the_hand_computed_recall_precision_and_waste) {
    cache_rig r(2, 4, 3);
    prefetcher pf(mode_cfg(prefetch_mode::SPEC), 2, 4, 1, 1, r.cache, nullptr);
    EXPECT_EQ(pf.n_spec_layers(0), 1);
    EXPECT_EQ(pf.n_spec_layers(1), 0) << "no router past the last layer";
    const int script[4][3] = {{0, 1, 1}, {0, 2, 3}, {1, 3, 3}, {1, 0, 0}};  // L0 choice, guess for L1, L1 choice
    uint64_t time = 0;
    for (uint32_t s = 0; s < 4; ++s) {
        decode_layer(pf, r.cache, 0, s, ids{script[s][0]}, favour(4, {script[s][1]}), time++);
        decode_layer(pf, r.cache, 1, s, ids{script[s][2]}, {}, time++);
    }
    const layer_stats l1 = r.cache.stats().layers[1];
    EXPECT_EQ(l1.hits + l1.misses, 4u);
    EXPECT_EQ(l1.hits, 3u);
    EXPECT_EQ(l1.prefetch_hits, 2u);
    EXPECT_EQ(l1.prefetch_joins, 0u);
    EXPECT_EQ(l1.prefetch_loads, 3u);
    EXPECT_EQ(l1.prefetch_unused_evictions, 1u);
    EXPECT_EQ(l1.prefetch_unused_bytes, cache_rig::k_bytes);
    EXPECT_EQ(l1.cancelled_loads, 0u);
    EXPECT_EQ(l1.failed_loads, 0u);
    EXPECT_DOUBLE_EQ(l1.prefetch_recall(), 0.5);
    EXPECT_DOUBLE_EQ(l1.prefetch_precision(), 2.0 / 3.0);
    EXPECT_EQ(l1.prefetch_wasted(), 1u);
    const layer_stats l0 = r.cache.stats().layers[0];
    EXPECT_EQ(l0.hits, 2u);
    EXPECT_EQ(l0.prefetch_loads, 0u);
    EXPECT_DOUBLE_EQ(l0.prefetch_recall(), 0.0);
    const layer_stats tot = r.cache.stats().total();
    EXPECT_DOUBLE_EQ(tot.prefetch_recall(), 2.0 / 8.0);
    EXPECT_DOUBLE_EQ(tot.prefetch_precision(), 2.0 / 3.0);

    const prefetcher_layer_stats p1 = pf.stats()[1];
    EXPECT_EQ(p1.needed, 4u);
    EXPECT_EQ(p1.predicted_needed, 3u);
    EXPECT_EQ(p1.guesses, 4u);
    EXPECT_EQ(p1.issued, 3u);
    EXPECT_EQ(p1.already, 1u);
    EXPECT_EQ(p1.skipped, 0u);
    EXPECT_DOUBLE_EQ(p1.prediction_recall(), 0.75);
    EXPECT_EQ(pf.stats()[0].needed, 4u);
    EXPECT_EQ(pf.stats()[0].guesses, 0u) << "spec never guesses layer 0";
}

// BOTH: spec's guesses first, then history's that spec did not make; at most per_layer loads per layer.
TEST(prefetcher, both_merges_spec_then_history_without_duplicates) {
    for (bool spec_first_resident : {false, true}) {
        SCOPED_TRACE(spec_first_resident);
        cache_rig r(2, 4, 8);
        prefetcher pf(mode_cfg(prefetch_mode::BOTH), 2, 4, 2, 1, r.cache, nullptr);
        // Teach the history: layer 0 {0, 1} -> layer 1 {1, 3} (history then guesses {1, 3}: a tie, lower id first).
        pf.routed(0, 0, 1, ids{0, 1});
        pf.routed(1, 0, 1, ids{1, 3});
        if (spec_first_resident) r.cache.acquire({1, 2}).reset();
        pf.routed(0, 1, 1, ids{0, 1});
        // Spec: layer 1's router favours {2, 3}. Merged: {2, 3, 1}.
        EXPECT_EQ(pf.prefetch(0, 5, favour(4, {2, 3})), 2u);
        const prefetcher_layer_stats p = pf.stats()[1];
        EXPECT_EQ(p.guesses, 3u);
        EXPECT_EQ(p.issued, 2u);
        EXPECT_EQ(r.cache.state({1, 3}), residency::RESIDENT);
        if (spec_first_resident) {
            EXPECT_EQ(p.already, 1u);
            EXPECT_EQ(r.cache.state({1, 1}), residency::RESIDENT) << "history fills the load spec did not need";
        } else {
            EXPECT_EQ(p.skipped, 1u) << "per_layer (2) loads already started for layer 1";
            EXPECT_EQ(r.cache.state({1, 1}), residency::ABSENT);
            EXPECT_EQ(r.cache.state({1, 2}), residency::RESIDENT);
        }
        EXPECT_EQ(r.cache.state({1, 0}), residency::ABSENT);
    }
}

// HISTORY past the last layer: the next token's layer 0, from token-to-token co-activation at layer 0.
TEST(prefetcher, history_guesses_the_next_tokens_first_layer) {
    cache_rig r(2, 4, 8);
    prefetcher pf(mode_cfg(prefetch_mode::HISTORY), 2, 4, 1, 1, r.cache, nullptr);
    EXPECT_EQ(pf.n_spec_layers(0), 0);
    // Layer 0 alternates 1, 2, 1, 2, ...; layer 1 is always 0.
    uint64_t time = 0;
    for (uint32_t t = 0; t < 6; ++t) {
        decode_layer(pf, r.cache, 0, t, ids{t % 2 ? 2 : 1}, {}, time++);
        decode_layer(pf, r.cache, 1, t, ids{0}, {}, time++);
    }
    // Layer 1 is guessed from layer 0's real choice: 0 after 1 is learnt at token 0, 0 after 2 at token 1, so
    // tokens 2..5 are guessed right. The next token's layer 0 is guessed at the end of a token from this token's
    // layer 0: 1 -> 2 is learnt at token 1, 2 -> 1 at token 2, so the guesses made at the end of tokens 2..5 are
    // right, and those for tokens 3..5 were checked (token 6 never came). Every expert is resident by then (8
    // slots), so the guesses need no load.
    const prefetcher_layer_stats p0 = pf.stats()[0], p1 = pf.stats()[1];
    EXPECT_EQ(p0.needed, 6u);
    EXPECT_EQ(p0.guesses, 4u);
    EXPECT_EQ(p0.already, 4u);
    EXPECT_EQ(p0.predicted_needed, 3u);
    EXPECT_EQ(p1.needed, 6u);
    EXPECT_EQ(p1.predicted_needed, 4u);
    EXPECT_DOUBLE_EQ(p1.prediction_recall(), 4.0 / 6.0);
}

TEST(prefetcher, the_room_rule_keeps_top_k_slots_for_the_next_layer) {
    // top_k 2, 3 slots, this layer's 2 pinned: one prefetch leaves 2 slots that are neither loading nor holding an
    // unused prefetch (3 >= 0 + 0 + 1 + 2); a second would not (3 < 0 + 1 + 1 + 2), and would evict the first.
    {
        cache_rig r(2, 4, 3);
        prefetcher pf(mode_cfg(prefetch_mode::SPEC), 2, 4, 2, 1, r.cache, nullptr);
        decode_layer(pf, r.cache, 0, 0, ids{0, 1}, favour(4, {2, 3}), 0);
        EXPECT_EQ(pf.stats()[1].issued, 1u) << "one prefetch fits; the second would leave fewer than top_k slots";
        EXPECT_EQ(pf.stats()[1].skipped, 1u);
    }
    {
        cache_rig r(2, 4, 2);  // the smallest budget: nothing can be spared
        prefetcher pf(mode_cfg(prefetch_mode::SPEC), 2, 4, 2, 1, r.cache, nullptr);
        decode_layer(pf, r.cache, 0, 0, ids{0, 1}, favour(4, {2, 3}), 0);
        EXPECT_EQ(pf.stats()[1].issued, 0u);
        EXPECT_EQ(pf.stats()[1].skipped, 2u);
    }
}

TEST(prefetcher, bad_settings_are_refused_with_what_was_expected) {
    cache_rig r(2, 4, 4);
    EXPECT_THROW(prefetcher(mode_cfg(prefetch_mode::SPEC, 0), 2, 4, 2, 1, r.cache, nullptr), error);
    EXPECT_THROW(prefetcher(mode_cfg(prefetch_mode::SPEC, 1, 5), 2, 4, 2, 1, r.cache, nullptr), error);
    EXPECT_EQ(parse_prefetch_mode("both", "--prefetch"), prefetch_mode::BOTH);
    try {
        parse_prefetch_mode("maybe", "--prefetch");
        ADD_FAILURE() << "no error";
    } catch (const error& e) {
        EXPECT_NE(std::string(e.what()).find("--prefetch 'maybe': expected none, spec, history or both"),
                  std::string::npos)
            << e.what();
    }
    prefetcher deep(mode_cfg(prefetch_mode::SPEC, 9), 2, 4, 2, 1, r.cache, nullptr);
    EXPECT_EQ(deep.config().depth, 2) << "depth is capped at the layer count";
}

// ---- stale hints, through the real streamer ---------------------------------------------------------------------

// 3 layers x 4 experts, one 1000-byte range each, in a temp file; a RAM tier with a slot per expert; the streamer
// reads through a gate the test opens and closes, one request at a time.
struct stream_rig {
    static constexpr uint32_t L = 3, E = 4;
    test::temp_file file{"/tmp", L* E * 1000, 5};
    std::unique_ptr<file_source> source;
    std::unique_ptr<test::gated_source> gate;
    memory_tier tier{memory_tier_config{tier_kind::RAM, L* E * 4096, 1000}};
    std::unique_ptr<streamer> stream;
    std::unique_ptr<expert_cache> cache;
    stream_rig() {
        source = open_file_source(file.path, reader_kind::PREAD);
        gate = std::make_unique<test::gated_source>(*source);
        streamer_layout sl;
        sl.n_layers = L;
        sl.n_experts = E;
        for (uint32_t i = 0; i < L * E; ++i) sl.ranges.push_back({byte_range{0, uint64_t(i) * 1000, 1000}});
        streamer_config sc;
        sc.max_in_flight = 1;
        stream = std::make_unique<streamer>(sc, sl, std::vector<file_source*>{gate.get()}, tier);
        cache = std::make_unique<expert_cache>(expert_cache_config{L, E, {}}, tier, *stream,
                                               make_policy("lru", policy_params{L, E, tier.n_slots(), nullptr}));
    }
    ~stream_rig() {
        gate->open();
        cache.reset();
        stream.reset();
    }
};

TEST(prefetcher, stale_queued_prefetches_are_cancelled_and_counted_as_wasted_not_failed) {
    stream_rig r;
    prefetcher pf(mode_cfg(prefetch_mode::SPEC, 2), 3, 4, 2, 1, *r.cache, r.stream.get());
    r.gate->close();
    // Layer 0 of token 0: guesses layer 1 {2, 3} and layer 2 {1, 0}. The first goes to the (closed) reader, the
    // other three wait in the streamer's queue.
    pf.routed(0, 0, 1, ids{0, 1});
    std::vector<float> logits = favour(4, {2, 3});
    const std::vector<float> l2 = favour(4, {1, 0});
    logits.insert(logits.end(), l2.begin(), l2.end());
    EXPECT_EQ(pf.prefetch(0, 0, logits), 4u);
    EXPECT_EQ(r.stream->n_in_flight(), 1u);
    EXPECT_EQ(r.stream->n_queued(), 3u);
    // Layer 1 selects {2, 0}: (1, 3) was guessed for now and not selected -> cancelled (queued); (1, 2) is used.
    pf.routed(1, 0, 1, ids{2, 0});
    EXPECT_EQ(pf.stats()[1].cancelled, 1u);
    EXPECT_EQ(r.cache->state({1, 3}), residency::ABSENT);
    EXPECT_EQ(r.cache->state({2, 1}), residency::LOADING) << "layer 2's guesses are not stale yet";
    auto h2 = r.cache->acquire({1, 2});  // joins the prefetch at the reader
    auto h0 = r.cache->acquire({1, 0});  // a demand, queued ahead of the prefetches
    r.stream->promote({1, 2});
    // Layer 2 selects {1, 3}: (2, 0) is stale and still queued -> cancelled.
    pf.routed(2, 0, 1, ids{1, 3});
    EXPECT_EQ(pf.stats()[2].cancelled, 1u);
    EXPECT_EQ(r.cache->state({2, 0}), residency::ABSENT);
    r.gate->open();
    h2.wait();
    h0.wait();
    h2.reset();
    h0.reset();
    // (2, 1) arrives on the streamer's own time: let it land, so its use below is a prefetch hit, not a join.
    for (int i = 0; i < 10000 && r.cache->n_loading() > 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_EQ(r.cache->n_loading(), 0u);
    auto h21 = r.cache->acquire({2, 1});
    h21.wait();
    h21.reset();
    const layer_stats tot = r.cache->stats().total();
    EXPECT_EQ(tot.failed_loads, 0u) << "a cancelled prefetch is not a failed load";
    EXPECT_EQ(tot.cancelled_loads, 2u);
    EXPECT_EQ(tot.prefetch_loads, 4u);
    EXPECT_EQ(tot.prefetch_used(), 2u) << "(1, 2) joined, (2, 1) hit";
    EXPECT_EQ(tot.prefetch_joins, 1u);
    EXPECT_EQ(tot.prefetch_hits, 1u);
    EXPECT_EQ(tot.prefetch_wasted(), 2u);
    EXPECT_DOUBLE_EQ(tot.prefetch_precision(), 0.5);
    EXPECT_EQ(r.stream->stats().n_cancelled, 2u);
    EXPECT_EQ(r.stream->stats().n_failed, 0u);
}

}  // namespace
}  // namespace moe
