// The forward pass against Hugging Face transformers (tests/fixtures/ref, made by scripts/make_reference_logits.py):
// tiny random Mixtral, Qwen3-MoE, OLMoE and Qwen2-MoE models, loaded from GGUF (F32, llama.cpp converter conventions)
// and from the safetensors checkpoint, must give transformers' logits at every position within 1e-4 relative error,
// where the error of a position is max_i |ours_i - ref_i| / max_i |ref_i|. And the invariant: logits are bit-identical
// (memcmp) whatever the expert budget (smallest workable, middle, unlimited), the eviction policy and prefetch.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"
#include "runtime/engine.h"
#include "tests/runtime/ref_models.h"

// GCC pairs the replaced operator new below with free() inside it and warns about a mismatch that is not one.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

// Counts heap allocations made by the calling thread while `g_counting` is set (invariant 5: nothing is allocated
// in the token loop; docs/invariants.md). Replacing the global operator new is allowed in a program; this binary
// is that program.
// g_all_threads counts every thread's allocations (the streamer's and readers' threads too) while it is set.
namespace {
thread_local bool g_counting = false;
thread_local uint64_t g_allocs = 0;
std::atomic<bool> g_all_threads{false};
std::atomic<uint64_t> g_all_allocs{0};
}  // namespace
void* operator new(std::size_t n) {
    if (g_counting) ++g_allocs;
    if (g_all_threads.load(std::memory_order_relaxed)) g_all_allocs.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    std::free(p);
}

namespace moe {
namespace {

using test::k_ref_dir;
using test::load_refs;
using test::max_rel_error;
using test::run_all;

TEST(forward, refuses_architectures_it_cannot_run_yet) {
    std::ifstream jf(k_ref_dir + "ref.json");
    nlohmann::json j = nlohmann::json::parse(jf);
    int n_refused = 0;
    for (const auto& m : j["models"]) {
        std::vector<std::string> files = {m["gguf"].get<std::string>()};
        for (const char* k : {"hf", "gguf_legacy", "gguf_mxfp4"})
            if (m.contains(k) && m[k].is_string()) files.push_back(m[k].get<std::string>());
        for (const std::string& f : files) {
            const model_desc d = describe_model(open_model_file(k_ref_dir + f));
            if (forward_supported(d.architecture) && d.rope_scale.type == rope_scaling_type::NONE) continue;
            ++n_refused;
            try {
                engine e(k_ref_dir + f, engine_config{});
                ADD_FAILURE() << f << ": expected a refusal";
            } catch (const error& e) {
                EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
            }
        }
    }
    EXPECT_EQ(n_refused, 6);  // deepseek2 (GGUF MLA, GGUF legacy, safetensors), gpt-oss (GGUF F32, MXFP4, safetensors)
}

TEST(forward, matches_transformers_from_gguf_and_safetensors) {
    auto refs = load_refs();
    ASSERT_EQ(refs.size(), 4u);  // mixtral, qwen3moe, olmoe, qwen2moe
    for (const auto& m : refs) {
        for (const std::string& path : {m.gguf, m.hf}) {
            if (path.empty()) continue;
            engine e(path, engine_config{});
            ASSERT_EQ(e.desc().n_vocab, m.n_vocab);
            auto got = run_all(e, m);
            for (size_t p = 0; p < m.prompts.size(); ++p) {
                const double err = max_rel_error(got[p], m.logits[p], m.n_vocab);
                std::printf("[ ref      ] %-9s %-5s prompt %zu: max rel error %.3g\n", m.name.c_str(),
                            path == m.gguf ? "gguf" : "hf", p, err);
                EXPECT_LT(err, 1e-4) << m.name << " " << path << " prompt " << p;
            }
        }
    }
}

// Quantized weights: a Q8_0 GGUF of the same Mixtral (matrices whose rows are whole 32-blocks are Q8_0; router
// and norms F32). Resident weights are dequantized at load, experts inside the backend's matvec. Its reference
// is transformers run on exactly the weights the file holds (dequantize(quantize(w)) by gguf-py), so the same
// 1e-4 bound applies; and it must differ from the float model, or the quantized path was not exercised.
TEST(forward, q8_0_model_matches_transformers_on_its_weights) {
    auto refs = load_refs();
    int n_checked = 0;
    for (const auto& m : refs) {
        if (m.gguf_q8_0.empty()) continue;
        engine e(m.gguf_q8_0, engine_config{});
        int n_q8 = 0;
        for (const auto& t : e.file().tensors) n_q8 += t.type == tensor_type::Q8_0;
        EXPECT_GE(n_q8, 2 + 4 * e.desc().n_layers) << "embeddings, output, attention and gate/up experts";
        auto got = run_all(e, m);
        for (size_t p = 0; p < m.prompts.size(); ++p) {
            const double err = max_rel_error(got[p], m.q8_0_logits[p], m.n_vocab);
            const double vs_float = max_rel_error(got[p], m.logits[p], m.n_vocab);
            std::printf("[ ref      ] %-9s q8_0  prompt %zu: max rel error %.3g (vs the float model: %.3g)\n",
                        m.name.c_str(), p, err, vs_float);
            EXPECT_LT(err, 1e-4) << m.name << " prompt " << p;
            EXPECT_GT(vs_float, 1e-3) << "Q8_0 logits match the float model: the quantized path was not taken?";
            ++n_checked;
        }
    }
    EXPECT_GT(n_checked, 0);
}

TEST(forward, logits_bit_identical_across_budgets_policies_and_prefetch) {
    auto refs = load_refs();
    for (const auto& m : refs) {
        std::vector<std::string> paths{m.gguf};
        if (!m.hf.empty()) paths.push_back(m.hf);
        if (!m.gguf_q8_0.empty()) paths.push_back(m.gguf_q8_0);
        for (const std::string& path : paths) {
            engine base(path, engine_config{});
            const auto want = run_all(base, m);
            const model_desc& d = base.desc();
            const uint64_t slot = engine::slot_bytes_for(d);
            const uint64_t n_all = uint64_t(d.layout.n_moe_layers) * uint64_t(d.n_experts);
            struct variant {
                uint64_t budget;
                const char* policy;
                bool prefetch;  // speculative prefetch (decode only: n_batch 1)
                int n_batch;
            };
            const variant vs[] = {
                {engine::min_budget_for(d), "lru", false, 1},
                {engine::min_budget_for(d), "lfu", false, 32},
                {engine::min_budget_for(d) + slot - 1, "lfu-recent", true, 1},  // a partial slot is not a slot
                {slot * (n_all / 2), "lru", true, 1},
                // lru-layer only takes victims from the incoming expert's layer: its per-layer quota must exceed
                // top_k, else a full layer whose residents are all pinned has no victim (reported to its owner).
                {slot * (n_all - 1), "lru-layer", false, 3},
                {slot * (n_all / 2) + 1, "lfu", true, 1},
                {0, "lfu", true, 1},
                {slot * (n_all / 2), "lru", false, 4},  // + 3 threads below
            };
            for (const variant& v : vs) {
                engine_config cfg;
                cfg.expert_budget_bytes = v.budget;
                cfg.policy = v.policy;
                cfg.prefetch.mode = v.prefetch ? prefetch_mode::SPEC : prefetch_mode::NONE;
                cfg.n_batch = v.n_batch;
                if (&v == &vs[std::size(vs) - 1]) cfg.n_threads = 3, cfg.min_parallel_work = 1;
                engine e(path, cfg);
                std::vector<std::vector<float>> got;
                try {
                    got = run_all(e, m);
                } catch (const error& ex) {
                    ADD_FAILURE() << m.name << " budget " << v.budget << " policy " << v.policy << " n_batch "
                                  << v.n_batch << ": " << ex.what();
                    continue;
                }
                for (size_t p = 0; p < want.size(); ++p)
                    EXPECT_EQ(0, std::memcmp(got[p].data(), want[p].data(), want[p].size() * sizeof(float)))
                        << m.name << " " << path << " budget " << v.budget << " (" << e.n_expert_slots()
                        << " slots) policy " << v.policy << " prefetch " << v.prefetch << " n_batch " << v.n_batch
                        << " prompt " << p;
                const layer_stats t = e.stats().total();
                if (v.budget == engine::min_budget_for(d)) {
                    // The smallest budget really streams: experts come and go, and are loaded again.
                    EXPECT_EQ(e.n_expert_slots(), uint32_t(d.n_experts_used));
                    EXPECT_GT(t.evictions, 0u) << m.name;
                    EXPECT_GT(t.loads, uint64_t(d.layout.n_moe_layers) * uint64_t(d.n_experts_used)) << m.name;
                }
                if (v.prefetch && e.n_expert_slots() > uint32_t(2 * d.n_experts_used)) {  // prefetch/prefetcher.h
                    EXPECT_GT(e.fwd_stats().n_prefetches + t.prefetch_hits, 0u) << m.name;
                }
                EXPECT_LE(e.n_expert_slots() * e.expert_slot_bytes(), v.budget ? v.budget : ~0ull);
            }
        }
    }
}

// Prefill (batched products for the projections, the router, the output head and each expert over the tokens that
// chose it, each expert pinned once per layer) gives bit-identical logits to decoding token by token, for any batch
// size (on the CPU a batched product gives every token a matvec's bits), and loads each layer's experts once per
// batch, not per token.
TEST(forward, prefill_in_batches_is_bit_identical_to_token_by_token_decode) {
    auto refs = load_refs();
    for (const auto& m : refs) {
        const auto& prompt = m.prompts[0];
        const size_t V = size_t(m.n_vocab);
        std::vector<float> one_by_one(prompt.size() * V);
        model_desc d = describe_model(open_model_file(m.gguf));
        engine_config small;
        small.expert_budget_bytes = engine::min_budget_for(d);
        {
            engine e(m.gguf, small);
            for (size_t i = 0; i < prompt.size(); ++i)
                std::memcpy(one_by_one.data() + i * V, e.decode(prompt[i]), V * sizeof(float));
            EXPECT_EQ(e.fwd_stats().n_acquires, prompt.size() * size_t(d.layout.n_moe_layers * d.n_experts_used));
        }
        for (int n_batch : {1, 3, 8, 32}) {
            engine_config cfg = small;
            cfg.n_batch = n_batch;
            engine e(m.gguf, cfg);
            std::vector<float> got(prompt.size() * V);
            e.logits(prompt, got);
            EXPECT_EQ(0, std::memcmp(got.data(), one_by_one.data(), got.size() * sizeof(float)))
                << m.name << " n_batch " << n_batch;
            // Each chunk acquires each selected expert of a layer once: at most n_experts per layer per chunk.
            const uint64_t n_chunks = (prompt.size() + size_t(n_batch) - 1) / size_t(n_batch);
            EXPECT_LE(e.fwd_stats().n_acquires, n_chunks * uint64_t(d.layout.n_moe_layers * d.n_experts));
            EXPECT_EQ(e.fwd_stats().n_expert_uses, prompt.size() * size_t(d.layout.n_moe_layers * d.n_experts_used));
            // prefill() then decode() continues the same sequence.
            e.reset();
            const std::span<const int> head(prompt.data(), prompt.size() - 1);
            e.prefill(head);
            const float* last = e.decode(prompt.back());
            EXPECT_EQ(0, std::memcmp(last, one_by_one.data() + (prompt.size() - 1) * V, V * sizeof(float)))
                << m.name << " n_batch " << n_batch;
        }
    }
}

// Invariant 5 for the forward pass, the cache and the thread pool: with every expert resident (after the first
// use of each), decode and prefill allocate nothing on the calling thread. Streaming is not asserted here: the
// readers recycle their request records but grow the pool (prefetch/read_plan.cpp) whenever more reads overlap
// than ever before, a timing-dependent allocation of the I/O layer on the caller's thread (to be fixed there by
// sizing the pool at start-up).
TEST(forward, nothing_is_allocated_in_the_token_loop) {
    auto refs = load_refs();
    for (const auto& m : refs) {
        engine_config cfg;
        cfg.n_threads = 2, cfg.min_parallel_work = 1;  // the thread pool's dispatch too
        engine e(m.gguf, cfg);
        std::vector<float> all(m.prompts[0].size() * size_t(m.n_vocab));
        e.logits(m.prompts[0], all);  // warm-up: experts loaded once
        e.logits(m.prompts[1], all);
        e.reset();
        g_allocs = 0;
        g_counting = true;
        for (int t : m.prompts[0]) e.decode(t);
        e.reset();
        e.prefill(m.prompts[1]);  // the batched path too
        g_counting = false;
        EXPECT_EQ(g_allocs, 0u) << m.name;
        EXPECT_GT(e.stats().total().hits, 0u);
    }
}

// The same with experts streaming: the smallest workable budget (every layer evicts and reloads) and the
// prefetcher on, counting the allocations of every thread (the caller, the streamer, the readers' completion
// threads) while tokens are decoded and a prompt is prefilled, after one warm-up pass has sized every pool.
TEST(forward, nothing_is_allocated_while_experts_stream) {
    auto refs = load_refs();
    for (const auto& m : refs) {
        const model_desc d = describe_model(open_model_file(m.gguf));
        for (prefetch_mode mode : {prefetch_mode::NONE, prefetch_mode::BOTH}) {
            engine_config cfg;
            cfg.expert_budget_bytes =
                engine::min_budget_for(d) + (mode == prefetch_mode::NONE ? 0 : 3 * engine::slot_bytes_for(d));
            cfg.prefetch.mode = mode;
            engine e(m.gguf, cfg);
            auto pass = [&] {  // decode one prompt token by token, prefill the other
                e.reset();
                for (int t : m.prompts[0]) e.decode(t);
                e.reset();
                e.prefill(m.prompts[1]);
            };
            pass();  // warm-up: the same work once (how many reads overlap depends on timing)
            const uint64_t misses_before = e.stats().total().misses;
            g_all_allocs = 0;
            g_all_threads = true;
            pass();
            g_all_threads = false;
            EXPECT_EQ(g_all_allocs.load(), 0u) << m.name << " prefetch " << int(mode);
            EXPECT_GT(e.stats().total().misses, misses_before) << m.name << ": experts must have streamed";
        }
    }
}

// A read error while streaming an expert (the file lost its tail after start-up) is a moe::error out of decode,
// not a crash; the sequence is left as it was, and once the bytes are back the same call gives the right logits.
TEST(forward, expert_read_failure_is_an_error_and_recoverable) {
    auto refs = load_refs();
    const auto& m = refs[1];
    const std::string copy = std::string(MOE_BINARY_DIR) + "/forward_test_truncated.gguf";
    std::ifstream in(m.gguf, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto write = [&](size_t n) {
        std::ofstream out(copy, std::ios::binary | std::ios::trunc);
        out.write(bytes.data(), std::streamsize(n));
    };
    write(bytes.size());
    model_desc d = describe_model(open_model_file(copy));
    engine_config cfg;
    cfg.expert_budget_bytes = engine::min_budget_for(d);
    cfg.reader = reader_kind::PREAD;
    engine e(copy, cfg);
    // Cut the file where the first expert's bytes start: every expert read now fails (resident weights are
    // already in memory).
    uint64_t first_expert_byte = ~0ull;
    for (const auto& ee : d.layout.experts)
        for (const auto& r : ee.ranges) first_expert_byte = std::min(first_expert_byte, r.offset);
    write(size_t(first_expert_byte));
    std::string what;
    try {
        e.decode(m.prompts[0][0]);
    } catch (const error& ex) {
        what = ex.what();
    }
    EXPECT_NE(what.find("forward_test_truncated.gguf"), std::string::npos) << what;
    EXPECT_EQ(e.fwd_stats().n_tokens, 0u);
    EXPECT_THROW(e.decode(m.prompts[0][0]), error);  // again: every failed pin was dropped, the load retried
    write(bytes.size());
    const float* l = e.decode(m.prompts[0][0]);
    const std::vector<float> first(m.logits[0].begin(), m.logits[0].begin() + m.n_vocab);  // position 0
    const double err = max_rel_error(std::vector<float>(l, l + m.n_vocab), first, m.n_vocab);
    EXPECT_LT(err, 1e-4);
    std::remove(copy.c_str());
}

// A model split over several files (GGUF split, sharded safetensors) runs and gives the same bits as its one-file
// twin: resident weights and expert ranges are read from the right file. (Fixtures of scripts/make_fixtures.py.)
TEST(forward, split_and_sharded_models_equal_their_single_file_twins) {
    const std::string f = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/";
    const std::pair<std::string, std::string> twins[] = {
        {"mixtral-tiny-q8_0.gguf", "mixtral-tiny-q8_0-split-00001-of-00002.gguf"},
        {"qwen3moe-tiny-hf", "qwen3moe-tiny-hf-sharded"},
    };
    for (const auto& [one, split] : twins) {
        engine_config cfg;
        cfg.n_ctx = 8;
        engine a(f + one, cfg);
        cfg.expert_budget_bytes = engine::min_budget_for(a.desc());
        engine b(f + split, cfg);
        EXPECT_GT(b.file().paths.size(), 1u) << split;
        const std::vector<int> toks{1, 5, 9, 2};
        const size_t V = size_t(a.desc().n_vocab);
        std::vector<float> la(toks.size() * V), lb(toks.size() * V);
        a.logits(toks, la);
        b.logits(toks, lb);
        EXPECT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float))) << one << " vs " << split;
        float mx = 0.0f;
        for (float v : la) {
            mx = std::max(mx, std::fabs(v));
            EXPECT_TRUE(std::isfinite(v));
        }
        EXPECT_GT(mx, 0.0f);
    }
}

// Models written by the other fixture script (scripts/make_fixtures.py: F16 and Q8_0 weights, its own random
// values) run: finite logits, and the same bits at the smallest budget as with every expert resident.
TEST(forward, other_writers_fixtures_run_and_stream_identically) {
    const std::string f = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/";
    for (const char* name : {"qwen2moe-tiny-f16.gguf", "olmoe-tiny-q8_0.gguf", "qwen3moe-tiny-q8_0.gguf"}) {
        engine_config cfg;
        cfg.n_ctx = 8;
        engine a(f + name, cfg);
        cfg.expert_budget_bytes = engine::min_budget_for(a.desc());
        cfg.n_batch = 1;
        engine b(f + name, cfg);
        const std::vector<int> toks{1, 5, 9, 2, 7};
        const size_t V = size_t(a.desc().n_vocab);
        std::vector<float> la(toks.size() * V), lb(toks.size() * V);
        a.logits(toks, la);
        b.logits(toks, lb);
        EXPECT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float))) << name;
        for (float v : la) ASSERT_TRUE(std::isfinite(v)) << name;
    }
}

TEST(forward, bad_input_is_a_clear_error) {
    // An MoE architecture the forward pass does not run yet.
    try {
        engine e(std::string(MOE_SOURCE_DIR) + "/tests/fixtures/deepseek2-tiny-f16.gguf", engine_config{});
        FAIL() << "deepseek2 accepted";
    } catch (const error& ex) {
        EXPECT_NE(std::string(ex.what()).find("forward pass supports llama (Mixtral), qwen3moe, olmoe and qwen2moe"),
                  std::string::npos)
            << ex.what();
        EXPECT_NE(std::string(ex.what()).find("'deepseek2'"), std::string::npos) << ex.what();
    }
    auto refs = load_refs();
    const auto& m = refs[0];
    // A budget below one layer's top-k.
    {
        model_desc d = describe_model(open_model_file(m.gguf));
        engine_config cfg;
        cfg.expert_budget_bytes = engine::min_budget_for(d) - 1;
        try {
            engine e(m.gguf, cfg);
            FAIL() << "budget below top-k accepted";
        } catch (const error& ex) {
            EXPECT_NE(std::string(ex.what()).find("top-k = 2"), std::string::npos) << ex.what();
        }
    }
    engine_config cfg;
    cfg.n_ctx = 3;
    engine e(m.gguf, cfg);
    EXPECT_THROW(e.decode(m.n_vocab), error);
    EXPECT_THROW(e.decode(-1), error);
    e.decode(1), e.decode(2), e.decode(3);
    try {
        e.decode(4);
        FAIL() << "context overflow accepted";
    } catch (const error& ex) {
        EXPECT_NE(std::string(ex.what()).find("context is full"), std::string::npos) << ex.what();
    }
    engine_config bad_policy;
    bad_policy.policy = "nope";
    EXPECT_THROW(engine(m.gguf, bad_policy), error);
}

}  // namespace
}  // namespace moe
