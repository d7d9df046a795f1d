// Cost of the expert cache's bookkeeping (no bytes are moved: the loader completes at once): acquire + release
// on a hit (target <= 1 us), a top-k group of hits, a miss that evicts, the same hit path from several threads,
// and the tier's slot alloc/free.
#include <benchmark/benchmark.h>

#include <memory>
#include <vector>

#include "cache/expert_cache.h"
#include "cache/policies.h"

using namespace moe;

namespace {

constexpr uint32_t k_layers = 32, k_experts = 64;
constexpr uint64_t k_slot = 4096;

// Completes every load at once without touching the slot: only the cache's own work is timed.
struct instant_loader final : expert_loader {
    void load(const load_request&, load_ticket ticket) override { ticket.complete(); }
};

struct bench_cache {
    memory_tier tier;
    instant_loader loader;
    expert_cache cache;
    explicit bench_cache(uint32_t n_slots)
        : tier(memory_tier_config{tier_kind::RAM, n_slots * k_slot, k_slot}),
          cache(expert_cache_config{k_layers, k_experts, {}}, tier, loader,
                make_policy("lru", policy_params{k_layers, k_experts, n_slots, nullptr})) {}
};

// Every key resident; acquire one (a hit), drop the handle (unpin).
void BM_acquire_release_hit(benchmark::State& state) {
    static bench_cache* b = nullptr;
    if (state.thread_index() == 0) {
        b = new bench_cache(k_layers * k_experts);
        for (uint32_t l = 0; l < k_layers; l++)
            for (uint32_t e = 0; e < k_experts; e++) b->cache.acquire({l, e});
    }
    uint64_t t = 0;
    uint32_t i = uint32_t(state.thread_index()) * 977;
    for (auto _ : state) {
        expert_key k{(i >> 6) % k_layers, i % k_experts};
        i += 7;
        expert_handle h = b->cache.acquire(k, access_info{t++, 0, 0.f});
        benchmark::DoNotOptimize(h.data());
    }
    state.SetItemsProcessed(state.iterations());
    if (state.thread_index() == 0) {
        if (b->cache.stats().total().misses != k_layers * k_experts) state.SkipWithError("unexpected misses");
        delete b;
        b = nullptr;
    }
}
BENCHMARK(BM_acquire_release_hit)->Threads(1)->Threads(2)->UseRealTime();

// One MoE layer's top-8 experts pinned together, as a forward pass would, then released.
void BM_acquire_release_top8(benchmark::State& state) {
    bench_cache b(k_layers * k_experts);
    for (uint32_t l = 0; l < k_layers; l++)
        for (uint32_t e = 0; e < k_experts; e++) b.cache.acquire({l, e});
    std::vector<expert_handle> group;
    group.reserve(8);
    uint32_t layer = 0;
    for (auto _ : state) {
        for (uint32_t r = 0; r < 8; r++) group.push_back(b.cache.acquire({layer, (layer * 5 + r * 9) % k_experts}));
        benchmark::DoNotOptimize(group.data());
        group.clear();
        layer = (layer + 1) % k_layers;
    }
    state.SetItemsProcessed(state.iterations() * 8);
}
BENCHMARK(BM_acquire_release_top8);

// Every acquire misses and evicts the LRU victim (2x more keys cycled than slots).
void BM_acquire_release_miss_evict(benchmark::State& state) {
    constexpr uint32_t n_slots = 256;
    bench_cache b(n_slots);
    uint32_t i = 0;
    for (auto _ : state) {
        expert_key k{(i / k_experts) % 8, i % k_experts};  // 512 keys cycled through 256 slots
        i++;
        expert_handle h = b.cache.acquire(k);
        benchmark::DoNotOptimize(h.ready());
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_acquire_release_miss_evict);

void BM_tier_alloc_free(benchmark::State& state) {
    memory_tier tier(memory_tier_config{tier_kind::RAM, 64 * k_slot, k_slot});
    for (auto _ : state) {
        auto s = tier.alloc_slot(k_slot);
        benchmark::DoNotOptimize(s);
        tier.free_slot(*s);
    }
}
BENCHMARK(BM_tier_alloc_free);

}  // namespace

BENCHMARK_MAIN();
