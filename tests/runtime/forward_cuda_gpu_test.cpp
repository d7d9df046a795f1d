// The forward pass on the CUDA backend (engine_config::backend = CUDA: resident weights, KV cache, workspaces
// and expert slots in device memory, experts streamed file -> pinned staging -> device), against Hugging Face
// transformers (tests/fixtures/ref) and against the CPU backend, and the invariant on the GPU: for a given batch
// size (n_batch), logits are bit-identical (memcmp) at the smallest workable, a middle and an unlimited expert
// budget, with prefetch on and off, with a pinned host tier under the device tier.
//
// Batch size is the one thing that may change the bits on the GPU: a prefill's batched products (cuBLAS Sgemm,
// from backend_cuda_config::matmul_min_tokens tokens up) sum in another order than decode's matrix-vector
// kernels, so prefill and token-by-token decode agree within fp32 rounding (tolerance below), not to the bit.
// Below matmul_min_tokens the batched product is the matvec, so smaller batches stay bit-identical to decode.
//
// Tolerance against transformers: 1e-4 relative (max |ours - ref| / max |ref| per position), the same bound as
// the CPU's forward_test; the GPU's fp32 matrix products add ~1e-6 to the CPU's ~6e-7. Each model's error and
// its distance to the CPU backend's logits are printed. Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/gpu.h"
#include "runtime/backend_cuda.h"
#include "runtime/engine.h"
#include "runtime/run_stats.h"
#include "tests/runtime/ref_models.h"

namespace moe {
namespace {

using test::load_refs;
using test::max_rel_error;
using test::ref_model;
using test::run_all;

engine_config gpu_config() {
    engine_config cfg;
    cfg.backend = backend_kind::CUDA;
    return cfg;
}

class forward_cuda : public ::testing::Test {
protected:
    void SetUp() override {
        if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << gpu_description();
    }
};

TEST_F(forward_cuda, matches_transformers_and_the_cpu_backend) {
    auto refs = load_refs();
    ASSERT_GE(refs.size(), 4u);
    int n_checked = 0;
    for (const auto& m : refs) {
        for (const std::string& path : {m.gguf, m.hf, m.gguf_q8_0}) {
            if (path.empty()) continue;
            std::vector<std::vector<float>> got, cpu;
            try {
                engine e(path, gpu_config());
                EXPECT_EQ(e.backend_name(), "cuda");
                EXPECT_TRUE(e.get_model().on_gpu() && e.resident_bytes() > 0) << "resident weights were not uploaded";
                got = run_all(e, m);
            } catch (const error& ex) {
                // A model the forward pass does not run (yet) is refused the same way on both backends.
                EXPECT_THROW(engine(path, engine_config{}), error) << path << ": GPU refused, CPU ran: " << ex.what();
                continue;
            }
            {
                engine c(path, engine_config{});
                cpu = run_all(c, m);
            }
            const auto& ref = path == m.gguf_q8_0 ? m.q8_0_logits : m.logits;
            for (size_t p = 0; p < m.prompts.size(); ++p) {
                const double err = max_rel_error(got[p], ref[p], m.n_vocab);
                const double vs_cpu = max_rel_error(got[p], cpu[p], m.n_vocab);
                std::printf("[ cuda     ] %-9s %-5s prompt %zu: max rel error %.3g vs transformers, %.3g vs cpu\n",
                            m.name.c_str(),
                            path == m.gguf        ? "gguf"
                            : path == m.gguf_q8_0 ? "q8_0"
                                                  : "hf",
                            p, err, vs_cpu);
                EXPECT_LT(err, 1e-4) << m.name << " " << path << " prompt " << p;
                EXPECT_LT(vs_cpu, 1e-4) << m.name << " " << path << " prompt " << p;
                for (float v : got[p]) ASSERT_TRUE(std::isfinite(v)) << m.name << " " << path;
                ++n_checked;
            }
        }
    }
    EXPECT_GT(n_checked, 0);
}

TEST_F(forward_cuda, logits_bit_identical_across_budgets_prefetch_and_tiers) {
    auto refs = load_refs();
    for (const auto& m : refs) {
        std::vector<std::string> paths{m.gguf};
        if (!m.gguf_q8_0.empty()) paths.push_back(m.gguf_q8_0);
        for (const std::string& path : paths) {
            // The reference of each batch size: every expert resident, no prefetch (batch sizes differ in
            // rounding on the GPU, see the top of the file; budgets, prefetch and tiers must not).
            std::map<int, std::vector<std::vector<float>>> want;
            model_desc d;
            try {
                for (int n_batch : {1, 3, 32}) {
                    engine_config cfg = gpu_config();
                    cfg.n_batch = n_batch;
                    engine base(path, cfg);
                    want[n_batch] = run_all(base, m);
                    d = base.desc();
                }
            } catch (const error& ex) {
                std::printf("[ skip     ] %s: %s\n", path.c_str(), ex.what());
                continue;
            }
            const uint64_t slot = engine::slot_bytes_for(d);
            const uint64_t n_all = uint64_t(d.layout.n_moe_layers) * uint64_t(d.n_experts);
            struct variant {
                uint64_t budget;
                const char* policy;
                prefetch_mode prefetch;
                int n_batch;
                uint64_t host_budget;
            };
            const variant vs[] = {
                {engine::min_budget_for(d), "lru", prefetch_mode::NONE, 1, 0},
                {engine::min_budget_for(d), "lfu", prefetch_mode::NONE, 32, 0},
                {engine::min_budget_for(d) + slot - 1, "lru", prefetch_mode::SPEC, 1, 0},
                {slot * (n_all / 2), "lru", prefetch_mode::SPEC, 1, 0},
                {slot * (n_all / 2), "lru", prefetch_mode::BOTH, 1, 0},
                {slot * (n_all / 2), "lfu", prefetch_mode::NONE, 3, 0},
                {0, "lru", prefetch_mode::SPEC, 1, 0},
                {engine::min_budget_for(d), "lru", prefetch_mode::NONE, 1, slot * n_all},  // device <- host tier
            };
            for (const variant& v : vs) {
                engine_config cfg = gpu_config();
                cfg.expert_budget_bytes = v.budget;
                cfg.policy = v.policy;
                cfg.prefetch.mode = v.prefetch;
                cfg.n_batch = v.n_batch;
                cfg.host_budget_bytes = v.host_budget;
                const std::string what = m.name + " " + path + " budget " + std::to_string(v.budget) + " policy " +
                                         v.policy + " prefetch " + std::string(prefetch_mode_name(v.prefetch)) +
                                         " n_batch " + std::to_string(v.n_batch) + " host " +
                                         std::to_string(v.host_budget);
                std::vector<std::vector<float>> got;
                uint32_t n_slots = 0;
                layer_stats t;
                try {
                    engine e(path, cfg);
                    got = run_all(e, m);
                    n_slots = e.n_expert_slots();
                    t = e.stats().total();
                } catch (const error& ex) {
                    ADD_FAILURE() << what << ": " << ex.what();
                    continue;
                }
                const auto& ref = want.at(v.n_batch);
                for (size_t p = 0; p < ref.size(); ++p) {
                    const bool same = std::memcmp(got[p].data(), ref[p].data(), ref[p].size() * sizeof(float)) == 0;
                    EXPECT_TRUE(same) << what << " (" << n_slots << " slots) prompt " << p << ": max rel difference "
                                      << max_rel_error(got[p], ref[p], m.n_vocab);
                }
                if (v.budget == engine::min_budget_for(d) && v.host_budget == 0) {
                    EXPECT_EQ(n_slots, uint32_t(d.n_experts_used)) << what;
                    EXPECT_GT(t.evictions, 0u) << what << ": the smallest budget must stream";
                }
            }
        }
    }
}

// Prefill against token-by-token decode on the GPU. Batches below matmul_min_tokens give the same bits (their
// batched products are matvecs). Larger ones use cuBLAS Sgemm for the projections, the router, the output head and
// every expert with that many tokens: the same products summed in another order, so each differs from the matvec by
// fp32 rounding, ~1e-7 relative per product (these models have rows of at most a few hundred columns); through a few
// layers that stays near 1e-6, the distance the GPU keeps from the CPU backend. 1e-5 leaves a margin of ten while
// still catching a wrong row, token or expert (those move logits by 1e-2 and more). The greedy token must agree at
// every position as well: rounding must not flip a decision.
TEST_F(forward_cuda, prefill_in_batches_matches_token_by_token_decode) {
    const int64_t min_tokens = backend_cuda_config{}.matmul_min_tokens;
    auto refs = load_refs();
    for (const auto& m : refs) {
        const auto& prompt = m.prompts[0];
        const size_t V = size_t(m.n_vocab);
        std::vector<float> one_by_one(prompt.size() * V);
        engine_config small = gpu_config();
        try {
            small.expert_budget_bytes = engine::min_budget_for(describe_model(open_model_file(m.gguf)));
            engine e(m.gguf, small);
            for (size_t i = 0; i < prompt.size(); ++i)
                std::memcpy(one_by_one.data() + i * V, e.decode(prompt[i]), V * sizeof(float));
        } catch (const error& ex) {
            std::printf("[ skip     ] %s: %s\n", m.gguf.c_str(), ex.what());
            continue;
        }
        for (int n_batch : {3, 8, 32}) {
            engine_config cfg = small;
            cfg.n_batch = n_batch;
            engine e(m.gguf, cfg);
            std::vector<float> got(prompt.size() * V);
            e.logits(prompt, got);
            const double diff = max_rel_error(got, one_by_one, m.n_vocab);
            std::printf("[ cuda     ] %-9s prefill n_batch %2d vs decode: max rel difference %.3g\n", m.name.c_str(),
                        n_batch, diff);
            if (n_batch < min_tokens) {
                EXPECT_EQ(0, std::memcmp(got.data(), one_by_one.data(), got.size() * sizeof(float)))
                    << m.name << " n_batch " << n_batch << ": max rel difference " << diff;
            }
            EXPECT_LT(diff, 1e-5) << m.name << " n_batch " << n_batch;
            for (size_t p = 0; p < prompt.size(); ++p) {
                const float* a = got.data() + p * V;
                const float* b = one_by_one.data() + p * V;
                EXPECT_EQ(std::max_element(a, a + V) - a, std::max_element(b, b + V) - b)
                    << m.name << " n_batch " << n_batch << " position " << p;
            }
        }
    }
}

// Models written by the other fixture script (F16 and Q8_0 experts: the fused dequant-matvec on the device for
// decode, dequantize + Sgemm for a prefill's experts with enough tokens) run on the GPU, stream identically at the
// smallest budget (prefilled, and decoded token by token), and stay close to the CPU backend.
TEST_F(forward_cuda, other_writers_fixtures_run_and_match_the_cpu) {
    const std::string f = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/";
    for (const char* name :
         {"qwen2moe-tiny-f16.gguf", "olmoe-tiny-q8_0.gguf", "qwen3moe-tiny-q8_0.gguf", "mixtral-tiny-q8_0.gguf"}) {
        engine_config cfg = gpu_config();
        cfg.n_ctx = 8;
        engine a(f + name, cfg);
        cfg.expert_budget_bytes = engine::min_budget_for(a.desc());
        engine b(f + name, cfg);  // the same batch size as a: only the budget differs
        cfg.n_batch = 1;
        engine b1(f + name, cfg);
        cfg.expert_budget_bytes = 0;
        engine a1(f + name, cfg);
        engine_config ccfg;
        ccfg.n_ctx = 8;
        engine c(f + name, ccfg);
        const std::vector<int> toks{1, 5, 9, 2, 7};
        const size_t V = size_t(a.desc().n_vocab);
        std::vector<float> la(toks.size() * V), lb(toks.size() * V), lc(toks.size() * V);
        std::vector<float> la1(toks.size() * V), lb1(toks.size() * V);
        a.logits(toks, la);
        b.logits(toks, lb);
        a1.logits(toks, la1);
        b1.logits(toks, lb1);
        c.logits(toks, lc);
        EXPECT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float))) << name << " prefilled";
        EXPECT_EQ(0, std::memcmp(la1.data(), lb1.data(), la1.size() * sizeof(float))) << name << " decoded";
        EXPECT_LT(max_rel_error(la, la1, int(V)), 1e-5) << name << ": prefill vs decode";
        for (float v : la) ASSERT_TRUE(std::isfinite(v)) << name;
        const double vs_cpu = max_rel_error(la, lc, int(V));
        std::printf("[ cuda     ] %-24s max rel error vs cpu %.3g\n", name, vs_cpu);
        EXPECT_LT(vs_cpu, 1e-4) << name;
    }
}

// The VRAM a CUDA model, offloader and session really take (cudaMemGetInfo before and after) is the footprint the
// planner printed, within 2 % (plus the driver's allocation granularity for a tiny model); with two sessions the
// second adds only its KV cache and workspaces.
TEST(forward_cuda_memory, allocated_vram_matches_the_printed_plan) {
    if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << gpu_description();
    const std::string path = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/llamacpp/mixtral-kq.gguf";
    engine_config cfg;
    cfg.backend = backend_kind::CUDA;
    cfg.n_ctx = 4096;
    uint64_t free0 = 0, free1 = 0, free2 = 0, total = 0;
    ASSERT_TRUE(gpu_memory_info(free0, total, 0));
    {
        engine e(path, cfg);
        ASSERT_TRUE(gpu_memory_info(free1, total, 0));
        const footprint fp = measure_footprint(e.get_model(), e.get_offloader(), e.get_session());
        const double used = double(free0 - free1);
        const double slack = std::max(0.02 * double(fp.total()), double(8u << 20));
        EXPECT_NEAR(used, double(fp.total()), slack)
            << "planned " << fp.total() << " bytes, cudaMemGetInfo says " << used;
        std::printf("[ vram ] planned %llu bytes, allocated %.0f (%.2f %%)\n", (unsigned long long)fp.total(), used,
                    100.0 * (used - double(fp.total())) / double(fp.total()));
        auto second = e.make_session();
        ASSERT_TRUE(gpu_memory_info(free2, total, 0));
        EXPECT_NEAR(double(free1 - free2), double(second->workspace_bytes()),
                    std::max(0.02 * double(second->workspace_bytes()), double(4u << 20)))
            << "a second session re-uploaded weights or took expert memory";
    }
}

}  // namespace
}  // namespace moe
