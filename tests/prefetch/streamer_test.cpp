// The streamer between an expert cache (RAM tier) and real readers over a temp file of random bytes: every
// expert's slot equals the file bytes of its ranges (3 ranges, unaligned, one ending at EOF), with and without
// the staging + copy-engine path and under evictions; demand loads overtake queued prefetches, prefetches go
// by priority then FIFO; joins and promotion; cancellation frees slots and leaves experts ABSENT; an injected
// EIO reaches wait() with errno text and offset and a retry succeeds; destruction with work queued is clean.
#include "prefetch/streamer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "cache/expert_cache.h"
#include "cache/policies.h"
#include "common/error.h"
#include "prefetch/faulty_source.h"
#include "prefetch/reader_factory.h"
#include "runtime/model_desc.h"
#include "runtime/model_file.h"
#include "tests/prefetch/gated_source.h"
#include "tests/prefetch/io_test_util.h"

namespace moe {
namespace {

constexpr uint32_t k_layers = 2;
constexpr uint32_t k_experts = 4;
constexpr uint64_t k_file_bytes = 150001;  // odd: the last range ends at an unaligned end of file

// 3 ranges per expert (gate, up, down) at unaligned offsets and of unequal sizes; expert (1, 3)'s last range
// ends exactly at the end of the file.
streamer_layout make_layout() {
    streamer_layout l;
    l.n_layers = k_layers;
    l.n_experts = k_experts;
    l.ranges.resize(k_layers * k_experts);
    for (uint32_t i = 0; i < k_layers * k_experts; i++) {
        const uint64_t base = 13 + uint64_t(i) * 17011;
        l.ranges[i] = {{0, base, 3001 + i * 97}, {0, base + 5003, 4099 + i * 31}, {0, base + 11027, 2500 + i * 13}};
    }
    byte_range& last = l.ranges.back().back();
    last.offset = k_file_bytes - last.bytes;
    return l;
}

uint64_t packed_bytes(const streamer_layout& l, uint32_t i) {
    return expert_reader::packed_bytes(l.ranges[i]);
}

std::vector<uint8_t> expected_bytes(const test::temp_file& f, const streamer_layout& l, expert_key k) {
    std::vector<uint8_t> out;
    for (const byte_range& r : l.ranges[k.layer * l.n_experts + k.expert])
        out.insert(out.end(), f.bytes.begin() + long(r.offset), f.bytes.begin() + long(r.offset + r.bytes));
    return out;
}

// Sits between the cache and the streamer and records the order in which loads complete.
class recording_loader final : public expert_loader, private load_sink {
public:
    explicit recording_loader(expert_loader& inner) : _inner(inner) {}
    void load(const load_request& req, load_ticket ticket) override {
        uint64_t tok;
        {
            std::lock_guard<std::mutex> lock(_mu);
            tok = _next++;
            _pending[tok] = {ticket, req.key};
        }
        try {
            _inner.load(req, load_ticket{this, tok});
        } catch (...) {
            std::lock_guard<std::mutex> lock(_mu);
            _pending.erase(tok);
            throw;
        }
    }
    std::vector<expert_key> order() {
        std::lock_guard<std::mutex> lock(_mu);
        return _order;
    }

private:
    void load_done(uint64_t token, bool ok, std::string_view error) override {
        std::pair<load_ticket, expert_key> p;
        {
            std::lock_guard<std::mutex> lock(_mu);
            p = _pending.at(token);
            _pending.erase(token);
            if (ok) _order.push_back(p.second);
        }
        p.first.sink->load_done(p.first.token, ok, error);
    }
    void load_cancelled(uint64_t token, std::string_view why) override {
        std::pair<load_ticket, expert_key> p;
        {
            std::lock_guard<std::mutex> lock(_mu);
            p = _pending.at(token);
            _pending.erase(token);
        }
        p.first.cancel(why);
    }
    expert_loader& _inner;
    std::mutex _mu;
    uint64_t _next = 0;
    std::map<uint64_t, std::pair<load_ticket, expert_key>> _pending;
    std::vector<expert_key> _order;
};

using test::gated_source;  // tests/prefetch/gated_source.h

struct rig_options {
    uint32_t n_slots = k_layers * k_experts;
    reader_kind kind = reader_kind::PREAD;
    fault_plan faults;         // applied through faulty_source
    uint32_t queue_depth = 8;  // reader threads / SQEs
    streamer_config cfg;
};

// temp file -> reader -> streamer -> recorder -> expert cache (LRU over a RAM tier).
struct rig {
    streamer_layout layout = make_layout();
    test::temp_file file{"/tmp", k_file_bytes, 7};
    std::unique_ptr<faulty_source> source;
    std::unique_ptr<gated_source> gate;  // between the streamer and the source; open unless a test closes it
    memory_tier tier;
    std::unique_ptr<streamer> stream;
    std::unique_ptr<recording_loader> recorder;
    std::unique_ptr<expert_cache> cache;

    explicit rig(const rig_options& o)
        : tier(memory_tier_config{tier_kind::RAM, o.n_slots * ((max_expert() + 4095) / 4096 * 4096), max_expert()}) {
        reader_config rc;
        rc.queue_depth = o.queue_depth;
        source = std::make_unique<faulty_source>(file.path, o.kind, o.faults, rc);
        gate = std::make_unique<gated_source>(*source);
        stream = std::make_unique<streamer>(o.cfg, layout, std::vector<file_source*>{gate.get()}, tier);
        recorder = std::make_unique<recording_loader>(*stream);
        expert_cache_config cc;
        cc.n_layers = k_layers;
        cc.n_experts = k_experts;
        const streamer* s = stream.get();
        cc.expert_bytes = [s](expert_key k) { return s->expert_bytes(k); };
        cache = std::make_unique<expert_cache>(
            cc, tier, *recorder, make_policy("lru", policy_params{k_layers, k_experts, tier.n_slots(), nullptr}));
    }
    ~rig() {
        gate->open();
        cache.reset();  // waits for its loads, which the streamer finishes
        recorder.reset();
        stream.reset();
    }
    uint64_t max_expert() const {
        uint64_t m = 0;
        for (uint32_t i = 0; i < layout.ranges.size(); i++) m = std::max(m, packed_bytes(layout, i));
        return m;
    }
    // Acquire, wait, compare with the file, drop.
    void use(expert_key k, uint64_t t = 0) {
        auto h = cache->acquire(k, access_info{t, 0, 0.f});
        h.wait();
        ASSERT_TRUE(h.ready());
        auto want = expected_bytes(file, layout, k);
        ASSERT_EQ(h.bytes(), want.size());
        ASSERT_EQ(std::memcmp(h.data(), want.data(), want.size()), 0) << "layer " << k.layer << " expert " << k.expert;
    }
};

template <typename F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const moe::error& e) {
        return e.what();
    }
    return "(no error)";
}

// Waits (bounded) until `pred` holds; tests assert on the result.
template <typename P>
bool eventually(P pred, int ms = 10000) {
    for (int i = 0; i < ms; i++) {
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return pred();
}

// ---- bytes land exactly, on every path ---------------------------------------------------------------------

struct path_case {
    reader_kind kind;
    bool staged;
};

class streamer_paths : public ::testing::TestWithParam<path_case> {};

TEST_P(streamer_paths, every_expert_equals_its_file_bytes) {
    rig_options o;
    o.kind = GetParam().kind;
    o.cfg.force_staging = GetParam().staged;
    rig r(o);
    EXPECT_EQ(r.stream->staged(), GetParam().staged);
    EXPECT_FALSE(r.stream->on_device());
    uint64_t total = 0;
    for (uint32_t l = 0; l < k_layers; l++)
        for (uint32_t e = 0; e < k_experts; e++) {
            r.use({l, e});
            total += packed_bytes(r.layout, l * k_experts + e);
        }
    // Second round: all hits, no more reads.
    for (uint32_t l = 0; l < k_layers; l++)
        for (uint32_t e = 0; e < k_experts; e++) r.use({l, e});
    auto s = r.stream->stats();
    EXPECT_EQ(s.n_requests, k_layers * k_experts);
    EXPECT_EQ(s.n_demand, k_layers * k_experts);
    EXPECT_EQ(s.n_loaded, k_layers * k_experts);
    EXPECT_EQ(s.n_failed, 0u);
    EXPECT_EQ(s.bytes_read, total);
    EXPECT_EQ(r.cache->stats().total().hits, k_layers * k_experts);
    if (GetParam().staged) {
        EXPECT_GT(s.copy_ns, 0u);
    }
}

INSTANTIATE_TEST_SUITE_P(readers, streamer_paths,
                         ::testing::Values(path_case{reader_kind::PREAD, false}, path_case{reader_kind::PREAD, true},
                                           path_case{reader_kind::AUTO, false}, path_case{reader_kind::AUTO, true}),
                         [](const ::testing::TestParamInfo<path_case>& p) {
                             return std::string(p.param.kind == reader_kind::PREAD ? "pread" : "auto") +
                                    (p.param.staged ? "_staged" : "_direct");
                         });

// Ranges of more than one reader chunk (the reader splits them and spreads them over its queue): still packed
// exactly, straight into the slot and through staging, with io_uring (O_DIRECT where the file system allows it).
TEST(streamer, ranges_larger_than_a_reader_chunk) {
    const uint64_t part = (1 << 20) + 777;  // > 4 chunks of 256 KiB, unaligned
    const uint32_t n = 4;
    test::temp_file f("/tmp", n * 3 * (part + 64) + 100, 9);
    streamer_layout l{1, n, {}};
    for (uint32_t i = 0; i < n; i++) {
        const uint64_t base = 50 + uint64_t(i) * 3 * (part + 64);
        l.ranges.push_back({{0, base, part}, {0, base + part + 64, part - 3}, {0, base + 2 * (part + 64), part + 9}});
    }
    reader_config rc;
    rc.chunk_bytes = 256 << 10;
    rc.queue_depth = 8;
    auto src = open_file_source(f.path, reader_kind::AUTO, rc);
    for (bool staged : {false, true}) {
        memory_tier tier(
            memory_tier_config{tier_kind::RAM, 2 * ((3 * part + 4096 + 4095) / 4096 * 4096), 3 * part + 4096});
        streamer_config sc;
        sc.max_in_flight = 2;
        sc.force_staging = staged;
        streamer s(sc, l, {src.get()}, tier);
        expert_cache_config cc{1, n, [&](expert_key k) { return s.expert_bytes(k); }};
        expert_cache cache(cc, tier, s, make_policy("lru", policy_params{1, n, tier.n_slots(), nullptr}));
        for (uint32_t round = 0; round < 2; round++)
            for (uint32_t e = 0; e < n; e++) {
                auto h = cache.acquire({0, e});
                h.wait();
                auto want = expected_bytes(f, l, {0, e});
                ASSERT_EQ(h.bytes(), want.size());
                ASSERT_EQ(std::memcmp(h.data(), want.data(), want.size()), 0) << "expert " << e << " staged " << staged;
            }
        EXPECT_EQ(s.stats().n_loaded, 2u * n);  // 2 slots for 4 experts: every use is a miss
    }
}

TEST(streamer, evictions_under_a_small_capacity_keep_bytes_exact) {
    for (bool staged : {false, true}) {
        rig_options o;
        o.n_slots = 3;
        o.cfg.force_staging = staged;
        o.cfg.max_in_flight = 2;
        rig r(o);
        std::mt19937 rng(42);
        for (uint64_t t = 0; t < 200; t++) {
            expert_key k{uint32_t(rng() % k_layers), uint32_t(rng() % k_experts)};
            if (t % 3 == 0) r.cache->prefetch({uint32_t(rng() % k_layers), uint32_t(rng() % k_experts)});
            r.use(k, t);
        }
        EXPECT_GT(r.cache->stats().total().evictions, 50u);
        EXPECT_LE(r.tier.bytes_high_water(), r.tier.budget_bytes());
        EXPECT_EQ(r.stream->stats().n_failed, 0u);
    }
}

// Several threads hammer a small cache: every byte still matches (and TSan builds check the locking).
TEST(streamer, concurrent_users_read_exact_bytes) {
    rig_options o;
    o.n_slots = 5;
    o.kind = reader_kind::AUTO;
    o.cfg.max_in_flight = 3;
    rig r(o);
    std::atomic<int> bad{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < 3; t++)
        ts.emplace_back([&, t] {
            std::mt19937 rng(t + 1);
            for (int i = 0; i < 150; i++) {
                expert_key k{uint32_t(rng() % k_layers), uint32_t(rng() % k_experts)};
                if (i % 4 == 0) r.cache->prefetch({uint32_t(rng() % k_layers), uint32_t(rng() % k_experts)});
                expert_handle h;
                // Pins and loads of the other threads may hold every slot for a moment: the cache says so
                // instead of blocking, and a runtime would retry.
                for (;;) {
                    try {
                        h = r.cache->acquire(k);
                        break;
                    } catch (const moe::error&) {
                        std::this_thread::yield();
                    }
                }
                h.wait();
                auto want = expected_bytes(r.file, r.layout, k);
                if (std::memcmp(h.data(), want.data(), want.size()) != 0) bad++;
            }
        });
    for (auto& t : ts) t.join();
    EXPECT_EQ(bad.load(), 0);
    EXPECT_EQ(r.stream->stats().n_failed, 0u);
}

// ---- priorities --------------------------------------------------------------------------------------------

// One request at the reader; tests close the gate so it stays there while they queue the rest.
rig_options single() {
    rig_options o;
    o.cfg.max_in_flight = 1;
    return o;
}

TEST(streamer, demand_overtakes_queued_prefetches) {
    rig_options o = single();
    o.faults.delay_us = 2000;  // slow reads too, so the check of the queued prefetches below has time to look
    rig r(o);
    r.gate->close();
    const std::vector<expert_key> pf{{0, 0}, {0, 1}, {0, 2}, {0, 3}, {1, 0}};
    for (auto k : pf) ASSERT_TRUE(r.cache->prefetch(k));
    EXPECT_EQ(r.stream->n_in_flight(), 1u);  // pf[0], held at the gate
    EXPECT_EQ(r.stream->n_queued(), 4u);
    const expert_key demand{1, 3};
    auto h = r.cache->acquire(demand);
    EXPECT_EQ(r.stream->n_queued(), 5u);
    r.gate->open();
    h.wait();
    auto want = expected_bytes(r.file, r.layout, demand);
    EXPECT_EQ(std::memcmp(h.data(), want.data(), want.size()), 0);
    h.reset();
    ASSERT_TRUE(eventually([&] { return r.cache->n_loading() == 0; }));
    // The demand was served right after the prefetch already at the reader, then the prefetches in FIFO order.
    EXPECT_EQ(r.recorder->order(), (std::vector<expert_key>{pf[0], demand, pf[1], pf[2], pf[3], pf[4]}));
    for (auto k : pf) r.use(k);
    EXPECT_GT(r.stream->stats().queue_wait_ns, 0u);
    EXPECT_EQ(r.stream->stats().max_queued, 5u);  // 4 prefetches + the demand
}

TEST(streamer, prefetches_go_by_priority_then_fifo) {
    rig r(single());
    r.gate->close();
    ASSERT_TRUE(r.cache->prefetch({0, 0}));  // goes to the reader at once (and waits at the gate)
    EXPECT_EQ(r.stream->n_in_flight(), 1u);
    r.stream->set_priority({0, 1}, 50);  // remembered for the next prefetch of (0, 1)
    r.stream->set_priority({0, 2}, 10);
    r.stream->set_priority({1, 0}, 10);  // equal to (0, 2): FIFO between them
    for (expert_key k : {expert_key{0, 1}, expert_key{0, 2}, expert_key{0, 3}, expert_key{1, 0}, expert_key{1, 1}})
        ASSERT_TRUE(r.cache->prefetch(k));
    r.stream->set_priority({1, 1}, 5);  // applied to a request already queued
    r.gate->open();
    ASSERT_TRUE(eventually([&] { return r.cache->n_loading() == 0; }));
    EXPECT_EQ(r.recorder->order(), (std::vector<expert_key>{{0, 0}, {1, 1}, {0, 2}, {1, 0}, {0, 1}, {0, 3}}));
}

// ---- de-duplication and promotion ---------------------------------------------------------------------------

TEST(streamer, demand_joining_a_prefetch_in_the_cache_is_promoted) {
    rig r(single());
    r.gate->close();
    const std::vector<expert_key> pf{{0, 0}, {0, 1}, {0, 2}, {0, 3}};
    for (auto k : pf) ASSERT_TRUE(r.cache->prefetch(k));
    EXPECT_EQ(r.stream->n_in_flight(), 1u);
    // The cache joins the demand to the queued prefetch without calling its loader: the runtime promotes it.
    auto h = r.cache->acquire({0, 3});
    EXPECT_FALSE(h.ready());
    EXPECT_TRUE(r.stream->promote({0, 3}));
    EXPECT_FALSE(r.stream->promote({0, 3}));  // already a demand
    EXPECT_FALSE(r.stream->promote({1, 2}));  // nothing queued for it
    EXPECT_FALSE(r.stream->promote(pf[0]));   // at the reader already
    r.gate->open();
    h.wait();
    auto want = expected_bytes(r.file, r.layout, {0, 3});
    EXPECT_EQ(std::memcmp(h.data(), want.data(), want.size()), 0);
    h.reset();
    ASSERT_TRUE(eventually([&] { return r.cache->n_loading() == 0; }));
    EXPECT_EQ(r.recorder->order(), (std::vector<expert_key>{{0, 0}, {0, 3}, {0, 1}, {0, 2}}));
    EXPECT_EQ(r.stream->stats().n_promoted, 1u);
}

// Direct use of the loader interface: a prefetch and a demand for the same key and slot arriving by two paths
// share one read, both tickets complete, and the demand promotes the queued prefetch.
struct recording_sink : load_sink {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::tuple<uint64_t, bool, std::string>> done;
    void load_done(uint64_t token, bool ok, std::string_view error) override {
        std::lock_guard<std::mutex> lock(mu);
        done.emplace_back(token, ok, std::string(error));
        cv.notify_all();
    }
    void wait(size_t n) {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return done.size() >= n; });
    }
};

TEST(streamer, same_key_and_slot_joins_one_read) {
    rig_options o = single();
    rig r(o);  // only its file, source, gate and tier are used here; the cache stays idle
    streamer s(o.cfg, r.layout, {r.gate.get()}, r.tier);
    r.gate->close();
    recording_sink sink;
    auto slot0 = r.tier.alloc_slot(r.tier.slot_bytes()).value();
    auto slot1 = r.tier.alloc_slot(r.tier.slot_bytes()).value();
    const expert_key a{0, 1}, b{1, 2};
    const uint64_t reads_before = r.source->injector().n_reads();
    s.load(load_request{{0, 0}, r.tier.slot_data(slot0), r.tier.slot_bytes(), slot0, true}, {&sink, 100});
    s.load(load_request{a, r.tier.slot_data(slot1), r.tier.slot_bytes(), slot1, true}, {&sink, 1});   // queued
    s.load(load_request{a, r.tier.slot_data(slot1), r.tier.slot_bytes(), slot1, false}, {&sink, 2});  // joins
    EXPECT_EQ(s.n_queued(), 1u);
    EXPECT_EQ(r.gate->n_held(), 3u);  // the first expert's 3 ranges
    r.gate->open();
    sink.wait(3);
    EXPECT_EQ(r.source->injector().n_reads() - reads_before, 6u);  // 2 experts x 3 ranges, not 3 experts
    for (auto& [tok, ok, err] : sink.done) EXPECT_TRUE(ok) << tok << ": " << err;
    auto want = expected_bytes(r.file, r.layout, a);
    EXPECT_EQ(std::memcmp(r.tier.slot_data(slot1), want.data(), want.size()), 0);
    auto st = s.stats();
    EXPECT_EQ(st.n_requests, 3u);
    EXPECT_EQ(st.n_joined, 1u);
    EXPECT_EQ(st.n_promoted, 1u);
    EXPECT_EQ(st.n_loaded, 2u);
    // A key outside the layout, or an expert larger than the request's room, is refused before the ticket.
    EXPECT_NE(error_of([&] {
                  s.load(load_request{b, r.tier.slot_data(slot0), 10, slot0, false}, {&sink, 3});
              }).find("has room for 10"),
              std::string::npos);
    EXPECT_NE(error_of([&] {
                  s.load(load_request{{2, 0}, r.tier.slot_data(slot0), 10, slot0, false}, {&sink, 3});
              }).find("outside the layout"),
              std::string::npos);
    r.tier.free_slot(slot0);
    r.tier.free_slot(slot1);
}

// Records are a fixed pool: when every one is taken, a load fails at once with a message saying so (a single
// cache over the tier never gets there with the default pool: tier slots + max_in_flight).
TEST(streamer, exhausted_record_pool_fails_the_ticket_with_a_reason) {
    rig r(single());
    streamer_config cfg;
    cfg.max_in_flight = 1;
    cfg.max_requests = 2;
    streamer s(cfg, r.layout, {r.gate.get()}, r.tier);
    recording_sink sink;
    r.gate->close();
    uint32_t slots[3];
    for (uint32_t i = 0; i < 3; i++) {
        slots[i] = r.tier.alloc_slot(r.tier.slot_bytes()).value();
        s.load(load_request{{0, i}, r.tier.slot_data(slots[i]), r.tier.slot_bytes(), slots[i], i != 0}, {&sink, i});
    }
    sink.wait(1);  // the third failed at once
    {
        std::lock_guard<std::mutex> lock(sink.mu);
        ASSERT_EQ(sink.done.size(), 1u);
        EXPECT_EQ(std::get<0>(sink.done[0]), 2u);
        EXPECT_FALSE(std::get<1>(sink.done[0]));
        EXPECT_NE(std::get<2>(sink.done[0]).find("all 2 request records are in use"), std::string::npos);
    }
    r.gate->open();
    sink.wait(3);
    for (uint32_t i = 0; i < 2; i++) {
        auto want = expected_bytes(r.file, r.layout, {0, i});
        EXPECT_EQ(std::memcmp(r.tier.slot_data(slots[i]), want.data(), want.size()), 0) << i;
    }
    EXPECT_EQ(s.stats().n_failed, 1u);
    EXPECT_EQ(s.stats().n_loaded, 2u);
    for (uint32_t sl : slots) r.tier.free_slot(sl);
}

// ---- cancellation ----------------------------------------------------------------------------------------

TEST(streamer, cancelled_prefetches_free_their_slots) {
    rig r(single());
    r.gate->close();
    const std::vector<expert_key> pf{{0, 0}, {0, 1}, {0, 2}, {0, 3}, {1, 0}};
    for (auto k : pf) ASSERT_TRUE(r.cache->prefetch(k));
    EXPECT_EQ(r.stream->n_in_flight(), 1u);
    auto demand = r.cache->acquire({1, 1});  // queued demand: never cancelled
    EXPECT_EQ(r.tier.slots_in_use(), 6u);
    EXPECT_FALSE(r.stream->cancel({1, 1}));
    EXPECT_FALSE(r.stream->cancel(pf[0]));  // at the reader: left alone
    EXPECT_TRUE(r.stream->cancel(pf[4]));
    EXPECT_FALSE(r.stream->cancel(pf[4]));
    EXPECT_EQ(r.cache->state(pf[4]), residency::ABSENT);
    EXPECT_EQ(r.stream->cancel_prefetches(), 3u);
    for (size_t i = 1; i < pf.size(); i++) EXPECT_EQ(r.cache->state(pf[i]), residency::ABSENT) << i;
    EXPECT_EQ(r.cache->state(pf[0]), residency::LOADING);
    EXPECT_EQ(r.tier.slots_in_use(), 2u);  // the prefetch at the reader and the demand
    r.gate->open();
    demand.wait();
    ASSERT_TRUE(eventually([&] { return r.cache->n_loading() == 0; }));
    EXPECT_EQ(r.cache->state(pf[0]), residency::RESIDENT);
    auto st = r.stream->stats();
    EXPECT_EQ(st.n_cancelled, 4u);
    EXPECT_EQ(st.n_loaded, 2u);
    // A cancellation is a withdrawn prefetch, not a failed load (it once was counted as one).
    EXPECT_EQ(r.cache->stats().total().failed_loads, 0u);
    EXPECT_EQ(r.cache->stats().total().cancelled_loads, 4u);
    EXPECT_EQ(r.cache->stats().total().prefetch_wasted(), 4u);
    demand.reset();
    // A cancelled expert loads normally afterwards.
    for (auto k : pf) r.use(k);
}

// ---- read errors -------------------------------------------------------------------------------------------

TEST(streamer, eio_reaches_wait_with_errno_text_and_offset_then_a_retry_succeeds) {
    rig_options o;
    o.queue_depth = 1;          // one pread thread: reads go in submission order
    o.faults.eio_nth_read = 2;  // the second read: range 1 of the first expert loaded
    o.cfg.max_in_flight = 1;
    rig r(o);
    const expert_key k{1, 2};
    const byte_range bad = r.layout.ranges[k.layer * k_experts + k.expert][1];
    std::string err = error_of([&] { r.use(k); });
    EXPECT_NE(err.find("Input/output error"), std::string::npos) << err;
    EXPECT_NE(err.find("offset " + std::to_string(bad.offset)), std::string::npos) << err;
    EXPECT_NE(err.find("layer 1, expert 2"), std::string::npos) << err;
    EXPECT_NE(err.find(r.file.path), std::string::npos) << err;
    EXPECT_EQ(r.cache->state(k), residency::ABSENT);
    EXPECT_EQ(r.tier.slots_in_use(), 0u);
    EXPECT_EQ(r.stream->stats().n_failed, 1u);
    r.use(k);  // the nth read has passed: the same expert now loads
    EXPECT_EQ(r.cache->state(k), residency::RESIDENT);
}

TEST(streamer, eio_at_an_offset_fails_only_the_experts_covering_it) {
    for (bool staged : {false, true}) {
        rig_options o;
        const streamer_layout l = make_layout();
        const byte_range bad = l.ranges[1 * k_experts + 3].back();  // the range ending at EOF
        o.faults.eio_at_offset = int64_t(bad.offset + bad.bytes - 1);
        o.cfg.force_staging = staged;
        rig r(o);
        for (uint32_t i = 0; i + 1 < k_layers * k_experts; i++) r.use({i / k_experts, i % k_experts});
        for (int attempt = 0; attempt < 2; attempt++) {
            std::string err = error_of([&] { r.use({1, 3}); });
            EXPECT_NE(err.find("Input/output error"), std::string::npos) << err;
            EXPECT_NE(err.find("offset " + std::to_string(bad.offset)), std::string::npos) << err;
            EXPECT_EQ(r.cache->state({1, 3}), residency::ABSENT);
        }
        EXPECT_EQ(r.tier.slots_in_use(), k_layers * k_experts - 1);
        EXPECT_EQ(r.stream->stats().n_failed, 2u);
    }
}

// ---- a real model ------------------------------------------------------------------------------------------

// A split GGUF (two files): the expert layout from runtime/ converted to byte ranges (as the runtime will do),
// every expert streamed through a cache that holds a quarter of them, compared with the files read by ifstream.
TEST(streamer, split_gguf_model_experts_match_the_files) {
    const std::string path =
        std::string(MOE_SOURCE_DIR) + "/tests/fixtures/mixtral-tiny-q8_0-split-00001-of-00002.gguf";
    const model_file mf = open_model_file(path);
    const model_desc md = describe_model(mf);
    const expert_layout& el = md.layout;
    ASSERT_EQ(mf.paths.size(), 2u);
    streamer_layout sl;
    sl.n_layers = uint32_t(el.n_moe_layers);
    sl.n_experts = uint32_t(el.n_experts);
    for (const expert_entry& e : el.experts) {
        std::vector<byte_range> rs;
        for (const expert_range& r : e.ranges) rs.push_back({uint32_t(r.file), r.offset, r.bytes});
        sl.ranges.push_back(std::move(rs));
    }
    std::vector<std::unique_ptr<file_source>> files;
    std::vector<file_source*> raw;
    for (const std::string& p : mf.paths) {
        files.push_back(open_file_source(p, reader_kind::AUTO));
        raw.push_back(files.back().get());
    }
    const uint32_t n_keys = sl.n_layers * sl.n_experts;
    const uint32_t n_slots = std::max<uint32_t>(2, n_keys / 4);
    memory_tier tier(memory_tier_config{tier_kind::RAM, n_slots * ((el.max_expert_bytes + 4095) / 4096 * 4096),
                                        el.max_expert_bytes});
    streamer s(streamer_config{}, sl, raw, tier);
    expert_cache_config cc{sl.n_layers, sl.n_experts, [&](expert_key k) { return s.expert_bytes(k); }};
    expert_cache cache(cc, tier, s, make_policy("lru", policy_params{sl.n_layers, sl.n_experts, n_slots, nullptr}));
    uint64_t bytes = 0;
    for (uint32_t round = 0; round < 2; round++)
        for (uint32_t i = 0; i < n_keys; i++) {
            const expert_key k{i / sl.n_experts, i % sl.n_experts};
            if (i + 1 < n_keys) cache.prefetch({(i + 1) / sl.n_experts, (i + 1) % sl.n_experts});
            auto h = cache.acquire(k);
            h.wait();
            std::vector<char> want;
            for (const byte_range& r : sl.ranges[i]) {
                std::ifstream in(mf.paths[r.file], std::ios::binary);
                in.seekg(std::streamoff(r.offset));
                const size_t at = want.size();
                want.resize(at + r.bytes);
                in.read(want.data() + at, std::streamsize(r.bytes));
                ASSERT_TRUE(in.good()) << mf.paths[r.file];
            }
            ASSERT_EQ(h.bytes(), want.size());
            ASSERT_EQ(std::memcmp(h.data(), want.data(), want.size()), 0)
                << "layer " << k.layer << " expert " << k.expert;
            if (round == 0) bytes += want.size();
        }
    EXPECT_EQ(bytes, el.total_bytes);
    EXPECT_EQ(s.stats().n_failed, 0u);
    EXPECT_GE(s.stats().n_loaded, n_keys);
}

// ---- construction and shutdown -------------------------------------------------------------------------

TEST(streamer, rejects_layouts_that_do_not_fit) {
    test::temp_file f("/tmp", 10000, 3);
    auto src = open_file_source(f.path, reader_kind::PREAD);
    memory_tier tier(memory_tier_config{tier_kind::RAM, 4 * 4096, 4096});
    streamer_layout l;
    l.n_layers = 1;
    l.n_experts = 2;
    l.ranges = {{{0, 0, 100}}, {{0, 9990, 11}}};
    std::string err = error_of([&] { streamer s({}, l, {src.get()}, tier); });
    EXPECT_NE(err.find("past its end"), std::string::npos) << err;
    EXPECT_NE(err.find("expert 1"), std::string::npos) << err;
    l.ranges = {{{0, 0, 100}}, {{1, 0, 10}}};
    err = error_of([&] { streamer s({}, l, {src.get()}, tier); });
    EXPECT_NE(err.find("file index 1"), std::string::npos) << err;
    l.ranges = {{{0, 0, 4000}, {0, 4000, 97}}, {}};
    err = error_of([&] { streamer s({}, l, {src.get()}, tier); });
    EXPECT_NE(err.find("slots hold 4096 bytes"), std::string::npos) << err;
    l.ranges = {{}};
    err = error_of([&] { streamer s({}, l, {src.get()}, tier); });
    EXPECT_NE(err.find("range lists for 1 experts, expected 2"), std::string::npos) << err;
}

TEST(streamer, cache_destroyed_first_waits_for_queued_and_in_flight_loads) {
    rig_options o = single();
    o.faults.delay_us = 1000;
    rig r(o);
    r.gate->close();
    for (uint32_t i = 0; i < k_layers * k_experts; i++) ASSERT_TRUE(r.cache->prefetch({i / k_experts, i % k_experts}));
    EXPECT_EQ(r.stream->n_in_flight(), 1u);
    EXPECT_EQ(r.stream->n_queued(), k_layers * k_experts - 1);
    r.gate->open();
    r.cache.reset();  // waits; the streamer keeps draining its queue meanwhile
    EXPECT_EQ(r.stream->stats().n_loaded, k_layers * k_experts);
    EXPECT_EQ(r.stream->n_queued(), 0u);
    EXPECT_EQ(r.tier.slots_in_use(), 0u);
}

TEST(streamer, streamer_destroyed_with_work_queued_fails_it_cleanly) {
    for (bool staged : {false, true}) {
        rig_options o;
        o.cfg.max_in_flight = 2;
        o.cfg.force_staging = staged;
        rig r(o);
        r.gate->close();
        for (uint32_t i = 0; i < 6; i++) ASSERT_TRUE(r.cache->prefetch({i / k_experts, i % k_experts}));
        auto h = r.cache->acquire({1, 3});  // a demand queued behind two reads
        EXPECT_EQ(r.stream->n_in_flight(), 2u);
        EXPECT_EQ(r.stream->n_queued(), 5u);
        // The destructor fails the queued requests first (the demand's expert goes ABSENT), then waits for the
        // two reads at the gate: open it only then, so nothing queued can have started.
        std::thread opener([&] {
            eventually([&] { return r.cache->state({1, 3}) == residency::ABSENT; });
            r.gate->open();
        });
        r.stream.reset();
        opener.join();
        EXPECT_EQ(r.cache->n_loading(), 0u);
        EXPECT_EQ(r.cache->n_resident(), 2u);  // the two that were at the reader completed
        EXPECT_EQ(r.cache->state({0, 0}), residency::RESIDENT);
        EXPECT_EQ(r.cache->state({0, 1}), residency::RESIDENT);
        std::string err = error_of([&] { h.wait(); });
        EXPECT_NE(err.find("shutting down"), std::string::npos) << err;
        EXPECT_EQ(r.cache->state({1, 3}), residency::ABSENT);
        EXPECT_EQ(r.tier.slots_in_use(), 2u);
    }
}

}  // namespace
}  // namespace moe
