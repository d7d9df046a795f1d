// Eviction policies on hand-made sequences (expected victims worked out in the comments), LRU and LFU
// against naive vector-based references on random use sequences, and the catalogue's errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "cache/policies.h"
#include "cache/policy_belady.h"
#include "cache/policy_lfu.h"
#include "cache/policy_lfu_recent.h"
#include "cache/policy_lru.h"
#include "cache/policy_lru_layer.h"
#include "cache/trace.h"
#include "common/error.h"

namespace moe {
namespace {

struct except_filter final : victim_filter {
    std::vector<expert_key> excluded;
    bool evictable(expert_key k) const override {
        return std::find(excluded.begin(), excluded.end(), k) == excluded.end();
    }
};
const except_filter ANY{};

expert_key K(uint32_t l, uint32_t e) {
    return expert_key{l, e};
}
access_info at(uint64_t t) {
    return access_info{t, 0, 0.0f};
}

// Inserts and touches in one go, as the simulator does for a miss.
void load(eviction_policy& p, expert_key k, uint64_t t) {
    p.insert(k, at(t));
    p.touch(k, at(t));
}

TEST(lru, evicts_least_recently_used_and_respects_filter) {
    lru_policy p(1, 4);
    load(p, K(0, 0), 0);      // recency (old -> new): 0
    load(p, K(0, 1), 1);      // 0 1
    load(p, K(0, 2), 2);      // 0 1 2
    p.touch(K(0, 0), at(3));  // 1 2 0
    EXPECT_EQ(p.victim(K(0, 3), ANY), K(0, 1));
    except_filter f;
    f.excluded = {K(0, 1)};
    EXPECT_EQ(p.victim(K(0, 3), f), K(0, 2));  // next oldest
    f.excluded = {K(0, 0), K(0, 1), K(0, 2)};
    EXPECT_EQ(p.victim(K(0, 3), f), std::nullopt);
    p.erase(K(0, 1));  // 2 0
    EXPECT_EQ(p.victim(K(0, 3), ANY), K(0, 2));
    p.erase(K(0, 1));  // erasing a non-resident expert is a no-op
    EXPECT_EQ(p.victim(K(0, 3), ANY), K(0, 2));
    EXPECT_TRUE(p.must_evict(K(0, 3), 3, 3));
    EXPECT_FALSE(p.must_evict(K(0, 3), 2, 3));
}

TEST(lru, is_global_across_layers) {
    lru_policy p(2, 2);
    load(p, K(1, 0), 0);
    load(p, K(0, 1), 1);
    load(p, K(1, 1), 2);
    // Incoming layer 0, but the oldest overall is layer 1 expert 0.
    EXPECT_EQ(p.victim(K(0, 0), ANY), K(1, 0));
}

TEST(lru_layer, quotas_split_evenly_and_victims_stay_in_the_layer) {
    lru_layer_policy p(3, 4, 8);  // 8 = 3*2 + 2: quotas 3, 3, 2
    EXPECT_EQ(p.quota(0), 3u);
    EXPECT_EQ(p.quota(1), 3u);
    EXPECT_EQ(p.quota(2), 2u);
    load(p, K(2, 0), 0);
    load(p, K(0, 0), 1);
    load(p, K(2, 1), 2);
    load(p, K(0, 1), 3);
    // Layer 2 holds 2 = its quota: room is needed even though the cache (4 of 8) is not full.
    EXPECT_TRUE(p.must_evict(K(2, 2), 4, 8));
    EXPECT_FALSE(p.must_evict(K(0, 2), 4, 8));
    EXPECT_FALSE(p.must_evict(K(1, 0), 4, 8));
    // Globally the oldest is (2,0) — and it is also layer 2's oldest; for layer 0 it is (0,0), not (2,0).
    EXPECT_EQ(p.victim(K(2, 2), ANY), K(2, 0));
    EXPECT_EQ(p.victim(K(0, 2), ANY), K(0, 0));
    EXPECT_EQ(p.victim(K(1, 2), ANY), std::nullopt);  // layer 1 holds nothing
    EXPECT_THROW(lru_layer_policy(4, 4, 3), error);   // a layer would get no slot
}

TEST(lfu, without_decay_evicts_least_frequent_ties_by_recency) {
    lfu_policy p(1, 5, ~uint64_t(0));  // half-life 2^40 uses: no decay within the test
    load(p, K(0, 0), 0);
    load(p, K(0, 1), 1);
    load(p, K(0, 2), 2);
    load(p, K(0, 3), 3);
    p.touch(K(0, 0), at(4));
    p.touch(K(0, 0), at(5));  // counts: 0:3 1:1 2:1 3:1
    p.touch(K(0, 2), at(6));  // 0:3 1:1 2:2 3:1
    // 1 and 3 tie at one use; 1 was used longer ago.
    EXPECT_EQ(p.victim(K(0, 4), ANY), K(0, 1));
    p.touch(K(0, 1), at(7));  // 1:2 -> now 3 is alone at one use
    EXPECT_EQ(p.victim(K(0, 4), ANY), K(0, 3));
    except_filter f;
    f.excluded = {K(0, 3)};
    // 1 and 2 both at two uses; 2 last used at 6, 1 at 7 -> 2.
    EXPECT_EQ(p.victim(K(0, 4), f), K(0, 2));
}

TEST(lfu, counts_decay_with_half_life_of_capacity_uses) {
    // Half-life 1 use: each use halves every earlier contribution.
    // Uses A, A, B -> A = 1/4 + 1/2 = 0.75 < B = 1 -> A goes although used twice.
    {
        lfu_policy p(1, 3, 1);
        load(p, K(0, 0), 0);
        p.touch(K(0, 0), at(1));
        load(p, K(0, 1), 2);
        EXPECT_EQ(p.victim(K(0, 2), ANY), K(0, 0));
    }
    // Half-life 4 uses: A = 2^(-2/4) + 2^(-1/4) = 0.707 + 0.841 = 1.548 > B = 1 -> B goes.
    {
        lfu_policy p(1, 3, 4);
        load(p, K(0, 0), 0);
        p.touch(K(0, 0), at(1));
        load(p, K(0, 1), 2);
        EXPECT_EQ(p.victim(K(0, 2), ANY), K(0, 1));
    }
}

TEST(lfu, keeps_history_across_eviction) {
    lfu_policy p(1, 3, ~uint64_t(0));
    load(p, K(0, 0), 0);
    p.touch(K(0, 0), at(1));
    p.touch(K(0, 0), at(2));  // 0 has 3 uses
    p.erase(K(0, 0));
    load(p, K(0, 1), 3);
    load(p, K(0, 1 + 1), 4);
    p.touch(K(0, 2), at(5));  // 1:1, 2:2
    load(p, K(0, 0), 6);      // back with 4 uses: not the next victim
    EXPECT_EQ(p.victim(K(0, 1), ANY), K(0, 1));
}

TEST(lfu_recent, protects_the_latest_visit_of_each_layer) {
    lfu_recent_policy p(2, 3, 1, 1e12);  // half-life 1e12 uses: no decay within the test
    load(p, K(0, 0), 0);                 // t=0 layer 0 uses {0,1}: counts 1, 1
    load(p, K(0, 1), 0);
    load(p, K(1, 0), 1);  // t=1 layer 1 uses {0,1}
    load(p, K(1, 1), 1);
    p.touch(K(0, 0), at(2));  // t=2 layer 0 uses {0}: (0,0) count 2; (0,1) loses protection
    // Protected: (0,0) (layer 0's latest), (1,0), (1,1) (layer 1's latest). A victim for layer 1 means
    // layer 1's new visit began, so (1,0) and (1,1) lose protection too. Unprotected counts: (0,1)=1,
    // (1,0)=1, (1,1)=1 -> tie -> least recently used: (0,1).
    EXPECT_EQ(p.victim(K(1, 2), ANY), K(0, 1));
    except_filter f;
    f.excluded = {K(0, 1)};
    EXPECT_EQ(p.victim(K(1, 2), f), K(1, 0));  // next oldest of the count-1 tie
    f.excluded = {K(0, 1), K(1, 0), K(1, 1)};
    EXPECT_EQ(p.victim(K(1, 2), f), K(0, 0));  // only the protected (0,0) is left
    // Plain LFU would pick by count alone; here (0,0), used twice, is never first.
}

TEST(lfu_recent, evicts_most_recent_protected_when_a_visit_cycle_does_not_fit) {
    lfu_recent_policy p(3, 2, 1, 1e12);
    load(p, K(0, 0), 0);  // layers 0, 1, 2 visited in turn, one expert each: all protected
    load(p, K(1, 0), 1);
    load(p, K(2, 0), 2);
    // Incoming for layer 0: layer 0's previous expert (0,0) is no longer protected -> it goes.
    EXPECT_EQ(p.victim(K(0, 1), ANY), K(0, 0));
    except_filter f;
    f.excluded = {K(0, 0)};
    // Among protected (1,0) and (2,0): layer 2 ran last, so it runs again last -> (2,0) (LRU says (1,0)).
    EXPECT_EQ(p.victim(K(0, 1), f), K(2, 0));
}

routing_trace one_layer_trace(const std::vector<std::vector<uint32_t>>& rows, uint32_t n_experts, uint32_t top_k) {
    routing_trace t;
    t.model = "hand";
    t.n_layers = 1;
    t.n_experts = n_experts;
    t.top_k = top_k;
    uint32_t tok = 0;
    for (const auto& r : rows) t.rows.push_back(trace_row{0, tok++, 0, r, {}});
    return t;
}

TEST(belady, evicts_farthest_next_use_never_used_first) {
    // Rows: A B C A B C D (ids 0 1 2 0 1 2 3), capacity 2.
    routing_trace t = one_layer_trace({{0}, {1}, {2}, {0}, {1}, {2}, {3}}, 4, 1);
    belady_policy p(t, 1, 4);
    load(p, K(0, 0), 0);
    load(p, K(0, 1), 1);
    // Row 2 needs C: A is next used at row 3, B at row 4 -> evict B.
    EXPECT_EQ(p.victim(K(0, 2), ANY), K(0, 1));
    p.erase(K(0, 1));
    load(p, K(0, 2), 2);
    p.touch(K(0, 0), at(3));  // A: never used again; C: row 5
    EXPECT_EQ(p.victim(K(0, 1), ANY), K(0, 0));
    except_filter f;
    f.excluded = {K(0, 0)};
    EXPECT_EQ(p.victim(K(0, 1), f), K(0, 2));
}

TEST(catalogue, names_and_errors) {
    policy_params pp;
    pp.n_layers = 2;
    pp.n_experts = 4;
    pp.capacity = 4;
    for (const auto& n : policy_names()) {
        if (n == "belady") continue;
        auto p = make_policy(n, pp);
        EXPECT_EQ(p->name(), n);
    }
    try {
        make_policy("fifo", pp);
        FAIL() << "no error";
    } catch (const error& e) {
        EXPECT_NE(std::string(e.what()).find("valid policies are lru, lru-layer"), std::string::npos) << e.what();
    }
    EXPECT_THROW(make_policy("belady", pp), error);  // needs the trace
    routing_trace t = one_layer_trace({{0}}, 4, 1);
    t.n_layers = 2;
    pp.future = &t;
    EXPECT_EQ(make_policy("belady", pp)->name(), "belady");
    pp.n_layers = 0;
    EXPECT_THROW(make_policy("lru", pp), error);
}

// ---- naive references on random use sequences -----------------------------------------------------------

// LRU as a vector ordered oldest -> newest; victim = first evictable.
struct naive_lru {
    std::vector<uint64_t> order;
    void use(uint64_t k) {
        order.erase(std::remove(order.begin(), order.end(), k), order.end());
        order.push_back(k);
    }
    void erase(uint64_t k) { order.erase(std::remove(order.begin(), order.end(), k), order.end()); }
    std::optional<uint64_t> victim(const std::set<uint64_t>& excluded) const {
        for (uint64_t k : order)
            if (!excluded.count(k)) return k;
        return std::nullopt;
    }
};

// LFU without decay: integer counts (history kept), ties by the time of the last use.
struct naive_lfu {
    std::vector<uint64_t> resident;
    std::vector<uint64_t> count, last;
    uint64_t clock = 0;
    explicit naive_lfu(size_t n) : count(n, 0), last(n, 0) {}
    std::optional<uint64_t> victim(const std::set<uint64_t>& excluded) const {
        std::optional<uint64_t> best;
        for (uint64_t k : resident) {
            if (excluded.count(k)) continue;
            if (!best || count[k] < count[*best] || (count[k] == count[*best] && last[k] < last[*best])) best = k;
        }
        return best;
    }
};

TEST(lru, matches_naive_reference_on_random_uses) {
    std::mt19937 rng(7);
    const uint32_t L = 3, E = 5;
    for (int trial = 0; trial < 20; ++trial) {
        lru_policy p(L, E);
        naive_lru ref;
        std::set<uint64_t> resident;
        const size_t cap = 1 + rng() % 8;
        for (int step = 0; step < 400; ++step) {
            expert_key k = K(rng() % L, rng() % E);
            uint64_t id = k.layer * E + k.expert;
            std::set<uint64_t> excluded{id};
            if (rng() % 4 == 0) excluded.insert((rng() % L) * E + rng() % E);  // something pinned
            except_filter f;
            for (uint64_t x : excluded) f.excluded.push_back(K(uint32_t(x / E), uint32_t(x % E)));
            if (!resident.count(id)) {
                if (resident.size() >= cap) {
                    auto v = p.victim(k, f);
                    auto rv = ref.victim(excluded);
                    ASSERT_EQ(v.has_value(), rv.has_value());
                    if (!v) continue;
                    uint64_t vid = v->layer * E + v->expert;
                    ASSERT_EQ(vid, *rv) << "trial " << trial << " step " << step;
                    p.erase(*v);
                    ref.erase(vid);
                    resident.erase(vid);
                }
                p.insert(k, at(step));
                ref.use(id);
                resident.insert(id);
            }
            p.touch(k, at(step));
            ref.use(id);
        }
    }
}

TEST(lfu, matches_naive_reference_on_random_uses) {
    std::mt19937 rng(11);
    const uint32_t L = 2, E = 6;
    for (int trial = 0; trial < 20; ++trial) {
        lfu_policy p(L, E, ~uint64_t(0));
        naive_lfu ref(L * E);
        const size_t cap = 1 + rng() % 6;
        for (int step = 0; step < 400; ++step) {
            // Skewed ids so that counts differ.
            uint32_t e = std::min<uint32_t>(E - 1, uint32_t(std::abs(std::normal_distribution<double>(0, 2)(rng))));
            expert_key k = K(rng() % L, e);
            uint64_t id = k.layer * E + k.expert;
            std::set<uint64_t> excluded{id};
            except_filter f;
            f.excluded.push_back(k);
            bool is_res = std::find(ref.resident.begin(), ref.resident.end(), id) != ref.resident.end();
            if (!is_res) {
                if (ref.resident.size() >= cap) {
                    auto v = p.victim(k, f);
                    auto rv = ref.victim(excluded);
                    ASSERT_TRUE(v && rv);
                    uint64_t vid = v->layer * E + v->expert;
                    ASSERT_EQ(vid, *rv) << "trial " << trial << " step " << step;
                    p.erase(*v);
                    ref.resident.erase(std::find(ref.resident.begin(), ref.resident.end(), vid));
                }
                p.insert(k, at(step));
                ref.resident.push_back(id);
                ref.last[id] = ++ref.clock;
            }
            p.touch(k, at(step));
            ref.count[id]++;
            ref.last[id] = ++ref.clock;
        }
    }
}

}  // namespace
}  // namespace moe
