// Co-activation counting and prediction (see history_predictor.h).
#include "prefetch/history_predictor.h"

#include <algorithm>

#include "common/error.h"

namespace moe {

history_predictor::history_predictor(const history_config& cfg) : _cfg(cfg) {
    if (cfg.n_layers == 0 || cfg.n_experts == 0 || cfg.top_k == 0 || cfg.window == 0)
        fail("history predictor: expected n_layers, n_experts, top_k and window > 0, got {}, {}, {}, {}", cfg.n_layers,
             cfg.n_experts, cfg.top_k, cfg.window);
    if (cfg.top_k > 255) fail("history predictor: top_k {} is more than the 255 experts a row can hold", cfg.top_k);
    const size_t L = cfg.n_layers, E = cfg.n_experts, W = cfg.window;
    _c_layer.assign(L * E * E, 0);
    _n_layer.assign(L * E, 0);
    _c_token.assign(L * E * E, 0);
    _n_token.assign(L * E, 0);
    _rows.assign(L * W * cfg.top_k, 0);
    _row_pos.assign(L * W, k_no_pos);
    _row_len.assign(L * W, 0);
}

std::span<const int> history_predictor::row(uint32_t pos, uint32_t layer) const {
    if (layer >= _cfg.n_layers || pos == k_no_pos) return {};
    const size_t s = slot(pos, layer);
    if (_row_pos[s] != pos) return {};
    return std::span<const int>(_rows.data() + s * _cfg.top_k, _row_len[s]);
}

void history_predictor::count(std::vector<uint32_t>& c, std::vector<uint32_t>& n, uint32_t layer,
                              std::span<const int> from, std::span<const int> to) {
    const size_t E = _cfg.n_experts;
    for (int i : from) {
        ++n[size_t(layer) * E + size_t(i)];
        uint32_t* ci = c.data() + (size_t(layer) * E + size_t(i)) * E;
        for (int j : to) ++ci[size_t(j)];
    }
}

void history_predictor::observe(uint32_t pos, uint32_t layer, std::span<const int> ids) {
    if (layer >= _cfg.n_layers) fail("history predictor: layer {} is outside the {} MoE layers", layer, _cfg.n_layers);
    if (pos == k_no_pos) fail("history predictor: position {} is too large", pos);
    ids = ids.first(std::min<size_t>(ids.size(), _cfg.top_k));
    for (int e : ids)
        if (e < 0 || uint32_t(e) >= _cfg.n_experts)
            fail("history predictor: expert {} at layer {} is outside [0, {})", e, layer, _cfg.n_experts);
    if (layer == 0) {
        if (_last_pos0 != k_no_pos && pos <= _last_pos0)  // a new sequence: its rows must not pair with the old
            std::fill(_row_pos.begin(), _row_pos.end(), k_no_pos);
        _last_pos0 = pos;
    }
    if (layer > 0)
        if (auto above = row(pos, layer - 1); !above.empty()) count(_c_layer, _n_layer, layer, above, ids);
    if (pos > 0)
        if (auto before = row(pos - 1, layer); !before.empty()) count(_c_token, _n_token, layer, before, ids);
    const size_t s = slot(pos, layer);
    std::copy(ids.begin(), ids.end(), _rows.begin() + long(s * _cfg.top_k));
    _row_pos[s] = pos;
    _row_len[s] = uint8_t(ids.size());
}

void history_predictor::score(uint32_t layer, std::span<const int> above, std::span<const int> before,
                              std::span<float> out) const {
    MOE_CHECK(layer < _cfg.n_layers && out.size() >= _cfg.n_experts);
    MOE_CHECK(layer > 0 || above.empty());
    const size_t E = _cfg.n_experts;
    std::fill(out.begin(), out.begin() + long(E), 0.0f);
    // Each kind of evidence adds the mean over its experts of the estimated P(j | i).
    auto add = [&](const std::vector<uint32_t>& c, const std::vector<uint32_t>& n, std::span<const int> from) {
        if (from.empty()) return;
        const float share = 1.0f / float(from.size());
        for (int i : from) {
            MOE_CHECK(i >= 0 && size_t(i) < E);
            const uint32_t seen = n[size_t(layer) * E + size_t(i)];
            if (seen == 0) continue;
            const uint32_t* ci = c.data() + (size_t(layer) * E + size_t(i)) * E;
            const float w = share / float(seen);
            for (size_t j = 0; j < E; ++j) out[j] += w * float(ci[j]);
        }
    };
    add(_c_layer, _n_layer, above);
    add(_c_token, _n_token, before);
}

int history_predictor::predict(uint32_t layer, std::span<const int> above, std::span<const int> before, int n,
                               std::span<int> out, std::span<float> scratch) const {
    score(layer, above, before, scratch);
    n = std::clamp(n, 0, int(std::min<size_t>(out.size(), _cfg.n_experts)));
    int got = 0;
    // Repeated scan, as in top_experts: strict '>' keeps the lower id on ties; taken experts are marked with a
    // negative score (every real score is >= 0), and only positive scores are predictions.
    for (; got < n; ++got) {
        int best = -1;
        for (int e = 0; e < int(_cfg.n_experts); ++e)
            if (scratch[size_t(e)] > 0.0f && (best < 0 || scratch[size_t(e)] > scratch[size_t(best)])) best = e;
        if (best < 0) break;
        out[size_t(got)] = best;
        scratch[size_t(best)] = -1.0f;
    }
    return got;
}

uint32_t history_predictor::layer_count(uint32_t layer, uint32_t from, uint32_t to) const {
    MOE_CHECK(layer < _cfg.n_layers && from < _cfg.n_experts && to < _cfg.n_experts);
    return _c_layer[(size_t(layer) * _cfg.n_experts + from) * _cfg.n_experts + to];
}
uint32_t history_predictor::layer_seen(uint32_t layer, uint32_t from) const {
    MOE_CHECK(layer < _cfg.n_layers && from < _cfg.n_experts);
    return _n_layer[size_t(layer) * _cfg.n_experts + from];
}
uint32_t history_predictor::token_count(uint32_t layer, uint32_t from, uint32_t to) const {
    MOE_CHECK(layer < _cfg.n_layers && from < _cfg.n_experts && to < _cfg.n_experts);
    return _c_token[(size_t(layer) * _cfg.n_experts + from) * _cfg.n_experts + to];
}
uint32_t history_predictor::token_seen(uint32_t layer, uint32_t from) const {
    MOE_CHECK(layer < _cfg.n_layers && from < _cfg.n_experts);
    return _n_token[size_t(layer) * _cfg.n_experts + from];
}

}  // namespace moe
