// The C API (runtime/api/moe_runtime.h) through the shared library: status codes for every bad input, exact
// expert bytes under a small budget (checked against the fixture's tensor table, not against the library's own
// layout), hand-made layouts, hit/miss statistics on hand-computed sequences, and traces read back with
// cache/trace.h (the prefetcher behind moe_route: capi_prefetch_test.cpp).
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "cache/trace.h"
#include "common/gpu.h"
#include "runtime/api/moe_runtime.h"
#include "tests/api/capi_test_util.h"
#include "tests/prefetch/io_test_util.h"

namespace {
using moe::test::layer_stats;
using moe::test::total_stats;

const std::string k_fixtures = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/";
const std::string k_mixtral = k_fixtures + "mixtral-tiny-f32.gguf";
const std::string k_split = k_fixtures + "mixtral-tiny-q8_0-split-00001-of-00002.gguf";
constexpr uint64_t k_slot = 24576;  // mixtral-tiny-f32: 3 x (32 x 64) F32 = 24 KiB, a multiple of 4 KiB

using fixture = moe::test::capi_fixture;
using moe::test::tmp_dir;

moe_options options(uint64_t budget, uint32_t prefetch_in_flight = 0) {
    moe_options o;
    EXPECT_EQ(moe_options_init(&o), MOE_OK);
    o.expert_budget_bytes = budget;
    o.prefetch_in_flight = prefetch_in_flight;
    o.reader = MOE_READER_PREAD;
    return o;
}

// Acquire + wait + copy the bytes out + release.
std::vector<uint8_t> fetch(moe_context* c, int layer, int expert) {
    moe_handle* h = nullptr;
    EXPECT_EQ(moe_acquire(c, layer, expert, &h), MOE_OK) << moe_last_error();
    if (!h) return {};
    EXPECT_EQ(moe_wait(h), MOE_OK) << moe_last_error();
    const void* p = nullptr;
    uint64_t n = 0;
    EXPECT_EQ(moe_handle_data(h, &p, &n), MOE_OK) << moe_last_error();
    std::vector<uint8_t> out(static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
    EXPECT_EQ(moe_release(h), MOE_OK);
    return out;
}

// Waits until `layer` has completed `loads` loads (prefetches finish in the background).
bool wait_loaded(const moe_context* c, int layer, uint64_t bytes) {
    for (int i = 0; i < 2000; ++i) {
        if (layer_stats(c, layer).bytes_loaded >= bytes) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
}

std::vector<uint8_t> read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

TEST(capi, status_strings_and_version) {
    for (int s = MOE_OK; s <= MOE_ERR_INTERNAL; ++s) {
        const std::string name = moe_status_string(moe_status(s));
        EXPECT_EQ(name.rfind("MOE_", 0), 0u) << s;
        EXPECT_NE(name, "MOE_ERR_UNKNOWN_STATUS") << s;
    }
    EXPECT_STREQ(moe_status_string(MOE_ERR_BUDGET), "MOE_ERR_BUDGET");
    EXPECT_STREQ(moe_status_string(moe_status(999)), "MOE_ERR_UNKNOWN_STATUS");
    int a = -1, b = -1, c = -1;
    ASSERT_EQ(moe_version(&a, &b, &c), MOE_OK);
    EXPECT_EQ(std::to_string(a) + "." + std::to_string(b) + "." + std::to_string(c), moe_version_string());
    EXPECT_EQ(moe_version(nullptr, &b, &c), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(moe_last_error()).find("major is NULL"), std::string::npos) << moe_last_error();
}

TEST(capi, model_open_errors) {
    moe_model* m = reinterpret_cast<moe_model*>(0x1);
    EXPECT_EQ(moe_model_open(nullptr, &m), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(m, nullptr);  // outputs are cleared on failure
    EXPECT_EQ(moe_model_open(k_mixtral.c_str(), nullptr), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_model_open("/nonexistent/model.gguf", &m), MOE_ERR_IO);
    EXPECT_NE(std::string(moe_last_error()).find("/nonexistent/model.gguf"), std::string::npos) << moe_last_error();
    EXPECT_EQ(moe_model_open((k_fixtures + "bad/bad-magic.gguf").c_str(), &m), MOE_ERR_FORMAT);
    EXPECT_NE(std::string(moe_last_error()).find("bad-magic.gguf"), std::string::npos) << moe_last_error();
    EXPECT_EQ(moe_model_open((k_fixtures + "bad/truncated.gguf").c_str(), &m), MOE_ERR_FORMAT);
    // A valid file that is not an MoE model.
    EXPECT_EQ(moe_model_open((k_fixtures + "dense-tiny-f16.gguf").c_str(), &m), MOE_ERR_FORMAT);
    EXPECT_EQ(m, nullptr);
    moe_model_close(nullptr);  // fine
}

TEST(capi, model_info_and_parts_match_the_tensor_table) {
    fixture f;
    ASSERT_EQ(moe_model_open(k_mixtral.c_str(), &f.model), MOE_OK) << moe_last_error();
    moe_model_info info{};
    EXPECT_EQ(moe_model_get_info(f.model, &info), MOE_ERR_INVALID_ARGUMENT);  // struct_size 0
    EXPECT_NE(std::string(moe_last_error()).find("struct_size"), std::string::npos);
    EXPECT_EQ(moe_model_get_info(nullptr, &info), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_model_get_info(f.model, nullptr), MOE_ERR_INVALID_ARGUMENT);
    info.struct_size = sizeof(info);
    ASSERT_EQ(moe_model_get_info(f.model, &info), MOE_OK);
    EXPECT_EQ(info.n_layers, 2);
    EXPECT_EQ(info.n_experts, 4);
    EXPECT_EQ(info.top_k, 2);
    EXPECT_EQ(info.n_embd, 64);
    EXPECT_EQ(info.n_ff_exp, 32);
    EXPECT_EQ(info.n_files, 1);
    EXPECT_EQ(info.max_expert_bytes, k_slot);
    EXPECT_EQ(info.total_expert_bytes, 8 * k_slot);
    EXPECT_STREQ(info.arch, "llama");
    EXPECT_STREQ(info.name, "mixtral-tiny");

    // A caller compiled against an older, shorter struct gets only the fields it has.
    struct {
        moe_model_info head;
        uint8_t guard[8];
    } small{};
    std::memset(&small, 0x5A, sizeof(small));
    small.head.struct_size = offsetof(moe_model_info, n_embd);
    ASSERT_EQ(moe_model_get_info(f.model, &small.head), MOE_OK);
    EXPECT_EQ(small.head.n_layers, 2);
    EXPECT_EQ(small.head.top_k, 2);
    EXPECT_EQ(small.head.struct_size, offsetof(moe_model_info, n_embd));
    const uint8_t* tail = reinterpret_cast<const uint8_t*>(&small.head) + offsetof(moe_model_info, n_embd);
    EXPECT_EQ(tail[0], 0x5A);  // n_embd untouched

    // Parts: gate, up, down slices of the stacked tensors, offsets straight from the fixture's tensor table.
    std::ifstream js(k_mixtral + ".expected.json");
    const nlohmann::json j = nlohmann::json::parse(js);
    auto tensor_offset = [&](const std::string& name) -> uint64_t {
        for (const auto& t : j["tensors"])
            if (t["name"] == name) return t["offset"].get<uint64_t>();
        ADD_FAILURE() << name;
        return 0;
    };
    size_t n = 0;
    ASSERT_EQ(moe_model_get_expert_parts(f.model, 1, 3, nullptr, 0, &n), MOE_OK);
    ASSERT_EQ(n, 3u);
    std::vector<moe_expert_part> parts(n);
    for (auto& p : parts) p.struct_size = sizeof(p);
    ASSERT_EQ(moe_model_get_expert_parts(f.model, 1, 3, parts.data(), parts.size(), &n), MOE_OK);
    const char* names[3] = {"blk.1.ffn_gate_exps.weight", "blk.1.ffn_up_exps.weight", "blk.1.ffn_down_exps.weight"};
    const int kinds[3] = {MOE_PART_GATE, MOE_PART_UP, MOE_PART_DOWN};
    for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(parts[size_t(i)].kind, kinds[i]);
        EXPECT_STREQ(parts[size_t(i)].type, "F32");
        EXPECT_EQ(parts[size_t(i)].bytes, 8192u);
        EXPECT_EQ(parts[size_t(i)].slot_offset, uint64_t(i) * 8192);
        EXPECT_EQ(parts[size_t(i)].file_offset, tensor_offset(names[i]) + 3 * 8192);
    }
    uint64_t bytes = 0;
    EXPECT_EQ(moe_model_get_expert_bytes(f.model, 1, 3, &bytes), MOE_OK);
    EXPECT_EQ(bytes, k_slot);
    EXPECT_EQ(moe_model_get_expert_bytes(f.model, 2, 0, &bytes), MOE_ERR_OUT_OF_RANGE);
    EXPECT_NE(std::string(moe_last_error()).find("layer 2 is outside [0, 2)"), std::string::npos) << moe_last_error();
    EXPECT_EQ(moe_model_get_expert_bytes(f.model, 0, 4, &bytes), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_model_get_expert_bytes(f.model, 0, -1, &bytes), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_model_get_expert_parts(f.model, 0, 0, nullptr, 1, &n), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_model_get_expert_parts(f.model, 0, 0, parts.data(), 3, nullptr), MOE_ERR_INVALID_ARGUMENT);
}

TEST(capi, context_option_errors) {
    fixture f;
    ASSERT_EQ(moe_model_open(k_mixtral.c_str(), &f.model), MOE_OK) << moe_last_error();
    moe_options o = options(0);
    moe_context* c = reinterpret_cast<moe_context*>(0x1);
    EXPECT_EQ(moe_context_create(nullptr, &o, &c), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(c, nullptr);
    EXPECT_EQ(moe_context_create(f.model, nullptr, &c), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_context_create(f.model, &o, nullptr), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_options_init(nullptr), MOE_ERR_INVALID_ARGUMENT);

    moe_options bad = o;
    bad.struct_size = 0;
    EXPECT_EQ(moe_context_create(f.model, &bad, &c), MOE_ERR_INVALID_ARGUMENT);
    bad = o;
    bad.policy = "fifo";
    EXPECT_EQ(moe_context_create(f.model, &bad, &c), MOE_ERR_UNKNOWN_NAME);
    EXPECT_NE(std::string(moe_last_error()).find("unknown eviction policy 'fifo'"), std::string::npos);
    bad.policy = "belady";
    EXPECT_EQ(moe_context_create(f.model, &bad, &c), MOE_ERR_UNSUPPORTED);
    bad = o;
    bad.host_budget_bytes = 1;  // a host tier must hold as many slots as the expert tier above it
    EXPECT_EQ(moe_context_create(f.model, &bad, &c), MOE_ERR_BUDGET);
    EXPECT_NE(std::string(moe_last_error()).find("host budget"), std::string::npos) << moe_last_error();
    bad = o;
    bad.tier = 7;
    EXPECT_EQ(moe_context_create(f.model, &bad, &c), MOE_ERR_INVALID_ARGUMENT);
    bad = o;
    bad.reader = -1;
    EXPECT_EQ(moe_context_create(f.model, &bad, &c), MOE_ERR_INVALID_ARGUMENT);
    bad = o;
    bad.queue_depth = 0;
    EXPECT_EQ(moe_context_create(f.model, &bad, &c), MOE_ERR_INVALID_ARGUMENT);
    if (moe::gpu_count() == 0) {
        bad = o;
        bad.tier = MOE_TIER_DEVICE;
        EXPECT_EQ(moe_context_create(f.model, &bad, &c), MOE_ERR_UNSUPPORTED);
        EXPECT_NE(std::string(moe_last_error()).find("device memory need a usable CUDA device"), std::string::npos)
            << moe_last_error();
    }

    // Budget: one layer pins top_k = 2 experts of one 24 KiB slot each.
    bad = options(2 * k_slot - 1);
    EXPECT_EQ(moe_context_create(f.model, &bad, &c), MOE_ERR_BUDGET);
    EXPECT_NE(std::string(moe_last_error()).find("at least 49152 bytes"), std::string::npos) << moe_last_error();
    bad = options(1);
    EXPECT_EQ(moe_context_create(f.model, &bad, &c), MOE_ERR_BUDGET);
    EXPECT_EQ(c, nullptr);

    bad = options(2 * k_slot);
    ASSERT_EQ(moe_context_create(f.model, &bad, &c), MOE_OK) << moe_last_error();
    moe_context_info ci{};
    ci.struct_size = sizeof(ci);
    ASSERT_EQ(moe_context_get_info(c, &ci), MOE_OK);
    EXPECT_EQ(ci.n_slots, 2u);
    EXPECT_EQ(ci.slot_bytes, k_slot);
    EXPECT_STREQ(ci.policy, "lru");
    EXPECT_STREQ(ci.reader, "pread");
    moe_context_destroy(c);

    // An older moe_options (ending before `policy`): the rest keeps its defaults.
    moe_options old = options(4 * k_slot);
    old.struct_size = offsetof(moe_options, policy);
    old.policy = "fifo";  // beyond struct_size: must be ignored
    ASSERT_EQ(moe_context_create(f.model, &old, &c), MOE_OK) << moe_last_error();
    ASSERT_EQ(moe_context_get_info(c, &ci), MOE_OK);
    EXPECT_STREQ(ci.policy, "lru");
    EXPECT_EQ(ci.n_slots, 4u);
    moe_context_destroy(c);
    moe_context_destroy(nullptr);
}

TEST(capi, expert_call_errors) {
    fixture f;
    ASSERT_EQ(moe_model_open(k_mixtral.c_str(), &f.model), MOE_OK);
    moe_options o = options(2 * k_slot);
    ASSERT_EQ(moe_context_create(f.model, &o, &f.ctx), MOE_OK) << moe_last_error();
    moe_handle* h = nullptr;
    EXPECT_EQ(moe_acquire(nullptr, 0, 0, &h), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_acquire(f.ctx, 0, 0, nullptr), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_acquire(f.ctx, -1, 0, &h), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_acquire(f.ctx, 2, 0, &h), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_acquire(f.ctx, 0, 4, &h), MOE_ERR_OUT_OF_RANGE);
    EXPECT_NE(std::string(moe_last_error()).find("expert 4 is outside [0, 4)"), std::string::npos);
    EXPECT_EQ(h, nullptr);
    EXPECT_EQ(moe_prefetch(f.ctx, 0, -3, nullptr), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_prefetch(nullptr, 0, 0, nullptr), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_wait(nullptr), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_handle_ready(nullptr, nullptr), MOE_ERR_INVALID_ARGUMENT);
    const void* p = nullptr;
    EXPECT_EQ(moe_handle_data(nullptr, &p, nullptr), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_release(nullptr), MOE_OK);

    int32_t ids[3] = {0, 1, 2};
    EXPECT_EQ(moe_route(nullptr, 0, 2, ids, nullptr), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_route(f.ctx, 0, 2, nullptr, nullptr), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_route(f.ctx, 2, 2, ids, nullptr), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_route(f.ctx, 0, 0, ids, nullptr), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_route(f.ctx, 0, 3, ids, nullptr), MOE_ERR_INVALID_ARGUMENT);  // > top_k
    int32_t dup[2] = {1, 1};
    EXPECT_EQ(moe_route(f.ctx, 0, 2, dup, nullptr), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(moe_last_error()).find("duplicate"), std::string::npos);
    int32_t far[2] = {1, 9};
    EXPECT_EQ(moe_route(f.ctx, 0, 2, far, nullptr), MOE_ERR_OUT_OF_RANGE);
    moe_stats s{};
    EXPECT_EQ(moe_get_stats(f.ctx, &s), MOE_ERR_INVALID_ARGUMENT);  // struct_size 0
    s.struct_size = sizeof(s);
    EXPECT_EQ(moe_get_stats(nullptr, &s), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_get_layer_stats(f.ctx, 2, &s), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_get_layer_stats(f.ctx, -1, &s), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_trace_write(f.ctx, nullptr), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_trace_write(f.ctx, "/nonexistent/dir/x.trace"), MOE_ERR_IO);
    EXPECT_EQ(moe_set_position(nullptr, 0, 0), MOE_ERR_INVALID_ARGUMENT);

    // Every slot pinned: the third acquire cannot get one (and says why), then works once a pin is dropped.
    moe_handle *a = nullptr, *b = nullptr, *c = nullptr;
    ASSERT_EQ(moe_acquire(f.ctx, 0, 0, &a), MOE_OK);
    ASSERT_EQ(moe_acquire(f.ctx, 0, 1, &b), MOE_OK);
    EXPECT_EQ(moe_acquire(f.ctx, 1, 2, &c), MOE_ERR_BUSY);
    EXPECT_NE(std::string(moe_last_error()).find("pinned"), std::string::npos) << moe_last_error();
    EXPECT_EQ(moe_handle_stream_wait(a, nullptr), MOE_ERR_UNSUPPORTED);  // a host tier has no copy event
    EXPECT_EQ(moe_wait(a), MOE_OK);
    EXPECT_EQ(moe_release(a), MOE_OK);
    ASSERT_EQ(moe_acquire(f.ctx, 1, 2, &c), MOE_OK) << moe_last_error();
    EXPECT_EQ(moe_wait(b), MOE_OK);
    EXPECT_EQ(moe_wait(c), MOE_OK);
    int ready = 0;
    EXPECT_EQ(moe_handle_ready(c, &ready), MOE_OK);
    EXPECT_EQ(ready, 1);
    EXPECT_EQ(moe_release(b), MOE_OK);
    // c is still held: destroying the context releases it (no leak, no abort).
}

TEST(capi, last_error_is_per_thread) {
    EXPECT_EQ(moe_model_open("/nonexistent/a.gguf", nullptr), MOE_ERR_INVALID_ARGUMENT);
    const std::string here = moe_last_error();
    std::string there;
    std::thread t([&] {
        moe_model* m = nullptr;
        EXPECT_EQ(moe_model_open("/nonexistent/b.gguf", &m), MOE_ERR_IO);
        there = moe_last_error();
    });
    t.join();
    EXPECT_NE(there.find("b.gguf"), std::string::npos);
    EXPECT_EQ(std::string(moe_last_error()), here);
}

// Every expert's bytes, acquired under a budget of top_k slots (so nearly every acquire evicts), equal the
// file's bytes at the offsets of the fixture's tensor table.
TEST(capi, every_expert_exact_bytes_under_small_budget) {
    const std::vector<uint8_t> file = read_file(k_mixtral);
    std::ifstream js(k_mixtral + ".expected.json");
    const nlohmann::json j = nlohmann::json::parse(js);
    auto offset_of = [&](const std::string& name) -> uint64_t {
        for (const auto& t : j["tensors"])
            if (t["name"] == name) return t["offset"].get<uint64_t>();
        ADD_FAILURE() << name;
        return 0;
    };
    for (const char* policy : {"lru", "lfu", "lru-layer", "lfu-recent"}) {
        fixture f;
        ASSERT_EQ(moe_model_open(k_mixtral.c_str(), &f.model), MOE_OK);
        // The fewest slots each policy runs with: one layer's top-2; lru-layer: top-2 in each of the 2 layers' shares.
        const uint64_t n_slots = std::string(policy) == "lru-layer" ? 4 : 2;
        moe_options o = options(n_slots * k_slot);
        o.policy = policy;
        o.reader = MOE_READER_AUTO;
        ASSERT_EQ(moe_context_create(f.model, &o, &f.ctx), MOE_OK) << moe_last_error();
        uint64_t fetched = 0;
        for (int pass = 0; pass < 2; ++pass)
            for (int i = 0; i < 8; ++i) {
                const int l = pass == 0 ? i / 4 : 1 - i / 4, e = pass == 0 ? i % 4 : 3 - i % 4;
                const std::vector<uint8_t> got = fetch(f.ctx, l, e);
                std::vector<uint8_t> want;
                for (const char* part : {"gate", "up", "down"}) {
                    const uint64_t off =
                        offset_of("blk." + std::to_string(l) + ".ffn_" + part + "_exps.weight") + uint64_t(e) * 8192;
                    want.insert(want.end(), file.begin() + long(off), file.begin() + long(off + 8192));
                }
                ASSERT_EQ(got.size(), want.size()) << policy << " " << l << "," << e;
                EXPECT_TRUE(got == want) << policy << ": expert " << e << " of layer " << l;
                ++fetched;
            }
        const moe_stats s = total_stats(f.ctx);
        EXPECT_EQ(s.hits + s.misses, fetched) << policy;
        EXPECT_GE(s.misses, 8u) << policy;  // every expert loaded at least once
        EXPECT_EQ(s.bytes_loaded, s.loads * k_slot) << policy;
        EXPECT_GE(s.evictions, 8u - n_slots) << policy;  // 8 distinct experts through n_slots slots
        moe_context_info ci{};
        ci.struct_size = sizeof(ci);
        ASSERT_EQ(moe_context_get_info(f.ctx, &ci), MOE_OK);
        EXPECT_LE(ci.high_water_bytes, n_slots * k_slot);  // the budget is hard
    }
}

// A split model (two files): each expert equals the bytes of its parts, read from the file they name.
TEST(capi, split_model_exact_bytes) {
    fixture f;
    ASSERT_EQ(moe_model_open(k_split.c_str(), &f.model), MOE_OK) << moe_last_error();
    moe_model_info info{};
    info.struct_size = sizeof(info);
    ASSERT_EQ(moe_model_get_info(f.model, &info), MOE_OK);
    ASSERT_EQ(info.n_files, 2);
    const std::vector<uint8_t> files[2] = {read_file(k_split),
                                           read_file(k_fixtures + "mixtral-tiny-q8_0-split-00002-of-00002.gguf")};
    moe_options o = options((info.max_expert_bytes + 4095) / 4096 * 4096 * 3);
    ASSERT_EQ(moe_context_create(f.model, &o, &f.ctx), MOE_OK) << moe_last_error();
    bool used[2] = {false, false};
    for (int l = 0; l < info.n_layers; ++l)
        for (int e = 0; e < info.n_experts; ++e) {
            moe_expert_part parts[8];
            for (auto& p : parts) p.struct_size = sizeof(p);
            size_t n = 0;
            ASSERT_EQ(moe_model_get_expert_parts(f.model, l, e, parts, 8, &n), MOE_OK);
            std::vector<uint8_t> want;
            for (size_t i = 0; i < n; ++i) {
                ASSERT_EQ(parts[i].slot_offset, want.size());
                const auto& src = files[parts[i].file];
                used[parts[i].file] = true;
                want.insert(want.end(), src.begin() + long(parts[i].file_offset),
                            src.begin() + long(parts[i].file_offset + parts[i].bytes));
            }
            EXPECT_TRUE(fetch(f.ctx, l, e) == want) << l << "," << e;
        }
    EXPECT_TRUE(used[0] && used[1]);
}

// A layout described by hand over a plain file: non-contiguous ranges are packed in the given order.
TEST(capi, hand_layout) {
    moe::test::temp_file tf(tmp_dir(), 1 << 16, 7);
    fixture f;
    moe_layout* bad = nullptr;
    EXPECT_EQ(moe_layout_create(0, 4, 1, &bad), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_layout_create(2, 4, 5, &bad), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_layout_create(2, 4, 2, nullptr), MOE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ(moe_layout_create(2, 3, 2, &f.layout), MOE_OK);
    int32_t fi = -1;
    EXPECT_EQ(moe_layout_add_file(f.layout, "/nonexistent/weights.bin", &fi), MOE_ERR_IO);
    EXPECT_EQ(moe_layout_add_file(f.layout, nullptr, &fi), MOE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ(moe_layout_add_file(f.layout, tf.path.c_str(), &fi), MOE_OK);
    EXPECT_EQ(fi, 0);
    moe_range past[1] = {{(1 << 16) - 10, 11}};
    EXPECT_EQ(moe_layout_set_expert(f.layout, 0, 0, 0, 1, past), MOE_ERR_OUT_OF_RANGE);
    EXPECT_NE(std::string(moe_last_error()).find("reaches past the end"), std::string::npos);
    moe_range ok1[1] = {{0, 16}};
    EXPECT_EQ(moe_layout_set_expert(f.layout, 0, 0, 1, 1, ok1), MOE_ERR_OUT_OF_RANGE);  // no file 1
    EXPECT_EQ(moe_layout_set_expert(f.layout, 0, 3, 0, 1, ok1), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_layout_set_expert(f.layout, 0, 0, 0, 0, ok1), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(moe_layout_set_expert(f.layout, 0, 0, 0, 1, nullptr), MOE_ERR_INVALID_ARGUMENT);

    // Expert (l, e): two ranges, the second BEFORE the first in the file, of different sizes.
    auto ranges_of = [](int l, int e) {
        const uint64_t base = uint64_t(l * 3 + e) * 8000 + 100;
        return std::vector<moe_range>{{base + 3000, 1000 + uint64_t(e) * 7}, {base, 2500}};
    };
    moe_options o = options(0);
    moe_context* c = nullptr;
    for (int l = 0; l < 2; ++l)
        for (int e = 0; e < 3; ++e) {
            if (l == 1 && e == 2) {  // not yet described: a context cannot be made
                EXPECT_EQ(moe_context_create_from_layout(f.layout, &o, &c), MOE_ERR_INVALID_ARGUMENT);
                EXPECT_NE(std::string(moe_last_error()).find("expert 2 of layer 1 has no byte ranges"),
                          std::string::npos)
                    << moe_last_error();
            }
            const auto r = ranges_of(l, e);
            ASSERT_EQ(moe_layout_set_expert(f.layout, l, e, fi, r.size(), r.data()), MOE_OK) << moe_last_error();
        }
    o = options(2 * 4096);  // 2 slots of 4 KiB
    ASSERT_EQ(moe_context_create_from_layout(f.layout, &o, &f.ctx), MOE_OK) << moe_last_error();
    moe_layout_destroy(f.layout);  // the context keeps its own copy
    f.layout = nullptr;
    for (int rep = 0; rep < 2; ++rep)
        for (int l = 0; l < 2; ++l)
            for (int e = 0; e < 3; ++e) {
                std::vector<uint8_t> want;
                for (const moe_range& r : ranges_of(l, e))
                    want.insert(want.end(), tf.bytes.begin() + long(r.offset),
                                tf.bytes.begin() + long(r.offset + r.bytes));
                EXPECT_TRUE(fetch(f.ctx, l, e) == want) << l << "," << e;
            }
}

// A load that fails (the file shrank under the context) is reported by moe_wait as MOE_ERR_IO with the reader's
// message; the handle must still be released, and nothing is left pinned.
TEST(capi, failed_load_reports_io_error) {
    moe::test::temp_file tf(tmp_dir(), 1 << 16, 3);
    fixture f;
    ASSERT_EQ(moe_layout_create(1, 2, 1, &f.layout), MOE_OK);
    int32_t fi = 0;
    ASSERT_EQ(moe_layout_add_file(f.layout, tf.path.c_str(), &fi), MOE_OK);
    moe_range r0[1] = {{0, 4096}}, r1[1] = {{40000, 4096}};
    ASSERT_EQ(moe_layout_set_expert(f.layout, 0, 0, fi, 1, r0), MOE_OK);
    ASSERT_EQ(moe_layout_set_expert(f.layout, 0, 1, fi, 1, r1), MOE_OK);
    moe_options o = options(0);
    ASSERT_EQ(moe_context_create_from_layout(f.layout, &o, &f.ctx), MOE_OK) << moe_last_error();
    ASSERT_EQ(::truncate(tf.path.c_str(), 8192), 0);
    moe_handle* h = nullptr;
    ASSERT_EQ(moe_acquire(f.ctx, 0, 1, &h), MOE_OK);
    EXPECT_EQ(moe_wait(h), MOE_ERR_IO);
    EXPECT_NE(std::string(moe_last_error()).find(tf.path), std::string::npos) << moe_last_error();
    const void* p = nullptr;
    EXPECT_EQ(moe_handle_data(h, &p, nullptr), MOE_ERR_IO);
    EXPECT_EQ(moe_wait(h), MOE_ERR_IO);
    EXPECT_EQ(moe_release(h), MOE_OK);
    EXPECT_EQ(moe_release(h), MOE_ERR_INVALID_ARGUMENT);  // twice: refused, not a crash
    EXPECT_NE(std::string(moe_last_error()).find("already released"), std::string::npos);
    EXPECT_EQ(layer_stats(f.ctx, 0).failed_loads, 1u);
    EXPECT_EQ(fetch(f.ctx, 0, 0).size(), 4096u);  // the part still in the file loads fine
}

// Hand-computed LRU sequence over 2 slots, prefetch off: per-layer and total counters.
TEST(capi, stats_hand_computed) {
    fixture f;
    ASSERT_EQ(moe_model_open(k_mixtral.c_str(), &f.model), MOE_OK);
    moe_options o = options(2 * k_slot);
    ASSERT_EQ(moe_context_create(f.model, &o, &f.ctx), MOE_OK) << moe_last_error();
    // (0,0) miss, (0,0) hit, (1,1) miss, (0,0) hit, (1,2) miss evicting (1,1), (1,1) miss evicting (0,0),
    // (1,2) hit.
    const int seq[][2] = {{0, 0}, {0, 0}, {1, 1}, {0, 0}, {1, 2}, {1, 1}, {1, 2}};
    for (const auto& k : seq) fetch(f.ctx, k[0], k[1]);
    const moe_stats l0 = layer_stats(f.ctx, 0), l1 = layer_stats(f.ctx, 1), t = total_stats(f.ctx);
    EXPECT_EQ(l0.hits, 2u);
    EXPECT_EQ(l0.misses, 1u);
    EXPECT_EQ(l0.evictions, 1u);
    EXPECT_EQ(l0.bytes_loaded, k_slot);
    EXPECT_EQ(l1.hits, 1u);
    EXPECT_EQ(l1.misses, 3u);
    EXPECT_EQ(l1.evictions, 1u);
    EXPECT_EQ(l1.loads, 3u);
    EXPECT_EQ(l1.bytes_loaded, 3 * k_slot);
    EXPECT_EQ(t.hits, 3u);
    EXPECT_EQ(t.misses, 4u);
    EXPECT_EQ(t.prefetch_hits, 0u);
    EXPECT_EQ(t.bytes_loaded, 4 * k_slot);

    // An explicit prefetch: its first use is a prefetch hit.
    int issued = 0;
    ASSERT_EQ(moe_prefetch(f.ctx, 0, 3, &issued), MOE_OK);
    EXPECT_EQ(issued, 1);
    ASSERT_TRUE(wait_loaded(f.ctx, 0, 2 * k_slot));
    ASSERT_EQ(moe_prefetch(f.ctx, 0, 3, &issued), MOE_OK);
    EXPECT_EQ(issued, 0);  // already resident
    fetch(f.ctx, 0, 3);
    EXPECT_EQ(layer_stats(f.ctx, 0).prefetch_hits, 1u);
    EXPECT_EQ(layer_stats(f.ctx, 0).prefetch_loads, 1u);

    ASSERT_EQ(moe_reset_stats(f.ctx), MOE_OK);
    EXPECT_EQ(total_stats(f.ctx).hits, 0u);
    EXPECT_EQ(total_stats(f.ctx).bytes_loaded, 0u);
}

// Routed rows come back from the moe-trace v1 file exactly, with automatic and explicit positions.
TEST(capi, trace_round_trip) {
    fixture f;
    ASSERT_EQ(moe_model_open(k_mixtral.c_str(), &f.model), MOE_OK);
    moe_options o = options(0);
    ASSERT_EQ(moe_context_create(f.model, &o, &f.ctx), MOE_OK);
    const int32_t r0[2] = {3, 1}, r1[2] = {0, 2}, r2[1] = {2};
    const float w0[2] = {0.75f, 0.25f}, w1[2] = {0.5f, 0.5f};
    ASSERT_EQ(moe_route(f.ctx, 0, 2, r0, w0), MOE_OK);  // seq 0 token 0
    ASSERT_EQ(moe_route(f.ctx, 1, 2, r1, w1), MOE_OK);
    ASSERT_EQ(moe_route(f.ctx, 0, 1, r2, nullptr), MOE_OK);  // layer went back: token 1
    ASSERT_EQ(moe_set_position(f.ctx, 4, 9), MOE_OK);
    ASSERT_EQ(moe_route(f.ctx, 0, 2, r1, nullptr), MOE_OK);  // explicit (4, 9)
    ASSERT_EQ(moe_route(f.ctx, 0, 2, r0, w0), MOE_OK);       // still (4, 9): a prefill row of another token...
    ASSERT_EQ(moe_set_position(f.ctx, 4, 10), MOE_OK);
    ASSERT_EQ(moe_route(f.ctx, 1, 2, r0, w0), MOE_OK);
    const std::string path = tmp_dir() + "/capi_test_" + std::to_string(::getpid()) + ".trace";
    ASSERT_EQ(moe_trace_write(f.ctx, path.c_str()), MOE_OK) << moe_last_error();
    const moe::routing_trace t = moe::read_trace(path);
    ::unlink(path.c_str());
    EXPECT_EQ(t.model, "mixtral-tiny");
    EXPECT_EQ(t.n_layers, 2u);
    EXPECT_EQ(t.n_experts, 4u);
    EXPECT_EQ(t.top_k, 2u);
    ASSERT_EQ(t.rows.size(), 6u);
    const uint32_t want[6][3] = {{0, 0, 0}, {0, 0, 1}, {0, 1, 0}, {4, 9, 0}, {4, 9, 0}, {4, 10, 1}};
    for (size_t i = 0; i < 6; ++i) {
        EXPECT_EQ(t.rows[i].seq, want[i][0]) << i;
        EXPECT_EQ(t.rows[i].token, want[i][1]) << i;
        EXPECT_EQ(t.rows[i].layer, want[i][2]) << i;
    }
    EXPECT_EQ(t.rows[0].experts, (std::vector<uint32_t>{3, 1}));
    EXPECT_EQ(t.rows[0].weights, (std::vector<float>{0.75f, 0.25f}));
    EXPECT_EQ(t.rows[2].experts, (std::vector<uint32_t>{2}));
    EXPECT_TRUE(t.rows[2].weights.empty());
    EXPECT_EQ(t.rows[3].experts, (std::vector<uint32_t>{0, 2}));

    // record_trace = 0: nothing is kept, the file has the header only.
    fixture g;
    ASSERT_EQ(moe_model_open(k_mixtral.c_str(), &g.model), MOE_OK);
    o.record_trace = 0;
    ASSERT_EQ(moe_context_create(g.model, &o, &g.ctx), MOE_OK);
    ASSERT_EQ(moe_route(g.ctx, 0, 2, r0, w0), MOE_OK);
    ASSERT_EQ(moe_trace_write(g.ctx, path.c_str()), MOE_OK);
    EXPECT_TRUE(moe::read_trace(path).rows.empty());
    ::unlink(path.c_str());
}

}  // namespace

namespace {

// Four threads, one pin each, over a 4-slot budget: every fetched expert has the right bytes while the others
// evict around it (the handle pool and the route state are shared).
TEST(capi, concurrent_acquire_and_route) {
    fixture f;
    ASSERT_EQ(moe_model_open(k_mixtral.c_str(), &f.model), MOE_OK);
    moe_options o = options(4 * k_slot);
    ASSERT_EQ(moe_context_create(f.model, &o, &f.ctx), MOE_OK) << moe_last_error();
    std::vector<std::vector<uint8_t>> want(8);
    {
        fixture g;  // reference bytes from an unlimited context
        ASSERT_EQ(moe_model_open(k_mixtral.c_str(), &g.model), MOE_OK);
        moe_options all = options(0);
        ASSERT_EQ(moe_context_create(g.model, &all, &g.ctx), MOE_OK);
        for (int i = 0; i < 8; ++i) want[size_t(i)] = fetch(g.ctx, i / 4, i % 4);
    }
    std::vector<int> bad(4, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            for (int it = 0; it < 50; ++it) {
                const int i = (it * 5 + t * 3) % 8;
                const int32_t ids[1] = {i % 4};
                if (moe_route(f.ctx, i / 4, 1, ids, nullptr) != MOE_OK) ++bad[size_t(t)];
                if (fetch(f.ctx, i / 4, i % 4) != want[size_t(i)]) ++bad[size_t(t)];
            }
        });
    for (auto& th : threads) th.join();
    for (int t = 0; t < 4; ++t) EXPECT_EQ(bad[size_t(t)], 0) << "thread " << t;
    const moe_stats s = total_stats(f.ctx);
    EXPECT_EQ(s.hits + s.misses, 200u);
    EXPECT_EQ(s.routed_rows, 200u);
}

}  // namespace
