// The expert cache: residency table, pins, in-flight loads and their completion, eviction via the policy.
#include "cache/expert_cache.h"

#include <chrono>

#include "common/error.h"
#include "common/units.h"

namespace moe {

// ---- expert_handle ----------------------------------------------------------------------------------------

expert_handle& expert_handle::operator=(expert_handle&& o) noexcept {
    if (this != &o) {
        reset();
        _cache = o._cache;
        _key = o._key;
        _index = o._index;
        _epoch = o._epoch;
        _slot = o._slot;
        _bytes = o._bytes;
        _data = o._data;
        _ready = o._ready;
        o._cache = nullptr;
        o._ready = false;
        o._data = nullptr;
    }
    return *this;
}

// Under the cache's lock: has our load landed? The epoch proves it is *our* load: a failed load leaves the
// key ABSENT with the same epoch, and a resident key holding our pin cannot be evicted and reloaded.
bool expert_handle::refresh_locked() const {
    const auto& ks = _cache->_keys[_index];
    if (ks.state == residency::RESIDENT && ks.epoch == _epoch) {
        _data = _cache->_tier.slot_data(_slot);
        _ready = true;
    }
    return _ready;
}

bool expert_handle::ready() const {
    if (_ready || !_cache) return _ready;
    std::lock_guard<std::mutex> lock(_cache->_mu);
    return refresh_locked();
}

void expert_handle::wait() {
    MOE_CHECK(_cache != nullptr);
    if (_ready) return;
    expert_cache* c = _cache;
    std::unique_lock<std::mutex> lock(c->_mu);
    const auto& ks = c->_keys[_index];
    auto in_flight = [&] { return ks.state == residency::LOADING && ks.epoch == _epoch; };
    if (in_flight()) {
        auto t0 = std::chrono::steady_clock::now();
        c->_cv.wait(lock, [&] { return !in_flight(); });
        auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0);
        c->_stats[_key.layer].wait_ns += static_cast<uint64_t>(ns.count());
    }
    if (refresh_locked()) return;
    // Our load failed. Its pin went with it; the message is the loader's (unless a later load of the same key
    // failed too before we woke, in which case that one's message is what is left).
    std::string msg = "the load failed";
    if (auto it = c->_failures.find(_index); it != c->_failures.end()) msg = it->second.message;
    _cache = nullptr;
    lock.unlock();
    fail("expert cache: loading expert (layer {}, expert {}) failed: {}", _key.layer, _key.expert, msg);
}

void* expert_handle::data() const {
    MOE_CHECK(_cache != nullptr && ready());
    return _data;
}

void expert_handle::reset() {
    if (!_cache) return;
    _cache->unpin(_index, _epoch);
    _cache = nullptr;
    _ready = false;
    _data = nullptr;
}

// ---- expert_cache -----------------------------------------------------------------------------------------

bool expert_cache::filter::evictable(expert_key k) const {
    const auto& ks = cache->_keys[cache->index(k)];
    return ks.state == residency::RESIDENT && ks.pins == 0;
}

expert_cache::expert_cache(const expert_cache_config& cfg, memory_tier& tier, expert_loader& loader,
                           std::unique_ptr<eviction_policy> policy)
    : _tier(tier), _loader(loader), _policy(std::move(policy)), _n_layers(cfg.n_layers), _n_experts(cfg.n_experts) {
    MOE_CHECK(_policy != nullptr);
    if (cfg.n_layers == 0 || cfg.n_experts == 0)
        fail("expert cache: expected n_layers > 0 and n_experts > 0, got {} and {}", cfg.n_layers, cfg.n_experts);
    uint64_t n_keys = uint64_t(cfg.n_layers) * cfg.n_experts;
    if (n_keys >= k_no_key)
        fail("expert cache: {} layers x {} experts is more keys than supported (< 2^32)", cfg.n_layers, cfg.n_experts);
    _bytes.resize(n_keys);
    for (uint32_t i = 0; i < n_keys; i++) {
        expert_key k = key_of(i);
        uint64_t b = cfg.expert_bytes ? cfg.expert_bytes(k) : tier.slot_bytes();
        if (b > tier.slot_bytes())
            fail(
                "expert cache: expert (layer {}, expert {}) is {} bytes but the {} tier's slots hold {} bytes; "
                "size the tier for the largest expert",
                k.layer, k.expert, b, tier_kind_name(tier.kind()), tier.slot_bytes());
        _bytes[i] = b;
    }
    _keys.resize(n_keys);
    _slot_owner.assign(tier.n_slots(), k_no_key);
    _stats.resize(cfg.n_layers);
    _filter.cache = this;
}

expert_cache::~expert_cache() {
    std::unique_lock<std::mutex> lock(_mu);
    _cv.wait(lock, [&] { return _n_loading == 0; });
    for (uint32_t s = 0; s < _slot_owner.size(); s++) {
        uint32_t idx = _slot_owner[s];
        if (idx == k_no_key) continue;
        MOE_CHECK(_keys[idx].pins == 0);  // a live handle would outlive its cache
        _tier.free_slot(s);
    }
}

uint32_t expert_cache::index(expert_key key) const {
    if (key.layer >= _n_layers || key.expert >= _n_experts)
        fail("expert cache: key (layer {}, expert {}) is outside the key space ({} layers x {} experts)", key.layer,
             key.expert, _n_layers, _n_experts);
    return key.layer * _n_experts + key.expert;
}

std::optional<uint32_t> expert_cache::take_slot_locked(expert_key key, uint64_t bytes) {
    // Per-layer quota policies may want a victim even while the tier has free slots; when their victim set is
    // all pinned we still use a free slot rather than fail (the tier budget, not the quota, is the hard limit).
    bool evict_first = _policy->must_evict(key, _n_resident + _n_loading, _tier.n_slots());
    if (!evict_first)
        if (auto s = _tier.alloc_slot(bytes)) return s;
    std::optional<expert_key> v = _policy->victim(key, _filter);
    if (!v) return evict_first ? _tier.alloc_slot(bytes) : std::nullopt;
    uint32_t vi = index(*v);
    key_state& vs = _keys[vi];
    MOE_CHECK(vs.state == residency::RESIDENT && vs.pins == 0);  // the policy must honour the filter
    _policy->erase(*v);
    vs.state = residency::ABSENT;
    auto& vst = _stats[v->layer];
    if (vs.prefetched) {  // brought by prefetch() and never used: the prefetcher's wasted bytes
        vst.prefetch_unused_evictions++;
        vst.prefetch_unused_bytes += _bytes[vi];
    }
    vs.prefetched = false;
    _slot_owner[vs.slot] = k_no_key;
    _tier.free_slot(vs.slot);
    _n_resident--;
    vst.evictions++;
    auto s = _tier.alloc_slot(bytes);
    MOE_CHECK(s.has_value());
    return s;
}

load_request expert_cache::start_load_locked(uint32_t idx, uint32_t slot, bool prefetch, const access_info& access) {
    key_state& ks = _keys[idx];
    expert_key key = key_of(idx);
    ks.state = residency::LOADING;
    ks.slot = slot;
    ks.epoch++;
    ks.pins = prefetch ? 0 : 1;
    ks.demanded = !prefetch;
    ks.prefetched = prefetch;
    ks.access = access;
    _slot_owner[slot] = idx;
    _n_loading++;
    // The policy hears of the expert when it takes its slot, not when the load completes: per-layer quota
    // policies count a layer's slots through it, and a layer with loads in flight must not look under quota
    // (it would take free slots that other layers' quotas need). The victim filter still skips LOADING experts.
    _policy->insert(key, access);
    auto& st = _stats[key.layer];
    st.loads++;
    if (prefetch) st.prefetch_loads++;
    return load_request{key, _tier.slot_data(slot), _bytes[idx], slot, prefetch};
}

void expert_cache::issue(const load_request& req, uint32_t idx, uint32_t epoch) {
    load_ticket ticket{this, (uint64_t(epoch) << 32) | idx};
    try {
        _loader.load(req, ticket);
    } catch (const std::exception& e) {
        ticket.fail(e.what());
    }
}

expert_handle expert_cache::acquire(expert_key key, const access_info& access, bool for_prefetch) {
    uint32_t idx = index(key);
    expert_handle h;
    h._key = key;
    h._index = idx;
    h._bytes = _bytes[idx];
    load_request req;
    {
        std::lock_guard<std::mutex> lock(_mu);
        key_state& ks = _keys[idx];
        auto& st = _stats[key.layer];
        if (ks.state == residency::RESIDENT) {
            st.hits++;
            if (ks.prefetched) {
                st.prefetch_hits++;
                ks.prefetched = false;
            }
            ks.pins++;
            _policy->touch(key, access);
            h._cache = this;
            h._epoch = ks.epoch;
            h._slot = ks.slot;
            h._data = _tier.slot_data(ks.slot);
            h._ready = true;
            return h;
        }
        if (ks.state == residency::LOADING) {
            st.misses++;
            st.joins++;
            ks.pins++;
            if (!ks.demanded) {  // a demand joins a prefetch: it is used now, touch the policy on arrival
                st.prefetch_joins++;
                ks.demanded = true;
                ks.prefetched = false;
                ks.access = access;
            }
            h._cache = this;
            h._epoch = ks.epoch;
            h._slot = ks.slot;
            return h;
        }
        auto slot = take_slot_locked(key, _bytes[idx]);
        if (!slot)
            fail(
                "expert cache: all {} slots pinned or loading, none can take expert (layer {}, expert {}); the {} "
                "budget ({} in slots of {}) must hold at least top_k x concurrently pinned layers experts",
                _tier.n_slots(), key.layer, key.expert, tier_kind_name(_tier.kind()),
                format_bytes(_tier.budget_bytes()), format_bytes(_tier.slot_bytes()));
        st.misses++;
        req = start_load_locked(idx, *slot, false, access);
        // On behalf of a prefetch above: scheduled as one, and withdrawn as one (a cancelled load, not a failure)
        // unless a demand joins it here.
        req.prefetch = for_prefetch;
        if (for_prefetch) ks.demanded = false;
        h._cache = this;
        h._epoch = ks.epoch;
        h._slot = *slot;
    }
    issue(req, idx, h._epoch);
    return h;
}

bool expert_cache::prefetch(expert_key key, const access_info& access) {
    uint32_t idx = index(key);
    load_request req;
    uint32_t epoch = 0;
    {
        std::lock_guard<std::mutex> lock(_mu);
        if (_keys[idx].state != residency::ABSENT) return false;
        auto slot = take_slot_locked(key, _bytes[idx]);
        if (!slot) return false;
        req = start_load_locked(idx, *slot, true, access);
        epoch = _keys[idx].epoch;
    }
    issue(req, idx, epoch);
    return true;
}

void expert_cache::load_done(uint64_t token, bool ok, std::string_view error) {
    finish_load(token, ok, false, error);
}

void expert_cache::load_cancelled(uint64_t token, std::string_view why) {
    finish_load(token, false, true, why);
}

void expert_cache::finish_load(uint64_t token, bool ok, bool cancelled, std::string_view error) {
    uint32_t idx = static_cast<uint32_t>(token);
    uint32_t epoch = static_cast<uint32_t>(token >> 32);
    {
        std::lock_guard<std::mutex> lock(_mu);
        MOE_CHECK(idx < _keys.size());
        key_state& ks = _keys[idx];
        // Exactly one completion per ticket: anything else is a loader bug.
        MOE_CHECK(ks.state == residency::LOADING && ks.epoch == epoch);
        expert_key key = key_of(idx);
        auto& st = _stats[key.layer];
        _n_loading--;
        if (ok) {
            ks.state = residency::RESIDENT;
            _n_resident++;
            st.bytes_loaded += _bytes[idx];
            if (ks.demanded) _policy->touch(key, ks.access);
        } else {
            // A cancelled prefetch nobody waits for is a withdrawn hint, not an error. Once a demand has joined
            // it, its waiters do see a failure, so it counts as one.
            if (cancelled && !ks.demanded)
                st.cancelled_loads++;
            else
                st.failed_loads++;
            _policy->erase(key);
            ks.state = residency::ABSENT;
            ks.pins = 0;  // the waiters' pins die with the load; their wait() reports the error
            ks.prefetched = false;
            ks.demanded = false;
            _slot_owner[ks.slot] = k_no_key;
            _tier.free_slot(ks.slot);
            failure& f = _failures[idx];
            f.epoch = epoch;
            f.message.assign(error.empty() ? std::string_view("unknown error") : error);
        }
        // Notify under the lock: once _n_loading can read 0, the destructor may run and destroy _cv, so the
        // completing thread must be done with it before it lets go of the mutex (TSan caught exactly this).
        _cv.notify_all();
    }
}

void expert_cache::unpin(uint32_t idx, uint32_t epoch) {
    std::lock_guard<std::mutex> lock(_mu);
    key_state& ks = _keys[idx];
    // A pin on a failed load (ABSENT, same epoch) or on an older load is already gone.
    if (ks.epoch != epoch || ks.state == residency::ABSENT) return;
    MOE_CHECK(ks.pins > 0);
    ks.pins--;
}

residency expert_cache::state(expert_key key) const {
    uint32_t idx = index(key);
    std::lock_guard<std::mutex> lock(_mu);
    return _keys[idx].state;
}

uint32_t expert_cache::pins(expert_key key) const {
    uint32_t idx = index(key);
    std::lock_guard<std::mutex> lock(_mu);
    return _keys[idx].pins;
}

uint32_t expert_cache::n_resident() const {
    std::lock_guard<std::mutex> lock(_mu);
    return _n_resident;
}

uint32_t expert_cache::n_loading() const {
    std::lock_guard<std::mutex> lock(_mu);
    return _n_loading;
}

cache_stats expert_cache::stats() const {
    std::lock_guard<std::mutex> lock(_mu);
    return cache_stats{_stats};
}

void expert_cache::reset_stats() {
    std::lock_guard<std::mutex> lock(_mu);
    for (auto& s : _stats) s = layer_stats{};
}

}  // namespace moe
