// The MoE decoder forward pass (see forward.h). Invariant 2 (offloading never changes the answer) rests on two
// things here: expert outputs are kept per rank and summed by backend.weighted_sum in rank order after all of
// them are computed, and nothing in the arithmetic depends on whether an acquire hit or waited.
#include "runtime/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "prefetch/streamer.h"

namespace moe {

forward_pass::forward_pass(const model_desc& desc, const model_weights& weights, backend& be, expert_cache& cache,
                           const forward_config& cfg, streamer* loader_streamer)
    : _d(desc), _w(weights), _be(be), _cache(cache), _cfg(cfg), _streamer(loader_streamer) {
    check_forward_supported(desc, desc.name);
    if (cfg.n_ctx <= 0) fail("forward pass: context length (n_ctx) must be > 0, found {}", cfg.n_ctx);
    if (cfg.n_batch <= 0) fail("forward pass: batch size (n_batch) must be > 0, found {}", cfg.n_batch);
    MOE_CHECK(int(weights.layers.size()) == desc.n_layers);
    const size_t L = size_t(desc.n_layers), C = size_t(cfg.n_ctx), Hkv = size_t(desc.n_head_kv);
    const size_t K = size_t(desc.n_experts_used), D = size_t(desc.n_embd), B = size_t(cfg.n_batch);
    _k_cache.assign(L * C * Hkv * size_t(desc.head_dim_k), 0.0f);
    _v_cache.assign(L * C * Hkv * size_t(desc.head_dim_v), 0.0f);
    _x.assign(B * D, 0.0f);
    _xn.assign(B * D, 0.0f);
    _q.assign(size_t(desc.n_head) * size_t(desc.head_dim_k), 0.0f);
    _att.assign(size_t(desc.n_head) * size_t(desc.head_dim_v), 0.0f);
    _tmp.assign(D, 0.0f);
    _scores.assign(C, 0.0f);
    _router.assign(size_t(desc.n_experts), 0.0f);
    _probs.assign(size_t(desc.n_experts), 0.0f);
    _ids.assign(B * K, 0);
    _weights.assign(B * K, 0.0f);
    _pf_ids.assign(K, 0);
    _pf_weights.assign(K, 0.0f);
    _gate.assign(size_t(std::max(desc.n_ff_exp, desc.n_ff_shexp)), 0.0f);
    _up.assign(size_t(std::max(desc.n_ff_exp, desc.n_ff_shexp)), 0.0f);
    _ys.assign(B * K * D, 0.0f);
    _y_ptrs.assign(B * K, nullptr);
    for (size_t r = 0; r < B * K; ++r) _y_ptrs[r] = _ys.data() + r * D;
    _used.assign(size_t(desc.n_experts), 0);
    _visit.assign(size_t(desc.n_experts), 0);
    _group.assign(K, 0);
    _handles.resize(K);
    _logits.assign(size_t(desc.n_vocab), 0.0f);
}

uint64_t forward_pass::workspace_bytes() const {
    uint64_t f = _k_cache.size() + _v_cache.size() + _x.size() + _xn.size() + _q.size() + _att.size() + _tmp.size() +
                 _scores.size() + _router.size() + _probs.size() + _weights.size() + _pf_weights.size() + _gate.size() +
                 _up.size() + _ys.size() + _logits.size();
    return f * sizeof(float) + (_ids.size() + _pf_ids.size()) * sizeof(int) + _y_ptrs.size() * sizeof(void*) +
           _handles.size() * sizeof(expert_handle) + _used.size() + (_visit.size() + _group.size()) * sizeof(int);
}

const float* forward_pass::eval(std::span<const int> tokens, float* all_logits) {
    const int n = int(tokens.size());
    if (n <= 0 || n > _cfg.n_batch)
        fail("{}: eval of {} tokens: expected 1..{} (n_batch) per call", _d.name, tokens.size(), _cfg.n_batch);
    for (int t : tokens)
        if (t < 0 || t >= _d.n_vocab) fail("{}: token id {} is outside the vocabulary [0, {})", _d.name, t, _d.n_vocab);
    if (_n_past + n > _cfg.n_ctx)
        fail("{}: context is full: {} positions decoded, {} more requested, n_ctx = {}; raise the context length",
             _d.name, _n_past, n, _cfg.n_ctx);
    const size_t D = size_t(_d.n_embd), V = size_t(_d.n_vocab);
    for (int i = 0; i < n; ++i)
        std::memcpy(_x.data() + size_t(i) * D, _w.tok_embd.data() + size_t(tokens[size_t(i)]) * D, D * sizeof(float));
    try {
        for (int il = 0; il < _d.n_layers; ++il) {
            for (int i = 0; i < n; ++i) attention_step(il, i);
            moe_step(il, n);
        }
    } catch (...) {
        // A failed load: drop every pin of the group (a pinned slot left behind could starve the next acquire
        // at the smallest budget). n_past is unchanged, so the sequence is as it was before the call.
        for (auto& h : _handles) h.reset();
        throw;
    }
    for (int i = 0; i < n; ++i) {
        if (!all_logits && i + 1 < n) continue;
        float* out = all_logits ? all_logits + size_t(i) * V : _logits.data();
        _be.rmsnorm(_x.data() + size_t(i) * D, _w.output_norm.data(), _xn.data(), _d.n_embd, float(_d.rms_eps));
        _be.matvec(tensor_type::F32, _w.output.data(), _xn.data(), out, _d.n_embd, _d.n_vocab);
        if (all_logits && i + 1 == n) std::memcpy(_logits.data(), out, V * sizeof(float));
    }
    _n_past += n;
    _stats.n_tokens += uint64_t(n);
    return _logits.data();
}

// Token t of the batch (position n_past + t): the attention block, residual included. The KV rows of earlier
// tokens of the batch are already written, so it sees exactly what a token-by-token decode would.
void forward_pass::attention_step(int il, int t) {
    const layer_weights& L = _w.layers[size_t(il)];
    const int H = _d.n_head, Hkv = _d.n_head_kv, hk = _d.head_dim_k, hv = _d.head_dim_v, D = _d.n_embd;
    const int pos = _n_past + t;
    const float eps = float(_d.rms_eps);
    const size_t row_k = size_t(Hkv) * size_t(hk), row_v = size_t(Hkv) * size_t(hv);
    float* x = _x.data() + size_t(t) * size_t(D);
    float* xn = _xn.data() + size_t(t) * size_t(D);
    float* k = _k_cache.data() + (size_t(il) * size_t(_cfg.n_ctx) + size_t(pos)) * row_k;
    float* v = _v_cache.data() + (size_t(il) * size_t(_cfg.n_ctx) + size_t(pos)) * row_v;

    _be.rmsnorm(x, L.attn_norm.data(), xn, D, eps);
    _be.matvec(tensor_type::F32, L.wq.data(), xn, _q.data(), D, int64_t(H) * hk);
    _be.matvec(tensor_type::F32, L.wk.data(), xn, k, D, int64_t(row_k));
    _be.matvec(tensor_type::F32, L.wv.data(), xn, v, D, int64_t(row_v));
    if (!L.bq.empty()) {
        _be.add(_q.data(), L.bq.data(), int64_t(H) * hk);
        _be.add(k, L.bk.data(), int64_t(row_k));
        _be.add(v, L.bv.data(), int64_t(row_v));
    }
    if (L.q_norm.size() == size_t(hk)) {  // qwen3moe: RMSNorm over each head before RoPE
        for (int h = 0; h < H; ++h)
            _be.rmsnorm(_q.data() + size_t(h) * hk, L.q_norm.data(), _q.data() + size_t(h) * hk, hk, eps);
        for (int h = 0; h < Hkv; ++h) _be.rmsnorm(k + size_t(h) * hk, L.k_norm.data(), k + size_t(h) * hk, hk, eps);
    } else if (!L.q_norm.empty()) {  // olmoe: RMSNorm over the whole q and k projections
        _be.rmsnorm(_q.data(), L.q_norm.data(), _q.data(), int64_t(H) * hk, eps);
        _be.rmsnorm(k, L.k_norm.data(), k, int64_t(row_k), eps);
    }
    _be.rope(_q.data(), H, hk, _d.n_rot, pos, _w.rope_freq_base, _d.rope);
    _be.rope(k, Hkv, hk, _d.n_rot, pos, _w.rope_freq_base, _d.rope);
    const float* k_all = _k_cache.data() + size_t(il) * size_t(_cfg.n_ctx) * row_k;
    const float* v_all = _v_cache.data() + size_t(il) * size_t(_cfg.n_ctx) * row_v;
    _be.attention(_q.data(), k_all, v_all, _att.data(), _scores.data(), H, Hkv, hk, hv, pos + 1,
                  float(1.0 / std::sqrt(double(hk))));
    _be.matvec(tensor_type::F32, L.wo.data(), _att.data(), _tmp.data(), int64_t(H) * hv, D);
    _be.add(x, _tmp.data(), D);
}

void forward_pass::moe_step(int il, int n_tok) {
    const layer_weights& L = _w.layers[size_t(il)];
    const int D = _d.n_embd, E = _d.n_experts, K = _d.n_experts_used;
    std::fill(_used.begin(), _used.end(), uint8_t(0));
    for (int i = 0; i < n_tok; ++i) {
        float* xn = _xn.data() + size_t(i) * size_t(D);
        _be.rmsnorm(_x.data() + size_t(i) * size_t(D), L.ffn_norm.data(), xn, D, float(_d.rms_eps));
        _be.matvec(tensor_type::F32, L.router.data(), xn, _router.data(), D, E);
        int* ids = _ids.data() + size_t(i) * size_t(K);
        _be.route(_router.data(), _probs.data(), E, K, _d.gating, _d.norm_topk, float(_d.weights_scale), ids,
                  _weights.data() + size_t(i) * size_t(K));
        for (int r = 0; r < K; ++r) _used[size_t(ids[r])] = 1;
        if (_observer)
            _observer(_n_past + i, L.moe_layer, std::span<const int>(ids, size_t(K)),
                      std::span<const float>(_weights.data() + size_t(i) * size_t(K), size_t(K)));
    }
    if (_cfg.prefetch && n_tok == 1) prefetch_next(il);

    // Visit the selected experts, pinning up to top_k at once (what the smallest budget holds) so their loads
    // overlap; each is applied to every token of the batch that chose it. Experts already in the cache (or on
    // their way) go first, in id order, then the absent ones: a miss must not evict an expert this layer is
    // about to use (with id order alone, a 3-slot cache thrashes on 2 layers x top-2 where `moe sim`, whose
    // victims exclude the row's experts, hits half the time). Summation is by rank, so the order never changes
    // the result.
    int n_visit = 0;
    for (int e = 0; e < E; ++e)
        if (_used[size_t(e)] && _cache.state({uint32_t(L.moe_layer), uint32_t(e)}) != residency::ABSENT)
            _visit[size_t(n_visit++)] = e, _used[size_t(e)] = 2;  // 2: queued already
    for (int e = 0; e < E; ++e)
        if (_used[size_t(e)] == 1) _visit[size_t(n_visit++)] = e;
    int n_group = 0;
    for (int v = 0; v < n_visit; ++v) {
        const int e = _visit[size_t(v)];
        // The policy hears the best rank/weight any token gave this expert (decode: exactly the router's).
        uint32_t rank = uint32_t(K);
        float weight = 0.0f;
        for (int i = 0; i < n_tok; ++i)
            for (int r = 0; r < K; ++r)
                if (_ids[size_t(i) * size_t(K) + size_t(r)] == e && uint32_t(r) < rank)
                    rank = uint32_t(r), weight = _weights[size_t(i) * size_t(K) + size_t(r)];
        const expert_key key{uint32_t(L.moe_layer), uint32_t(e)};
        _handles[size_t(n_group)] = _cache.acquire(key, access_info{_clock, rank, weight});
        ++_stats.n_acquires;
        if (!_handles[size_t(n_group)].ready()) {
            ++_stats.n_expert_waits;
            if (_streamer) _streamer->promote(key);  // a demand that joined a queued prefetch overtakes the rest
        }
        _group[size_t(n_group++)] = e;
        if (n_group == K) apply_group(L.moe_layer, n_group, n_tok), n_group = 0;
    }
    if (n_group) apply_group(L.moe_layer, n_group, n_tok);
    ++_clock;
    for (int i = 0; i < n_tok; ++i) {
        _be.weighted_sum(_y_ptrs.data() + size_t(i) * size_t(K), _weights.data() + size_t(i) * size_t(K), K,
                         _tmp.data(), D);
        if (!L.sh_gate.empty()) shared_expert(L, _xn.data() + size_t(i) * size_t(D), _tmp.data());
        _be.add(_x.data() + size_t(i) * size_t(D), _tmp.data(), D);
    }
}

// Waits for the pinned group, applies each expert to the tokens that chose it (output slot = token, rank), unpins.
void forward_pass::apply_group(int moe_layer, int n_pinned, int n_tok) {
    const int K = _d.n_experts_used;
    const size_t D = size_t(_d.n_embd);
    for (int g = 0; g < n_pinned; ++g) {
        expert_handle& h = _handles[size_t(g)];
        h.wait();
        const int e = _group[size_t(g)];
        for (int i = 0; i < n_tok; ++i)
            for (int r = 0; r < K; ++r)
                if (_ids[size_t(i) * size_t(K) + size_t(r)] == e) {
                    const size_t slot = size_t(i) * size_t(K) + size_t(r);
                    expert_ffn(moe_layer, e, h.data(), _xn.data() + size_t(i) * D, _ys.data() + slot * D);
                    ++_stats.n_expert_uses;
                }
        h.reset();
    }
}

void forward_pass::prefetch_next(int il) {
    const int K = _d.n_experts_used;
    int next = -1;
    for (int j = il + 1; j < _d.n_layers && next < 0; ++j)
        if (_w.layers[size_t(j)].moe_layer >= 0) next = j;
    if (next < 0) return;
    const layer_weights& N = _w.layers[size_t(next)];
    // Speculative gating: the next router on this layer's FFN input (the residual stream changes little).
    _be.matvec(tensor_type::F32, N.router.data(), _xn.data(), _router.data(), _d.n_embd, _d.n_experts);
    _be.route(_router.data(), _probs.data(), _d.n_experts, K, _d.gating, _d.norm_topk, float(_d.weights_scale),
              _pf_ids.data(), _pf_weights.data());
    for (int r = 0; r < K; ++r) {
        // A prefetch still loading holds its slot (the cache neither evicts it nor lets acquire take it), so only
        // prefetch while, even if every load in flight stays in flight, this layer's and the next layer's top-k
        // can still be pinned: otherwise a wrong guess could make a demand acquire fail.
        if (uint64_t(_cache.n_slots()) < uint64_t(_cache.n_loading()) + 1 + 2 * uint64_t(K)) return;
        if (_cache.prefetch({uint32_t(N.moe_layer), uint32_t(_pf_ids[size_t(r)])},
                            access_info{_clock + 1, uint32_t(r), _pf_weights[size_t(r)]}))
            ++_stats.n_prefetches;
    }
}

// Qwen2-MoE's shared expert, resident and always on: out += sigmoid(g . xn) * down(silu(gate xn) * up xn), added
// after the routed sum (HF: routed + shared, then the residual).
void forward_pass::shared_expert(const layer_weights& L, const float* xn, float* out) {
    const int64_t D = _d.n_embd, F = _d.n_ff_shexp;
    float g = 0.0f;
    _be.matvec(tensor_type::F32, L.sh_gate_inp.data(), xn, &g, D, 1);
    _be.matvec(tensor_type::F32, L.sh_gate.data(), xn, _gate.data(), D, F);
    _be.matvec(tensor_type::F32, L.sh_up.data(), xn, _up.data(), D, F);
    _be.swiglu(_gate.data(), _up.data(), _gate.data(), F);
    _be.matvec(tensor_type::F32, L.sh_down.data(), _gate.data(), _att.data(), F, D);
    const float s = float(1.0 / (1.0 + std::exp(-double(g))));
    for (int64_t j = 0; j < D; ++j) out[j] += s * _att[size_t(j)];
}

void forward_pass::expert_ffn(int moe_layer, int expert, const void* slot, const float* xn, float* y) {
    // The slot holds the expert's ranges packed in layout order; find each part's bytes by walking them.
    const expert_entry& ee = _d.layout.at(moe_layer, expert);
    const int64_t D = _d.n_embd, F = _d.n_ff_exp;
    const uint8_t* base = static_cast<const uint8_t*>(slot);
    const uint8_t *gate = nullptr, *up = nullptr, *down = nullptr;
    tensor_type tg = tensor_type::F32, tu = tensor_type::F32, td = tensor_type::F32;
    uint64_t off = 0;
    for (const expert_range& r : ee.ranges) {
        const uint8_t* p = base + off;
        switch (r.part) {
            case expert_part::GATE:
                gate = p, tg = r.type;
                break;
            case expert_part::UP:
                up = p, tu = r.type;
                break;
            case expert_part::DOWN:
                down = p, td = r.type;
                break;
            case expert_part::GATE_UP:  // rows [0, F) gate, [F, 2F) up
                gate = p, tg = r.type, up = p + r.bytes / 2, tu = r.type;
                break;
            default:
                MOE_CHECK(false && "expert part not supported by forward_supported() archs");
        }
        off += r.bytes;
    }
    MOE_CHECK(gate && up && down);
    _be.matvec(tg, gate, xn, _gate.data(), D, F);
    _be.matvec(tu, up, xn, _up.data(), D, F);
    _be.swiglu(_gate.data(), _up.data(), _gate.data(), F);
    _be.matvec(td, down, _gate.data(), y, F, D);
}

}  // namespace moe
