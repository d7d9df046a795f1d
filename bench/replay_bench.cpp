// Replay speed of the trace simulator per policy, in expert accesses per second (items/s), on synthetic
// traces shaped like Mixtral (32 layers x 8 experts, top-2) and Qwen3-30B-A3B (48 x 128, top-8). Policy
// construction (Belady's next-use precomputation included) is inside the timed loop.
#include <benchmark/benchmark.h>

#include <string>

#include "cache/simulator.h"
#include "cache/trace_gen.h"

namespace {

const moe::routing_trace& mixtral_like() {
    static const moe::routing_trace t = [] {
        moe::synth_params p;
        p.n_layers = 32;
        p.n_experts = 8;
        p.top_k = 2;
        p.n_tokens = 20000;
        p.n_seqs = 8;
        p.drift = 0.2;
        return moe::generate_trace(p);
    }();
    return t;
}

const moe::routing_trace& qwen3_like() {
    static const moe::routing_trace t = [] {
        moe::synth_params p;
        p.n_layers = 48;
        p.n_experts = 128;
        p.top_k = 8;
        p.n_tokens = 2000;
        p.n_seqs = 4;
        p.drift = 0.2;
        return moe::generate_trace(p);
    }();
    return t;
}

void replay(benchmark::State& state, const moe::routing_trace& t, const char* policy, double frac) {
    uint64_t cap = uint64_t(frac * double(t.n_layers) * t.n_experts);
    uint64_t hits = 0;
    for (auto _ : state) {
        moe::sim_result r = moe::simulate(t, policy, cap);
        hits = r.hits;
        benchmark::DoNotOptimize(hits);
    }
    state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(t.n_accesses()));
    state.counters["hit_rate"] = double(hits) / double(t.n_accesses());
}

void register_all() {
    for (const char* p : {"lru", "lru-layer", "lfu", "lfu-recent", "belady"}) {
        for (double frac : {0.25, 0.5}) {
            std::string pct = std::to_string(int(frac * 100));
            benchmark::RegisterBenchmark(("mixtral_like/" + std::string(p) + "/" + pct + "%").c_str(),
                                         [=](benchmark::State& s) { replay(s, mixtral_like(), p, frac); })
                ->Unit(benchmark::kMillisecond);
            benchmark::RegisterBenchmark(("qwen3_like/" + std::string(p) + "/" + pct + "%").c_str(),
                                         [=](benchmark::State& s) { replay(s, qwen3_like(), p, frac); })
                ->Unit(benchmark::kMillisecond);
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    register_all();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
