// The expert cache: which experts sit in which slot of one memory tier, who pins them, which loads are in
// flight. Generic over one tier + one loader + one eviction policy, so caches stack: a device-level cache
// whose loader reads from a host-level cache, whose loader reads the model file. It knows keys, byte sizes,
// budgets and callbacks, nothing of architectures or kernels.
//
// Choices:
//  - acquire() never blocks on a load: it returns a handle that is ready (hit) or pending (a load is in
//    flight; wait() blocks until it completes). A second acquire of a LOADING expert joins the same load.
//  - A failed load leaves the expert ABSENT and frees its slot at once; every waiter's wait() throws
//    moe::error carrying the loader's message; a later acquire retries with a fresh load.
//  - When every slot is pinned or loading, acquire() throws moe::error ("all N slots pinned or loading")
//    instead of blocking: on a single-GPU runtime nobody else would ever unpin, so blocking would deadlock;
//    the error says the budget must hold at least top_k x concurrently-pinned layers experts.
//    prefetch() in that situation simply returns false.
//  - Thread safety: one mutex guards all bookkeeping and the policy; critical sections are short, the loader
//    is called outside it, and completions may come from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "cache/cache_stats.h"
#include "cache/eviction_policy.h"
#include "cache/expert_key.h"
#include "cache/expert_loader.h"
#include "cache/memory_tier.h"

namespace moe {

enum class residency : uint8_t { ABSENT, LOADING, RESIDENT };

struct expert_cache_config {
    uint32_t n_layers = 0;   // key space: layer in [0, n_layers)
    uint32_t n_experts = 0;  // key space: expert in [0, n_experts)
    // Bytes of one expert (<= the tier's slot size); empty: every expert is a whole slot. Called for every key
    // once, at construction, so a too-large expert is reported at start-up and never in the token loop.
    std::function<uint64_t(expert_key)> expert_bytes;
};

class expert_cache;

// A pin on one expert (RAII): while it lives the expert is not evicted. Ready on a hit; pending while
// its load is in flight. Move-only; dropping (or reset()) unpins.
class expert_handle {
public:
    expert_handle() = default;
    expert_handle(expert_handle&& o) noexcept { *this = std::move(o); }
    expert_handle& operator=(expert_handle&& o) noexcept;
    expert_handle(const expert_handle&) = delete;
    expert_handle& operator=(const expert_handle&) = delete;
    ~expert_handle() { reset(); }

    bool valid() const { return _cache != nullptr; }
    expert_key key() const { return _key; }
    // Non-blocking: true once the expert is resident. A failed load stays "not ready"; wait() reports it.
    bool ready() const;
    // Blocks until the load completes. On failure throws moe::error with the loader's message and leaves the
    // handle empty (the pin died with the load). Returns at once on a ready handle.
    void wait();
    // The expert's bytes in the tier's slot (a device address for a DEVICE tier). Only when ready().
    void* data() const;
    uint64_t bytes() const { return _bytes; }
    uint32_t slot() const { return _slot; }
    // Unpins; the handle becomes empty.
    void reset();

private:
    friend class expert_cache;
    bool refresh_locked() const;

    expert_cache* _cache = nullptr;
    expert_key _key;
    uint32_t _index = 0;  // key index in the cache's table
    uint32_t _epoch = 0;  // which load of this key the pin belongs to
    uint32_t _slot = 0;
    uint64_t _bytes = 0;
    mutable void* _data = nullptr;
    mutable bool _ready = false;
};

class expert_cache final : private load_sink {
public:
    // The tier and the loader must outlive the cache; the cache owns the policy.
    expert_cache(const expert_cache_config& cfg, memory_tier& tier, expert_loader& loader,
                 std::unique_ptr<eviction_policy> policy);
    // Waits for loads still in flight (their completions would otherwise reach a dead cache). Every handle must
    // be dropped before the cache (a pin outliving it is a bug: MOE_CHECK).
    ~expert_cache() override;
    expert_cache(const expert_cache&) = delete;
    expert_cache& operator=(const expert_cache&) = delete;

    // Pins `key`: ready on a hit, pending when a load was started or joined. Throws moe::error for a key
    // outside the key space, or when every slot is pinned or loading.
    // `for_prefetch`: the pin serves a prefetch of the cache above (a tiered loader filling an upper slot), so a
    // load started here goes to the loader as a prefetch (queued behind demands, cancellable) while still pinned,
    // and a cancellation counts as a cancelled load, not a failed one.
    expert_handle acquire(expert_key key, const access_info& access = {}, bool for_prefetch = false);
    // Starts loading `key` without pinning it; false (and nothing happens) when it is resident, already
    // loading, or no slot can be freed.
    bool prefetch(expert_key key, const access_info& access = {});

    residency state(expert_key key) const;
    uint32_t pins(expert_key key) const;
    uint32_t n_slots() const { return _tier.n_slots(); }
    uint32_t n_resident() const;
    uint32_t n_loading() const;
    uint64_t expert_bytes(expert_key key) const { return _bytes[index(key)]; }
    const memory_tier& tier() const { return _tier; }
    std::string_view policy_name() const { return _policy->name(); }

    cache_stats stats() const;
    void reset_stats();

private:
    friend class expert_handle;
    static constexpr uint32_t k_no_key = ~0u;

    struct key_state {
        residency state = residency::ABSENT;
        bool prefetched = false;  // brought by prefetch() and not used since (next hit is a prefetch hit)
        bool demanded = false;    // the current load has a demand acquirer (touch the policy on completion)
        uint32_t slot = 0;
        uint32_t pins = 0;
        uint32_t epoch = 0;  // incremented each time a load of this key starts
        access_info access;  // the access that started (or first demanded) the current load
    };
    struct failure {
        uint32_t epoch = 0;
        std::string message;
    };
    struct filter : victim_filter {
        const expert_cache* cache = nullptr;
        bool evictable(expert_key k) const override;
    };

    uint32_t index(expert_key key) const;
    expert_key key_of(uint32_t index) const { return {index / _n_experts, index % _n_experts}; }
    // Under the lock: a free slot for `key`, evicting the policy's victim when the tier is full; nullopt when
    // every slot is pinned or loading.
    std::optional<uint32_t> take_slot_locked(expert_key key, uint64_t bytes);
    // Under the lock: marks `idx` LOADING in `slot` and returns the request for the loader.
    load_request start_load_locked(uint32_t idx, uint32_t slot, bool prefetch, const access_info& access);
    // Without the lock: hands the request to the loader.
    void issue(const load_request& req, uint32_t idx, uint32_t epoch);
    void load_done(uint64_t token, bool ok, std::string_view error) override;
    void load_cancelled(uint64_t token, std::string_view why) override;
    void finish_load(uint64_t token, bool ok, bool cancelled, std::string_view error);
    void unpin(uint32_t idx, uint32_t epoch);

    memory_tier& _tier;
    expert_loader& _loader;
    std::unique_ptr<eviction_policy> _policy;
    uint32_t _n_layers = 0;
    uint32_t _n_experts = 0;
    std::vector<uint64_t> _bytes;  // (n_layers * n_experts) expert sizes, fixed at construction

    mutable std::mutex _mu;
    std::condition_variable _cv;                      // signalled whenever a load completes or fails
    std::vector<key_state> _keys;                     // (n_layers * n_experts)
    std::vector<uint32_t> _slot_owner;                // (n_slots) key index, k_no_key when free
    std::unordered_map<uint32_t, failure> _failures;  // last failure message per key index
    std::vector<layer_stats> _stats;                  // (n_layers)
    uint32_t _n_resident = 0;
    uint32_t _n_loading = 0;
    filter _filter;
};

}  // namespace moe
