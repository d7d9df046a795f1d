// The prefetcher (see prefetcher.h): guesses per layer, issue with deadlines, stale-hint cancellation, counters.
#include "prefetch/prefetcher.h"

#include <algorithm>

#include "cache/expert_cache.h"
#include "cache/expert_loader.h"
#include "common/error.h"
#include "prefetch/speculative_gating.h"

namespace moe {

std::string_view prefetch_mode_name(prefetch_mode m) {
    switch (m) {
        case prefetch_mode::NONE:
            return "none";
        case prefetch_mode::SPEC:
            return "spec";
        case prefetch_mode::HISTORY:
            return "history";
        case prefetch_mode::BOTH:
            return "both";
    }
    return "?";
}

prefetch_mode parse_prefetch_mode(std::string_view text, std::string_view what) {
    for (prefetch_mode m : {prefetch_mode::NONE, prefetch_mode::SPEC, prefetch_mode::HISTORY, prefetch_mode::BOTH})
        if (text == prefetch_mode_name(m)) return m;
    fail("{} '{}': expected none, spec, history or both", what, text);
}

prefetcher_layer_stats& prefetcher_layer_stats::operator+=(const prefetcher_layer_stats& o) {
    needed += o.needed;
    predicted_needed += o.predicted_needed;
    guesses += o.guesses;
    issued += o.issued;
    already += o.already;
    skipped += o.skipped;
    cancelled += o.cancelled;
    return *this;
}

double prefetcher_layer_stats::prediction_recall() const {
    return needed == 0 ? 0.0 : double(predicted_needed) / double(needed);
}

namespace {
history_config history_config_for(uint32_t n_layers, uint32_t n_experts, uint32_t top_k, uint32_t max_batch) {
    history_config h;
    h.n_layers = n_layers;
    h.n_experts = n_experts;
    h.top_k = top_k;
    h.window = std::max(1u, max_batch);
    return h;
}
}  // namespace

prefetcher::prefetcher(const prefetch_config& cfg, uint32_t n_layers, uint32_t n_experts, uint32_t top_k,
                       uint32_t max_batch, expert_cache& cache, expert_loader* queue)
    : _cfg(cfg),
      _n_layers(n_layers),
      _n_experts(n_experts),
      _top_k(top_k),
      _cache(cache),
      _queue(queue),
      _history(history_config_for(n_layers, n_experts, top_k, max_batch)) {
    if (cfg.depth < 1) fail("prefetch depth {}: expected at least 1 (layers predicted ahead)", cfg.depth);
    if (cfg.per_layer < 0 || uint32_t(cfg.per_layer) > n_experts)
        fail("prefetch experts per layer {}: expected 0 (= top_k {}) up to the {} experts of a layer", cfg.per_layer,
             top_k, n_experts);
    // Depth beyond the layer count would guess a layer of the step after next; n_layers already reaches the
    // same layer of the next token.
    _cfg.depth = std::min(cfg.depth, int(n_layers));
    _per_layer = cfg.per_layer ? uint32_t(cfg.per_layer) : std::min(top_k, n_experts);
    const size_t n_keys = size_t(n_layers) * n_experts;
    _deadline.assign(n_keys, k_never);
    _guessed_at.assign(n_keys, k_never);
    _outstanding.reserve(n_keys);
    _layer_deadline.assign(n_layers, k_never);
    _layer_issued.assign(n_layers, 0);
    _selected.assign(n_experts, 0);
    _guess.assign(size_t(_cfg.depth) * 2 * _per_layer, 0);
    _n_guess.assign(size_t(_cfg.depth), 0);
    _scratch_ids.assign(n_experts, 0);
    _scratch_scores.assign(n_experts, 0.0f);
    _stats.resize(n_layers);
}

prefetcher::~prefetcher() = default;

int prefetcher::n_spec_layers(uint32_t layer) const {
    MOE_CHECK(layer < _n_layers);
    return uses_spec() ? std::min(_cfg.depth, int(_n_layers - 1 - layer)) : 0;
}

void prefetcher::reset_stats() {
    for (auto& s : _stats) s = prefetcher_layer_stats{};
}

void prefetcher::routed(uint32_t layer, uint32_t first_pos, int n_tok, std::span<const int> ids, uint32_t row_len) {
    const size_t w = row_len ? row_len : _top_k;
    MOE_CHECK(layer < _n_layers && n_tok >= 1 && w <= _top_k && ids.size() >= size_t(n_tok) * w);
    if (_last_layer == ~0u || layer <= _last_layer) ++_step;
    _last_layer = layer;
    _last_pos = first_pos + uint32_t(n_tok) - 1;
    const uint64_t now = _step * _n_layers + layer;
    std::fill(_selected.begin(), _selected.end(), uint8_t(0));
    for (int i = 0; i < n_tok; ++i) {
        const auto row = ids.subspan(size_t(i) * w, w);
        _history.observe(first_pos + uint32_t(i), layer, row);
        for (int e : row) _selected[size_t(e)] = 1;
    }
    if (n_tok == 1) {  // decode: the step the guesses were made for
        prefetcher_layer_stats& st = _stats[layer];
        for (int e : ids.first(w)) {
            ++st.needed;
            if (_guessed_at[index({layer, uint32_t(e)})] == now) ++st.predicted_needed;
        }
    }
    cancel_stale(now);
}

// Every prefetch issued for a layer time before `now`, or for `now` and not selected, is a stale hint: cancel it
// if it is still queued. Those for `now` that were selected have been acquired (used); all leave the list.
void prefetcher::cancel_stale(uint64_t now) {
    for (size_t i = 0; i < _outstanding.size();) {
        const uint32_t idx = _outstanding[i];
        const uint64_t d = _deadline[idx];
        if (d > now) {
            ++i;
            continue;
        }
        const expert_key key{idx / _n_experts, idx % _n_experts};
        const bool used = d == now && _selected[key.expert];
        if (!used && _queue && _queue->cancel(key)) ++_stats[key.layer].cancelled;
        _deadline[idx] = k_never;
        _outstanding[i] = _outstanding.back();
        _outstanding.pop_back();
    }
}

// The room rule: after one more prefetch, even if every load in flight stays in flight, top_k slots must remain
// that the next layer's demand acquires can take (free, or resident and unpinned once this layer's pins drop), so
// a wrong guess never makes a demand fail. Prefetches that arrived and wait for their layer count as taken too:
// otherwise, with loads that complete at once, guesses would keep evicting the previous guesses.
bool prefetcher::room_for_one_more() const {
    uint64_t waiting = 0;
    for (uint32_t idx : _outstanding)
        waiting += _cache.state({idx / _n_experts, idx % _n_experts}) == residency::RESIDENT;
    return uint64_t(_cache.n_slots()) >= uint64_t(_cache.n_loading()) + waiting + 1 + uint64_t(_top_k);
}

uint32_t prefetcher::issue(expert_key key, uint64_t deadline, uint32_t order, uint64_t time, uint32_t distance) {
    const uint32_t idx = index(key);
    if (_guessed_at[idx] == deadline) return 0;  // guessed for this layer time from an earlier layer: tried once
    _guessed_at[idx] = deadline;
    prefetcher_layer_stats& st = _stats[key.layer];
    ++st.guesses;
    if (_cache.state(key) != residency::ABSENT) {
        ++st.already;
        // Our own prefetch for an earlier layer time is now also wanted later: keep it from being cancelled.
        if (_deadline[idx] != k_never) _deadline[idx] = std::max(_deadline[idx], deadline);
        return 0;
    }
    if (_layer_deadline[key.layer] != deadline) _layer_deadline[key.layer] = deadline, _layer_issued[key.layer] = 0;
    if (_layer_issued[key.layer] >= _per_layer || !room_for_one_more()) {
        ++st.skipped;
        return 0;
    }
    if (_queue) _queue->set_priority(key, (deadline << 8) | std::min(order, 255u));
    if (!_cache.prefetch(key, access_info{time + distance, order, 0.0f})) {
        ++st.skipped;
        return 0;
    }
    ++st.issued;
    ++_layer_issued[key.layer];
    if (_deadline[idx] == k_never) _outstanding.push_back(idx);
    _deadline[idx] = deadline;
    return 1;
}

uint32_t prefetcher::prefetch(uint32_t layer, uint64_t time, std::span<const float> spec_logits) {
    MOE_CHECK(layer < _n_layers && layer == _last_layer);
    const int n_spec = spec_logits.empty() ? 0 : n_spec_layers(layer);
    MOE_CHECK(spec_logits.size() >= size_t(n_spec) * _n_experts);
    const uint64_t now = _step * _n_layers + layer;
    const uint32_t pos = _last_pos;
    const size_t width = 2 * size_t(_per_layer);
    uint32_t started = 0;
    for (int dist = 1; dist <= _cfg.depth; ++dist) {
        const uint32_t target = layer + uint32_t(dist);
        const bool next_token = target >= _n_layers;  // past the last layer: the next token's first layers
        const uint32_t tl = next_token ? target - _n_layers : target;
        int* list = _guess.data() + size_t(dist - 1) * width;
        int n = 0;
        if (uses_spec() && dist <= n_spec)
            n = top_experts(spec_logits.subspan(size_t(dist - 1) * _n_experts, _n_experts), int(_per_layer),
                            std::span<int>(list, _per_layer));
        if (uses_history()) {
            // Evidence one layer up: this token's real choice for the first guessed layer, then the previous
            // guessed layer's best top_k (so deeper guesses chain). None above layer 0.
            std::span<const int> above;
            if (tl > 0)
                above = dist == 1 ? _history.row(pos, layer)
                                  : std::span<const int>(list - width,
                                                         std::min<size_t>(_top_k, size_t(_n_guess[size_t(dist - 2)])));
            // Evidence one token back: the previous token at this layer; for the next token, this one.
            std::span<const int> before =
                next_token ? _history.row(pos, tl) : (pos > 0 ? _history.row(pos - 1, tl) : std::span<const int>());
            const int h = _history.predict(tl, above, before, int(_per_layer), _scratch_ids, _scratch_scores);
            for (int i = 0; i < h; ++i)
                if (std::find(list, list + n, _scratch_ids[size_t(i)]) == list + n) list[n++] = _scratch_ids[size_t(i)];
        }
        _n_guess[size_t(dist - 1)] = n;
        for (int r = 0; r < n; ++r)
            started += issue({tl, uint32_t(list[r])}, now + uint64_t(dist), uint32_t(r), time, uint32_t(dist));
    }
    return started;
}

}  // namespace moe
