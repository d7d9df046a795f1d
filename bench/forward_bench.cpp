// Decode and prefill speed of the CPU forward pass on the committed reference models (tests/fixtures/ref), with
// every expert resident and with the smallest workable budget (top_k slots: experts stream from the file on every
// miss). Prefill cases (..._prefill32) evaluate the 32 tokens in one batch: batched products (backend::matmul) for
// the projections, the router, each expert over the tokens that chose it, and the output head. These models are
// tiny, so the figures measure per-token overhead (routing, cache, streamer round trips), not matrix throughput.
// Usage (from the repository root, or with MOE_REF_DIR set): forward_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>

#include "runtime/engine.h"

namespace {

std::string ref_dir() {
    const char* env = std::getenv("MOE_REF_DIR");
    return env ? std::string(env) + "/" : std::string("tests/fixtures/ref/");
}

void bm_decode(benchmark::State& state, const std::string& file, bool smallest, int n_batch) {
    const std::string k_dir = ref_dir();
    moe::engine_config cfg;
    cfg.n_ctx = 256;
    cfg.n_batch = n_batch;
    if (smallest)
        cfg.expert_budget_bytes = moe::engine::min_budget_for(moe::describe_model(moe::open_model_file(k_dir + file)));
    moe::engine e(k_dir + file, cfg);
    int tokens[32];
    for (int i = 0; i < 32; ++i) tokens[i] = (i * 37 + 11) % e.desc().n_vocab;
    uint64_t n = 0;
    for (auto _ : state) {
        e.reset();
        if (n_batch == 1)
            for (int t : tokens) benchmark::DoNotOptimize(e.decode(t));
        else
            benchmark::DoNotOptimize(e.prefill(tokens));
        n += 32;
    }
    const auto st = e.stats().total();
    state.counters["tok/s"] = benchmark::Counter(double(n), benchmark::Counter::kIsRate);
    state.counters["hit_rate"] = st.hit_rate();
    state.counters["slots"] = e.n_expert_slots();
}

BENCHMARK_CAPTURE(bm_decode, mixtral_f32_all_resident, "mixtral-f32.gguf", false, 1)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(bm_decode, mixtral_f32_smallest_budget, "mixtral-f32.gguf", true, 1)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(bm_decode, qwen3moe_f32_all_resident, "qwen3moe-f32.gguf", false, 1)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(bm_decode, qwen3moe_f32_smallest_budget, "qwen3moe-f32.gguf", true, 1)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(bm_decode, qwen3moe_f32_smallest_budget_prefill32, "qwen3moe-f32.gguf", true, 32)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(bm_decode, mixtral_q8_0_all_resident, "mixtral-q8_0.gguf", false, 1)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(bm_decode, mixtral_f32_all_resident_prefill32, "mixtral-f32.gguf", false, 32)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(bm_decode, qwen3moe_f32_all_resident_prefill32, "qwen3moe-f32.gguf", false, 32)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(bm_decode, mixtral_q8_0_all_resident_prefill32, "mixtral-q8_0.gguf", false, 32)
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
