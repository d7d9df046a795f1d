// CPU attention (backend_cpu::attention_batch) on 1 and 2 threads, wall time:
//  - prefill: every position of a 2k / 5k / 10k-token prompt in chunks of 32 tokens (the forward pass's default
//    n_batch), one layer of the tiny test model's shape (4 query heads over 2 kv heads, head dim 16). An
//    iteration is the whole prompt, so the cost is quadratic in the length.
//  - decode: one token at position 2k / 5k / 10k, one layer of Mixtral's shape (32 query heads over 8 kv heads,
//    head dim 128).
// Random queries, keys and values; the arithmetic does not depend on them.
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include "runtime/backend_cpu.h"

namespace {

struct shape {
    int n_head, n_head_kv, hd;
};

constexpr shape k_tiny{4, 2, 16};
constexpr shape k_mixtral{32, 8, 128};
constexpr int k_n_batch = 32;

struct buffers {
    std::vector<float> q, k, v, out, scores;
};

buffers make_buffers(const shape& s, int n_pos, int n_q_tok) {
    buffers b;
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    b.q.resize(size_t(n_q_tok) * size_t(s.n_head) * size_t(s.hd));
    b.k.resize(size_t(n_pos) * size_t(s.n_head_kv) * size_t(s.hd));
    b.v.resize(b.k.size());
    for (auto* a : {&b.q, &b.k, &b.v})
        for (auto& x : *a) x = nd(rng);
    b.out.resize(size_t(n_q_tok) * size_t(s.n_head) * size_t(s.hd));
    b.scores.resize(size_t(s.n_head) * size_t(n_pos));
    return b;
}

void bm_prefill(benchmark::State& state) {
    const int n_pos = int(state.range(0)), n_threads = int(state.range(1));
    const shape s = k_tiny;
    moe::backend_cpu be(0, n_threads);
    buffers b = make_buffers(s, n_pos, k_n_batch);
    const float scale = float(1.0 / std::sqrt(double(s.hd)));
    for (auto _ : state) {
        for (int pos0 = 0; pos0 < n_pos; pos0 += k_n_batch) {
            const int n_tok = std::min(k_n_batch, n_pos - pos0);
            be.attention_batch(b.q.data(), b.k.data(), b.v.data(), b.out.data(), b.scores.data(), s.n_head, s.n_head_kv,
                               s.hd, s.hd, pos0, n_tok, scale);
        }
        benchmark::DoNotOptimize(b.out.data());
    }
    state.counters["tokens/s"] = benchmark::Counter(double(n_pos), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(bm_prefill)
    ->ArgsProduct({{2000, 5000, 10000}, {1, 2}})
    ->ArgNames({"positions", "threads"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void bm_decode(benchmark::State& state) {
    const int n_pos = int(state.range(0)), n_threads = int(state.range(1));
    const shape s = k_mixtral;
    moe::backend_cpu be(0, n_threads);
    buffers b = make_buffers(s, n_pos, 1);
    const float scale = float(1.0 / std::sqrt(double(s.hd)));
    for (auto _ : state) {
        be.attention_batch(b.q.data(), b.k.data(), b.v.data(), b.out.data(), b.scores.data(), s.n_head, s.n_head_kv,
                           s.hd, s.hd, n_pos - 1, 1, scale);
        benchmark::DoNotOptimize(b.out.data());
    }
}
BENCHMARK(bm_decode)
    ->ArgsProduct({{2000, 5000, 10000}, {1, 2}})
    ->ArgNames({"positions", "threads"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
