// The full-runtime C API (moe_engine_*, moe_tokenize, moe_eval, moe_generate, moe_sampler_*) through the shared
// library, against independent references:
//  - runtime/engine.h used directly (linked statically here): logits memcmp-identical, the same sampled tokens
//    from the engine + sampler loop written out in this file;
//  - the `moe run` binary: the same tokens and text as its --stats-json, for a text prompt and sampling;
//  - the token lists tests/runtime/tests_run.cmake pins (checked there against transformers' argmax);
//  - runtime/tokenizer.h for tokenize / detokenize.
// Also status codes for bad input, the host tier's statistics and the C++ wrapper.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/api/moe_runtime.h"
#include "runtime/api/moe_runtime.hpp"
#include "runtime/backend_cuda.h"
#include "runtime/engine.h"
#include "runtime/model_desc.h"
#include "runtime/resident_weights.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer.h"

namespace {

const std::string k_fx = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/";
const std::string k_mx = k_fx + "ref/mixtral-f32.gguf";     // no tokenizer; 12 KiB slots, 2 layers x 4 experts
const std::string k_tiny = k_fx + "mixtral-tiny-f32.gguf";  // llama SPM tokenizer; 24 KiB slots
const std::vector<int32_t> k_prompt = {1, 17, 42, 99, 5, 77, 3, 120};

struct engine_ptr {
    moe_engine* e = nullptr;
    ~engine_ptr() { moe_engine_destroy(e); }
};

moe_engine_options options(uint64_t budget, uint64_t host = 0, const char* policy = "lru") {
    moe_engine_options o;
    EXPECT_EQ(moe_engine_options_init(&o), MOE_OK);
    o.expert_budget_bytes = budget;
    o.host_budget_bytes = host;
    o.policy = policy;
    o.n_ctx = 64;
    o.reader = MOE_READER_PREAD;
    return o;
}

moe_stats stats(const moe_engine* e, int level, int layer = -1) {
    moe_stats s{};
    s.struct_size = sizeof(s);
    EXPECT_EQ(moe_engine_get_stats(e, level, layer, &s), MOE_OK) << moe_last_error();
    return s;
}

std::vector<int32_t> generate(moe_engine* e, const std::vector<int32_t>& prompt, int n,
                              const moe_sampler_params* p = nullptr) {
    std::vector<int32_t> out(size_t(n) + 4, -1);
    size_t got = 0;
    EXPECT_EQ(moe_generate(e, prompt.data(), prompt.size(), n, p, nullptr, nullptr, out.data(), out.size(), &got),
              MOE_OK)
        << moe_last_error();
    out.resize(got);
    return out;
}

// The reference loop, on runtime/engine.h directly (what `moe run` does, without a tokenizer).
std::vector<int32_t> reference_generate(const std::string& path, const std::vector<int32_t>& prompt, int n,
                                        const moe::sampler_config& sc) {
    moe::engine_config c;
    c.n_ctx = 64;
    moe::engine eng(path, c);
    moe::sampler smp(sc);
    for (int32_t t : prompt) smp.accept(t);
    const std::vector<int> ids(prompt.begin(), prompt.end());
    const float* logits = eng.prefill(ids);
    std::vector<int32_t> out;
    while (true) {
        const int next = smp.sample(std::span<const float>(logits, size_t(eng.desc().n_vocab)));
        out.push_back(next);
        smp.accept(next);
        if (int(out.size()) == n) return out;
        logits = eng.decode(next);
    }
}

moe_sampler_params sampled_params() {
    moe_sampler_params p;
    EXPECT_EQ(moe_sampler_params_init(&p), MOE_OK);
    p.temperature = 0.9f;
    p.top_k = 40;
    p.top_p = 0.95f;
    p.min_p = 0.05f;
    p.repeat_penalty = 1.1f;
    p.seed = 7;
    return p;
}

// Runs `moe run ARGS --stats-json F` and returns the parsed stats.
nlohmann::json moe_run(const std::string& args, const std::string& tag) {
    const std::string json_path = std::string(MOE_BINARY_DIR) + "/engine_api_test_" + tag + ".json";
    std::remove(json_path.c_str());
    const std::string cmd =
        std::string(MOE_BINARY_DIR) + "/runtime/moe run " + args + " --stats-json " + json_path + " > /dev/null 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    std::ifstream f(json_path);
    if (!f.good()) return nlohmann::json::object();
    return nlohmann::json::parse(f);
}

TEST(engine_api, create_refusals_are_status_codes) {
    engine_ptr p;
    moe_engine_options o = options(0);
    p.e = reinterpret_cast<moe_engine*>(0x1);
    EXPECT_EQ(moe_engine_create("/nonexistent/m.gguf", &o, &p.e), MOE_ERR_IO);
    EXPECT_EQ(p.e, nullptr);
    EXPECT_NE(std::string(moe_last_error()).find("/nonexistent/m.gguf"), std::string::npos) << moe_last_error();
    EXPECT_EQ(moe_engine_create((k_fx + "bad/bad-magic.gguf").c_str(), &o, &p.e), MOE_ERR_FORMAT);
    EXPECT_EQ(moe_engine_create(k_mx.c_str(), nullptr, &p.e), MOE_ERR_INVALID_ARGUMENT);
    o.policy = "mru";
    EXPECT_EQ(moe_engine_create(k_mx.c_str(), &o, &p.e), MOE_ERR_UNKNOWN_NAME);
    o = options(24576 - 1);  // one byte short of top_k = 2 slots of 12 KiB
    EXPECT_EQ(moe_engine_create(k_mx.c_str(), &o, &p.e), MOE_ERR_BUDGET);
    EXPECT_NE(std::string(moe_last_error()).find("at least 24576 bytes"), std::string::npos) << moe_last_error();
    o = options(36864, 24576);  // host tier of 2 slots under an expert tier of 3
    EXPECT_EQ(moe_engine_create(k_mx.c_str(), &o, &p.e), MOE_ERR_BUDGET);
    EXPECT_NE(std::string(moe_last_error()).find("host"), std::string::npos) << moe_last_error();
    o = options(36864, 0, "lru-layer");  // 3 slots: a share of 1 per layer < top_k
    EXPECT_EQ(moe_engine_create(k_mx.c_str(), &o, &p.e), MOE_ERR_BUDGET);
    EXPECT_EQ(p.e, nullptr);
    // A described architecture without a forward pass here, if the fixtures still have one.
    for (const char* f : {"gpt-oss-tiny-mxfp4.gguf", "deepseek2-tiny-f16.gguf"}) {
        const moe::model_desc d = moe::describe_model(moe::open_model_file(k_fx + f));
        if (moe::forward_supported(d.architecture) && d.rope_scale.type == moe::rope_scaling_type::NONE) continue;
        o = options(0);
        EXPECT_EQ(moe_engine_create((k_fx + f).c_str(), &o, &p.e), MOE_ERR_UNSUPPORTED) << f << moe_last_error();
    }
}

TEST(engine_api, info_matches_the_engine) {
    engine_ptr p;
    moe_engine_options o = options(36864);
    ASSERT_EQ(moe_engine_create(k_tiny.c_str(), &o, &p.e), MOE_ERR_BUDGET);  // 24 KiB slots: 36K holds one
    o = options(3 * 24576);
    ASSERT_EQ(moe_engine_create(k_tiny.c_str(), &o, &p.e), MOE_OK) << moe_last_error();
    moe_engine_info i{};
    i.struct_size = sizeof(i);
    ASSERT_EQ(moe_engine_get_info(p.e, &i), MOE_OK);
    moe::engine_config c;
    c.n_ctx = 64;
    c.expert_budget_bytes = 3 * 24576;
    moe::engine ref(k_tiny, c);
    const moe::tokenizer tok = moe::tokenizer::from_file(k_tiny);
    EXPECT_EQ(i.n_vocab, ref.desc().n_vocab);
    EXPECT_EQ(i.n_ctx, 64);
    EXPECT_EQ(i.n_embd, ref.desc().n_embd);
    EXPECT_EQ(i.n_layers, ref.desc().layout.n_moe_layers);
    EXPECT_EQ(i.n_experts, ref.desc().layout.n_experts);
    EXPECT_EQ(i.top_k, ref.desc().n_experts_used);
    EXPECT_EQ(i.has_tokenizer, 1);
    EXPECT_EQ(i.bos, tok.bos_id());
    EXPECT_EQ(i.eos, tok.eos_id());
    EXPECT_EQ(i.n_slots, 3u);
    EXPECT_EQ(i.slot_bytes, 24576u);
    EXPECT_EQ(i.host_n_slots, 0u);
    EXPECT_EQ(i.resident_bytes, ref.resident_bytes());
    EXPECT_STREQ(i.arch, "llama");
    EXPECT_STREQ(i.policy, "lru");
    EXPECT_STREQ(i.backend, "cpu");  // the default backend
}

// The compute backend: CPU by default, CUDA on request (refused clearly where there is no GPU), AUTO falls back.
TEST(engine_api, backend_choice) {
    engine_ptr p;
    moe_engine_options o = options(0);
    o.backend = 7;
    EXPECT_EQ(moe_engine_create(k_mx.c_str(), &o, &p.e), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(moe_last_error()).find("backend 7"), std::string::npos) << moe_last_error();
    o.backend = MOE_BACKEND_AUTO;
    ASSERT_EQ(moe_engine_create(k_mx.c_str(), &o, &p.e), MOE_OK) << moe_last_error();
    moe_engine_info i{};
    i.struct_size = sizeof(i);
    ASSERT_EQ(moe_engine_get_info(p.e, &i), MOE_OK);
    EXPECT_STREQ(i.backend, moe::cuda_backend_available() ? "cuda" : "cpu");
    moe_engine_destroy(p.e);
    p.e = nullptr;
    o.backend = MOE_BACKEND_CUDA;
    if (!moe::cuda_backend_available()) {
        EXPECT_EQ(moe_engine_create(k_mx.c_str(), &o, &p.e), MOE_ERR_UNSUPPORTED);
        EXPECT_NE(std::string(moe_last_error()).find("no usable GPU"), std::string::npos) << moe_last_error();
    } else {
        ASSERT_EQ(moe_engine_create(k_mx.c_str(), &o, &p.e), MOE_OK) << moe_last_error();
        ASSERT_EQ(moe_engine_get_info(p.e, &i), MOE_OK);
        EXPECT_STREQ(i.backend, "cuda");
    }
}

TEST(engine_api, logits_are_bit_identical_to_the_engine) {
    moe::engine_config c;
    c.n_ctx = 64;
    moe::engine ref(k_mx, c);
    const size_t V = size_t(ref.desc().n_vocab), n = k_prompt.size();
    std::vector<float> want(n * V);
    ref.logits(std::vector<int>(k_prompt.begin(), k_prompt.end()), want);

    // Smallest budget, host tier, batches of 3: nothing of that may change a bit.
    engine_ptr p;
    moe_engine_options o = options(24576, 49152);
    o.n_batch = 3;
    ASSERT_EQ(moe_engine_create(k_mx.c_str(), &o, &p.e), MOE_OK) << moe_last_error();
    std::vector<float> all(n * V, -1.0f);
    ASSERT_EQ(moe_eval(p.e, k_prompt.data(), n, 1, all.data()), MOE_OK) << moe_last_error();
    EXPECT_EQ(0, std::memcmp(all.data(), want.data(), all.size() * sizeof(float)));
    int32_t n_past = 0;
    ASSERT_EQ(moe_engine_n_past(p.e, &n_past), MOE_OK);
    EXPECT_EQ(n_past, int32_t(n));
    const float* last = nullptr;
    ASSERT_EQ(moe_get_logits(p.e, &last), MOE_OK);
    EXPECT_EQ(0, std::memcmp(last, want.data() + (n - 1) * V, V * sizeof(float)));

    // Split in two evaluations (last-position logits only), then token by token with moe_decode.
    ASSERT_EQ(moe_engine_reset(p.e), MOE_OK);
    EXPECT_EQ(moe_get_logits(p.e, &last), MOE_ERR_NOT_READY);
    std::vector<float> one(V);
    ASSERT_EQ(moe_eval(p.e, k_prompt.data(), 5, 0, one.data()), MOE_OK);
    EXPECT_EQ(0, std::memcmp(one.data(), want.data() + 4 * V, V * sizeof(float)));
    ASSERT_EQ(moe_eval(p.e, k_prompt.data() + 5, n - 5, 0, one.data()), MOE_OK);
    EXPECT_EQ(0, std::memcmp(one.data(), want.data() + (n - 1) * V, V * sizeof(float)));
    ASSERT_EQ(moe_engine_reset(p.e), MOE_OK);
    for (size_t t = 0; t < n; ++t) {
        ASSERT_EQ(moe_decode(p.e, k_prompt[t], &last), MOE_OK) << moe_last_error();
        EXPECT_EQ(0, std::memcmp(last, want.data() + t * V, V * sizeof(float))) << "position " << t;
    }

    // Refusals leave the sequence as it was.
    const int32_t bad[2] = {1, 500};
    EXPECT_EQ(moe_eval(p.e, bad, 2, 0, nullptr), MOE_ERR_OUT_OF_RANGE);
    EXPECT_NE(std::string(moe_last_error()).find("500"), std::string::npos) << moe_last_error();
    std::vector<int32_t> too_many(64 - n + 1, 1);
    EXPECT_EQ(moe_eval(p.e, too_many.data(), too_many.size(), 0, nullptr), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_eval(p.e, bad, 0, 0, nullptr), MOE_ERR_INVALID_ARGUMENT);
    ASSERT_EQ(moe_engine_n_past(p.e, &n_past), MOE_OK);
    EXPECT_EQ(n_past, int32_t(n));
}

TEST(engine_api, greedy_and_sampled_generation_match_the_engine_loop_and_the_pinned_tokens) {
    // The lists tests/runtime/tests_run.cmake pins for `moe run` on this model and prompt.
    const std::vector<int32_t> greedy = {11, 37, 52, 18, 77, 67, 11, 18};
    const std::vector<int32_t> sampled = {66, 107, 11, 8, 84, 100, 123, 116, 24, 9, 71, 12};
    moe::sampler_config sc;
    sc.temperature = 0.9f;
    sc.top_k = 40;
    sc.top_p = 0.95f;
    sc.min_p = 0.05f;
    sc.repeat_penalty = 1.1f;
    sc.seed = 7;
    EXPECT_EQ(reference_generate(k_mx, k_prompt, 8, moe::sampler_config{}), greedy);
    EXPECT_EQ(reference_generate(k_mx, k_prompt, 12, sc), sampled);

    const moe_sampler_params sp = sampled_params();
    struct cfg {
        uint64_t budget, host;
        const char* policy;
        int prefetch;
    };
    for (const cfg& c : {cfg{0, 0, "lru", 0}, cfg{24576, 0, "lfu-recent", 0}, cfg{24576, 49152, "lru", 0},
                         cfg{36864, 98304, "lfu", 1}, cfg{49152, 0, "lru-layer", 0}}) {
        SCOPED_TRACE(testing::Message() << "budget " << c.budget << " host " << c.host << " " << c.policy);
        engine_ptr p;
        moe_engine_options o = options(c.budget, c.host, c.policy);
        o.prefetch = c.prefetch;
        ASSERT_EQ(moe_engine_create(k_mx.c_str(), &o, &p.e), MOE_OK) << moe_last_error();
        EXPECT_EQ(generate(p.e, k_prompt, 8), greedy);
        EXPECT_EQ(generate(p.e, k_prompt, 12, &sp), sampled);
        EXPECT_EQ(generate(p.e, k_prompt, 8), greedy);  // a second sequence on a warm cache
    }
}

TEST(engine_api, text_generation_matches_moe_run) {
    const nlohmann::json run =
        moe_run("-m " + k_tiny + " -p 'Hello world' -n 16 --vram-budget 328K", "text");  // 2 slots
    ASSERT_TRUE(run.contains("tokens")) << run.dump();
    engine_ptr p;
    moe_engine_options o = options(48 << 10, 192 << 10);  // host: room for all 8 experts
    ASSERT_EQ(moe_engine_create(k_tiny.c_str(), &o, &p.e), MOE_OK) << moe_last_error();

    size_t n = 0;
    const char* text = "Hello world";
    ASSERT_EQ(moe_tokenize(p.e, text, std::strlen(text), 1, 0, nullptr, 0, &n), MOE_OK);
    std::vector<int32_t> prompt(n);
    ASSERT_EQ(moe_tokenize(p.e, text, std::strlen(text), 1, 0, prompt.data(), prompt.size(), &n), MOE_OK);
    const moe::tokenizer tok = moe::tokenizer::from_file(k_tiny);
    EXPECT_EQ(prompt, tok.encode(text, true, false));

    struct seen {
        std::vector<int32_t> ids;
        std::string text;
    } s;
    auto cb = [](int32_t t, const char* piece, size_t bytes, void* user) -> int {
        auto* sn = static_cast<seen*>(user);
        sn->ids.push_back(t);
        sn->text.append(piece, bytes);
        return 0;
    };
    std::vector<int32_t> out(32);
    size_t got = 0;
    ASSERT_EQ(moe_generate(p.e, prompt.data(), prompt.size(), 16, nullptr, cb, &s, out.data(), out.size(), &got),
              MOE_OK)
        << moe_last_error();
    out.resize(got);
    EXPECT_EQ(out, run["tokens"].get<std::vector<int32_t>>());
    EXPECT_EQ(s.ids, out);
    EXPECT_EQ(s.text, run["text"].get<std::string>());

    // Detokenize: the text moe run printed (pieces without the leading-space rule) vs the tokenizer's decode.
    ASSERT_EQ(moe_detokenize(p.e, out.data(), out.size(), 0, nullptr, 0, &n), MOE_OK);
    std::string dt(n + 1, 'x');
    ASSERT_EQ(moe_detokenize(p.e, out.data(), out.size(), 0, dt.data(), dt.size(), &n), MOE_OK);
    EXPECT_EQ(dt[n], '\0');  // NUL-terminated when there is room
    dt.resize(n);
    EXPECT_EQ(dt, tok.decode(std::vector<int32_t>(out.begin(), out.end()), false));
    char piece[64];
    ASSERT_EQ(moe_token_to_piece(p.e, out[0], 0, piece, sizeof(piece), &n), MOE_OK);
    EXPECT_EQ(std::string(piece, n), tok.token_to_piece(out[0], false));
    int eog = -1;
    ASSERT_EQ(moe_token_is_eog(p.e, tok.eos_id(), &eog), MOE_OK);
    EXPECT_EQ(eog, 1);
    ASSERT_EQ(moe_token_is_eog(p.e, out[0], &eog), MOE_OK);
    EXPECT_EQ(eog, 0);
    EXPECT_EQ(moe_token_is_eog(p.e, 100000, &eog), MOE_ERR_OUT_OF_RANGE);

    // The engine's cache figures equal what moe run reports for the same run (same budget, same accesses).
    const moe_stats st = stats(p.e, MOE_LEVEL_EXPERT);
    EXPECT_EQ(st.bytes_loaded, run["bytes_loaded"].get<uint64_t>());
    // Host tier: every expert-tier load is one host access; the host holds all 8 experts, so it misses each once.
    const moe_stats hs = stats(p.e, MOE_LEVEL_HOST);
    EXPECT_EQ(hs.hits + hs.misses, st.loads);
    EXPECT_EQ(hs.loads, hs.misses);  // each host miss read the file once ...
    EXPECT_LE(hs.loads, 8u);         // ... and never again: nothing was evicted from RAM
    EXPECT_EQ(hs.evictions, 0u);
    EXPECT_GT(hs.hits, 0u);  // experts the 2-slot expert tier evicted came back from RAM
}

TEST(engine_api, sampled_generation_matches_moe_run) {
    const nlohmann::json run =
        moe_run("-m " + k_mx +
                    " --prompt-ids 1,17,42,99,5,77,3,120 -n 12 --temp 0.9 --top-k 40 --top-p 0.95 --min-p 0.05 "
                    "--repeat-penalty 1.1 --seed 7 --vram-budget 291K",  // the whole budget: 2 slots
                "sampled");
    ASSERT_TRUE(run.contains("tokens")) << run.dump();
    engine_ptr p;
    moe_engine_options o = options(24576);
    ASSERT_EQ(moe_engine_create(k_mx.c_str(), &o, &p.e), MOE_OK) << moe_last_error();
    const moe_sampler_params sp = sampled_params();
    EXPECT_EQ(generate(p.e, k_prompt, 12, &sp), run["tokens"].get<std::vector<int32_t>>());

    // The same with the standalone sampler over moe_eval/moe_decode (the loop an application writes itself).
    moe_sampler* s = nullptr;
    ASSERT_EQ(moe_sampler_create(&sp, &s), MOE_OK);
    for (int32_t t : k_prompt) ASSERT_EQ(moe_sampler_accept(s, t), MOE_OK);
    ASSERT_EQ(moe_engine_reset(p.e), MOE_OK);
    std::vector<float> logits(128);
    ASSERT_EQ(moe_eval(p.e, k_prompt.data(), k_prompt.size(), 0, logits.data()), MOE_OK);
    std::vector<int32_t> own;
    const float* l = logits.data();
    for (int i = 0; i < 12; ++i) {
        int32_t t = -1;
        ASSERT_EQ(moe_sampler_sample(s, l, 128, &t), MOE_OK);
        own.push_back(t);
        ASSERT_EQ(moe_sampler_accept(s, t), MOE_OK);
        ASSERT_EQ(moe_decode(p.e, t, &l), MOE_OK);
    }
    moe_sampler_destroy(s);
    EXPECT_EQ(own, run["tokens"].get<std::vector<int32_t>>());
}

TEST(engine_api, generation_stops_at_the_callback_the_context_and_refuses_bad_input) {
    engine_ptr p;
    moe_engine_options o = options(0);
    o.n_ctx = 12;
    ASSERT_EQ(moe_engine_create(k_mx.c_str(), &o, &p.e), MOE_OK) << moe_last_error();
    int calls = 0;
    auto stop_at_3 = [](int32_t, const char* piece, size_t bytes, void* user) -> int {
        EXPECT_EQ(bytes, 0u);  // no tokenizer: no text
        EXPECT_NE(piece, nullptr);
        return ++*static_cast<int*>(user) == 3;
    };
    std::vector<int32_t> out(16, -1);
    size_t n = 0;
    ASSERT_EQ(moe_generate(p.e, k_prompt.data(), k_prompt.size(), 8, nullptr, stop_at_3, &calls, out.data(), 16, &n),
              MOE_OK);
    EXPECT_EQ(n, 3u);
    EXPECT_EQ(std::vector<int32_t>(out.begin(), out.begin() + 3), (std::vector<int32_t>{11, 37, 52}));
    // n_ctx 12 with a prompt of 8: 4 tokens, then the context is full.
    ASSERT_EQ(moe_generate(p.e, k_prompt.data(), k_prompt.size(), 8, nullptr, nullptr, nullptr, out.data(), 2, &n),
              MOE_OK);
    EXPECT_EQ(n, 4u);  // the count is the full count; only `capacity` ids were written
    EXPECT_EQ(out[2], 52);
    moe_sampler_params sp;
    ASSERT_EQ(moe_sampler_params_init(&sp), MOE_OK);
    sp.top_p = 0.0f;
    EXPECT_EQ(moe_generate(p.e, k_prompt.data(), k_prompt.size(), 8, &sp, nullptr, nullptr, nullptr, 0, &n),
              MOE_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(moe_last_error()).find("top_p"), std::string::npos) << moe_last_error();
    EXPECT_EQ(moe_generate(p.e, k_prompt.data(), 0, 8, nullptr, nullptr, nullptr, nullptr, 0, &n),
              MOE_ERR_INVALID_ARGUMENT);
    const std::vector<int32_t> long_prompt(12, 1);
    EXPECT_EQ(moe_generate(p.e, long_prompt.data(), 12, 8, nullptr, nullptr, nullptr, nullptr, 0, &n),
              MOE_ERR_OUT_OF_RANGE);
    // No tokenizer: the text functions say so.
    size_t nt = 0;
    EXPECT_EQ(moe_tokenize(p.e, "hi", 2, 1, 0, nullptr, 0, &nt), MOE_ERR_UNSUPPORTED);
    EXPECT_NE(std::string(moe_last_error()).find("no tokenizer"), std::string::npos) << moe_last_error();
    // Statistics: no host tier; a layer outside the model.
    moe_stats s{};
    s.struct_size = sizeof(s);
    EXPECT_EQ(moe_engine_get_stats(p.e, MOE_LEVEL_HOST, -1, &s), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_engine_get_stats(p.e, MOE_LEVEL_EXPERT, 2, &s), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_engine_get_stats(p.e, 7, -1, &s), MOE_ERR_INVALID_ARGUMENT);
    const moe_stats l0 = stats(p.e, MOE_LEVEL_EXPERT, 0), l1 = stats(p.e, MOE_LEVEL_EXPERT, 1);
    const moe_stats tot = stats(p.e, MOE_LEVEL_EXPERT);
    EXPECT_EQ(l0.hits + l1.hits, tot.hits);
    EXPECT_EQ(l0.misses + l1.misses, tot.misses);
    EXPECT_EQ(tot.evictions, 0u);  // unlimited budget: every expert loaded at most once, ever
    EXPECT_EQ(tot.loads, tot.misses);
    EXPECT_LE(tot.loads, 8u);
}

// Sessions: more sequences on one engine's weights and expert cache. Each gives the engine's own bits (logits and
// generated tokens) while the sessions interleave over a cache at the smallest budget; statistics count the
// shared cache; bad input is a status.
TEST(engine_api, sessions_share_the_engine_and_match_its_own_sequence) {
    engine_ptr e;
    moe_engine_options o = options(2 * 12288);  // the smallest budget: one layer's top-2
    ASSERT_EQ(moe_engine_create(k_mx.c_str(), &o, &e.e), MOE_OK) << moe_last_error();
    moe_engine_info info{};
    info.struct_size = sizeof(info);
    ASSERT_EQ(moe_engine_get_info(e.e, &info), MOE_OK);
    const size_t V = size_t(info.n_vocab), T = k_prompt.size();
    std::vector<float> want(T * V);
    ASSERT_EQ(moe_eval(e.e, k_prompt.data(), T, 1, want.data()), MOE_OK) << moe_last_error();
    const std::vector<int32_t> want_tokens = generate(e.e, k_prompt, 6);

    moe_session *a = nullptr, *b = nullptr;
    ASSERT_EQ(moe_session_create(e.e, 0, &a), MOE_OK) << moe_last_error();
    ASSERT_EQ(moe_session_create(e.e, 32, &b), MOE_OK) << moe_last_error();
    const std::vector<int32_t> other = {5, 4, 3, 2, 1, 0, 6, 11};
    std::vector<float> got(T * V), last(V);
    for (size_t t = 0; t < T; ++t) {  // token t of a, then of b: every step may evict the other's experts
        ASSERT_EQ(moe_session_eval(a, &k_prompt[t], 1, 1, got.data() + t * V), MOE_OK) << moe_last_error();
        ASSERT_EQ(moe_session_eval(b, &other[t], 1, 0, last.data()), MOE_OK) << moe_last_error();
    }
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), want.size() * 4)) << "session a differs from the engine";
    int32_t n_past = 0;
    ASSERT_EQ(moe_session_n_past(a, &n_past), MOE_OK);
    EXPECT_EQ(n_past, int32_t(T));
    ASSERT_EQ(moe_session_reset(a), MOE_OK);
    ASSERT_EQ(moe_session_n_past(a, &n_past), MOE_OK);
    EXPECT_EQ(n_past, 0);

    std::vector<int32_t> toks(10, -1);
    size_t n_gen = 0;
    ASSERT_EQ(
        moe_session_generate(b, k_prompt.data(), T, 6, nullptr, nullptr, nullptr, toks.data(), toks.size(), &n_gen),
        MOE_OK)
        << moe_last_error();
    toks.resize(n_gen);
    EXPECT_EQ(toks, want_tokens) << "a session generates what the engine generates";
    EXPECT_GT(stats(e.e, MOE_LEVEL_EXPERT).evictions, 0u);

    // Bad input: a status and a message, the session unchanged.
    const int32_t bad = int32_t(V);
    EXPECT_EQ(moe_session_eval(a, &bad, 1, 0, nullptr), MOE_ERR_OUT_OF_RANGE);
    EXPECT_EQ(moe_session_eval(nullptr, &bad, 1, 0, nullptr), MOE_ERR_INVALID_ARGUMENT);
    moe_session* c = nullptr;
    EXPECT_EQ(moe_session_create(e.e, -1, &c), MOE_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(c, nullptr);
    std::vector<int32_t> long_prompt(40, 1);
    EXPECT_EQ(moe_session_eval(b, long_prompt.data(), long_prompt.size(), 0, nullptr), MOE_ERR_OUT_OF_RANGE)
        << "b holds 32 positions";
    moe_session_destroy(a);
    moe_session_destroy(b);
    moe_session_destroy(nullptr);
}

TEST(engine_api, cpp_wrapper) {
    moe_engine_options o = moe_rt::default_engine_options();
    o.expert_budget_bytes = 48 << 10;
    o.n_ctx = 64;
    moe_rt::engine e(k_tiny, o);
    const std::vector<int32_t> prompt = e.tokenize("Hello world");
    EXPECT_EQ(prompt.size(), 11u);
    std::string text;
    const std::vector<int32_t> out = e.generate(prompt, 4, moe_rt::greedy(), [&](int32_t, std::string_view piece) {
        text += piece;
        return false;
    });
    EXPECT_EQ(out, (std::vector<int32_t>{94, 106, 80, 38}));  // tests_run.cmake's text.tiny tokens
    EXPECT_EQ(e.detokenize(out), moe::tokenizer::from_file(k_tiny).decode(out, false));
    EXPECT_THROW(e.generate(prompt, 4, moe_rt::greedy(), [](int32_t, std::string_view) -> bool { throw 42; }), int);
    e.reset();
    const std::vector<float> all = e.eval(prompt, true);
    EXPECT_EQ(all.size(), prompt.size() * size_t(e.info().n_vocab));
    try {
        e.stats(MOE_LEVEL_HOST);
        FAIL() << "no exception";
    } catch (const moe_rt::error& err) {
        EXPECT_EQ(err.status(), MOE_ERR_OUT_OF_RANGE);
    }
}

}  // namespace
