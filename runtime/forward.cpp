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
    : _d(desc), _w(weights), _be(be), _cache(cache), _cfg(cfg), _streamer(loader_streamer), _rw(weights, be) {
    check_forward_supported(desc, desc.name);
    if (cfg.n_ctx <= 0) fail("forward pass: context length (n_ctx) must be > 0, found {}", cfg.n_ctx);
    if (cfg.n_batch <= 0) fail("forward pass: batch size (n_batch) must be > 0, found {}", cfg.n_batch);
    MOE_CHECK(int(weights.layers.size()) == desc.n_layers);
    const size_t L = size_t(desc.n_layers), C = size_t(cfg.n_ctx), Hkv = size_t(desc.n_head_kv);
    const size_t K = size_t(desc.n_experts_used), D = size_t(desc.n_embd), B = size_t(cfg.n_batch);
    const size_t F = size_t(std::max(desc.n_ff_exp, desc.n_ff_shexp));
    _k_cache = backend_array<float>(be, L * C * Hkv * size_t(desc.head_dim_k));
    _v_cache = backend_array<float>(be, L * C * Hkv * size_t(desc.head_dim_v));
    _x = backend_array<float>(be, B * D);
    _xn = backend_array<float>(be, B * D);
    _q = backend_array<float>(be, size_t(desc.n_head) * size_t(desc.head_dim_k));
    _att = backend_array<float>(be, size_t(desc.n_head) * size_t(desc.head_dim_v));
    _tmp = backend_array<float>(be, D);
    _scores = backend_array<float>(be, size_t(desc.n_head) * C);
    _router = backend_array<float>(be, size_t(desc.n_experts));
    _probs = backend_array<float>(be, size_t(desc.n_experts));
    _ids_dev = backend_array<int>(be, B * K);
    _weights_dev = backend_array<float>(be, B * K);
    _gate = backend_array<float>(be, F);
    _up = backend_array<float>(be, F);
    _ys = backend_array<float>(be, B * K * D);
    _sh_logit = backend_array<float>(be, 1);
    _logits_dev = backend_array<float>(be, size_t(desc.n_vocab));
    _ids.assign(B * K, 0);
    _weights.assign(B * K, 0.0f);
    for (int il = 0; il < desc.n_layers; ++il)
        if (weights.layers[size_t(il)].moe_layer >= 0) _moe_layers.push_back(il);
    if (cfg.prefetch.mode != prefetch_mode::NONE) {
        _prefetcher = std::make_unique<prefetcher>(cfg.prefetch, uint32_t(_moe_layers.size()),
                                                   uint32_t(desc.n_experts), uint32_t(K), uint32_t(B), cache,
                                                   loader_streamer);
        const size_t n_spec = _prefetcher->n_spec_layers(0) > 0 ? size_t(_prefetcher->config().depth) : 0;
        _pf_logits_dev = backend_array<float>(be, n_spec * size_t(desc.n_experts));
        if (n_spec) _pf_xn = backend_array<float>(be, D);
        _pf_logits.assign(n_spec * size_t(desc.n_experts), 0.0f);
    }
    _y_ptrs.assign(B * K, nullptr);
    for (size_t r = 0; r < B * K; ++r) _y_ptrs[r] = _ys.data() + r * D;
    _used.assign(size_t(desc.n_experts), 0);
    _visit.assign(size_t(desc.n_experts), 0);
    _group.assign(K, 0);
    _handles.resize(K);
    _logits.assign(size_t(desc.n_vocab), 0.0f);
}

uint64_t forward_pass::workspace_bytes() const {
    const uint64_t backend_bytes = _k_cache.bytes() + _v_cache.bytes() + _x.bytes() + _xn.bytes() + _q.bytes() +
                                   _att.bytes() + _tmp.bytes() + _scores.bytes() + _router.bytes() + _probs.bytes() +
                                   _ids_dev.bytes() + _weights_dev.bytes() + _pf_logits_dev.bytes() + _pf_xn.bytes() +
                                   _gate.bytes() + _up.bytes() + _ys.bytes() + _sh_logit.bytes() + _logits_dev.bytes();
    const uint64_t f = _weights.size() + _pf_logits.size() + _logits.size();
    return backend_bytes + f * sizeof(float) + (_ids.size() + _moe_layers.size()) * sizeof(int) +
           _y_ptrs.size() * sizeof(void*) + _handles.size() * sizeof(expert_handle) + _used.size() +
           (_visit.size() + _group.size()) * sizeof(int);
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
        _be.copy(_x.data() + size_t(i) * D, _rw.tok_embd + size_t(tokens[size_t(i)]) * D, D * sizeof(float));
    try {
        for (int il = 0; il < _d.n_layers; ++il) {
            for (int i = 0; i < n; ++i) attention_step(il, i);
            moe_step(il, n);
        }
    } catch (...) {
        // A failed load: drop every pin of the group (a pinned slot left behind could starve the next acquire
        // at the smallest budget). n_past is unchanged, so the sequence is as it was before the call.
        _be.synchronize();  // kernels of the group may still read pinned slots
        for (auto& h : _handles) h.reset();
        throw;
    }
    for (int i = 0; i < n; ++i) {
        if (!all_logits && i + 1 < n) continue;
        float* out = all_logits ? all_logits + size_t(i) * V : _logits.data();
        _be.rmsnorm(_x.data() + size_t(i) * D, _rw.output_norm, _xn.data(), _d.n_embd, float(_d.rms_eps));
        _be.matvec(tensor_type::F32, _rw.output, _xn.data(), _logits_dev.data(), _d.n_embd, _d.n_vocab);
        _be.download(out, _logits_dev.data(), V * sizeof(float));
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
    const layer_tensors& T = _rw.layers[size_t(il)];
    const int H = _d.n_head, Hkv = _d.n_head_kv, hk = _d.head_dim_k, hv = _d.head_dim_v, D = _d.n_embd;
    const int pos = _n_past + t;
    const float eps = float(_d.rms_eps);
    const size_t row_k = size_t(Hkv) * size_t(hk), row_v = size_t(Hkv) * size_t(hv);
    float* x = _x.data() + size_t(t) * size_t(D);
    float* xn = _xn.data() + size_t(t) * size_t(D);
    float* k = _k_cache.data() + (size_t(il) * size_t(_cfg.n_ctx) + size_t(pos)) * row_k;
    float* v = _v_cache.data() + (size_t(il) * size_t(_cfg.n_ctx) + size_t(pos)) * row_v;

    _be.rmsnorm(x, T.attn_norm, xn, D, eps);
    _be.matvec(tensor_type::F32, T.wq, xn, _q.data(), D, int64_t(H) * hk);
    _be.matvec(tensor_type::F32, T.wk, xn, k, D, int64_t(row_k));
    _be.matvec(tensor_type::F32, T.wv, xn, v, D, int64_t(row_v));
    if (!L.bq.empty()) {
        _be.add(_q.data(), T.bq, int64_t(H) * hk);
        _be.add(k, T.bk, int64_t(row_k));
        _be.add(v, T.bv, int64_t(row_v));
    }
    if (L.q_norm.size() == size_t(hk)) {  // qwen3moe: RMSNorm over each head before RoPE
        _be.rmsnorm_rows(_q.data(), T.q_norm, _q.data(), hk, H, eps);
        _be.rmsnorm_rows(k, T.k_norm, k, hk, Hkv, eps);
    } else if (!L.q_norm.empty()) {  // olmoe: RMSNorm over the whole q and k projections
        _be.rmsnorm(_q.data(), T.q_norm, _q.data(), int64_t(H) * hk, eps);
        _be.rmsnorm(k, T.k_norm, k, int64_t(row_k), eps);
    }
    _be.rope(_q.data(), H, hk, _d.n_rot, pos, _w.rope_freq_base, _d.rope);
    _be.rope(k, Hkv, hk, _d.n_rot, pos, _w.rope_freq_base, _d.rope);
    const float* k_all = _k_cache.data() + size_t(il) * size_t(_cfg.n_ctx) * row_k;
    const float* v_all = _v_cache.data() + size_t(il) * size_t(_cfg.n_ctx) * row_v;
    _be.attention(_q.data(), k_all, v_all, _att.data(), _scores.data(), H, Hkv, hk, hv, pos + 1,
                  float(1.0 / std::sqrt(double(hk))));
    _be.matvec(tensor_type::F32, T.wo, _att.data(), _tmp.data(), int64_t(H) * hv, D);
    _be.add(x, _tmp.data(), D);
}

void forward_pass::moe_step(int il, int n_tok) {
    const layer_weights& L = _w.layers[size_t(il)];
    const layer_tensors& T = _rw.layers[size_t(il)];
    const int D = _d.n_embd, E = _d.n_experts, K = _d.n_experts_used;
    std::fill(_used.begin(), _used.end(), uint8_t(0));
    for (int i = 0; i < n_tok; ++i) {
        float* xn = _xn.data() + size_t(i) * size_t(D);
        _be.rmsnorm(_x.data() + size_t(i) * size_t(D), T.ffn_norm, xn, D, float(_d.rms_eps));
        _be.matvec(tensor_type::F32, T.router, xn, _router.data(), D, E);
        _be.route(_router.data(), _probs.data(), E, K, _d.gating, _d.norm_topk, float(_d.weights_scale),
                  _ids_dev.data() + size_t(i) * size_t(K), _weights_dev.data() + size_t(i) * size_t(K));
    }
    // The cache (and the observer) need the decisions on the host: one download for the whole batch.
    _be.download(_ids.data(), _ids_dev.data(), size_t(n_tok) * size_t(K) * sizeof(int));
    _be.download(_weights.data(), _weights_dev.data(), size_t(n_tok) * size_t(K) * sizeof(float));
    for (int i = 0; i < n_tok; ++i) {
        const int* ids = _ids.data() + size_t(i) * size_t(K);
        for (int r = 0; r < K; ++r) _used[size_t(ids[r])] = 1;
        if (_observer)
            _observer(_n_past + i, L.moe_layer, std::span<const int>(ids, size_t(K)),
                      std::span<const float>(_weights.data() + size_t(i) * size_t(K), size_t(K)));
    }
    // The prefetcher hears every routing (its history learns from prefill too) and cancels stale prefetches.
    if (_prefetcher) _prefetcher->routed(uint32_t(L.moe_layer), uint32_t(_n_past), n_tok, _ids);

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
        const bool last = v + 1 == n_visit;
        // Decode: this layer's experts are all pinned now (one group), so no prefetch can evict one, and the
        // prefetches' loads overlap this layer's compute.
        if (last && n_tok == 1 && _prefetcher) prefetch_ahead(il);
        if (n_group == K || last) apply_group(L.moe_layer, n_group, n_tok), n_group = 0;
    }
    ++_clock;
    for (int i = 0; i < n_tok; ++i) {
        _be.weighted_sum(_y_ptrs.data() + size_t(i) * size_t(K), _weights_dev.data() + size_t(i) * size_t(K), K,
                         _tmp.data(), D);
        if (!L.sh_gate.empty()) shared_expert(T, _xn.data() + size_t(i) * size_t(D), _tmp.data());
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
    }
    // Unpinning lets the cache reuse a slot for another load: the backend must be done reading them first.
    _be.synchronize();
    for (int g = 0; g < n_pinned; ++g) _handles[size_t(g)].reset();
}

// Speculative gating for the prefetcher: the routers of the next MoE layers applied to the current residual
// stream (it changes little from layer to layer), normed as each of those layers norms its FFN input (the router
// was trained on that scale), with the same backend calls as the real router; downloaded as host logits.
// History needs none of it.
void forward_pass::prefetch_ahead(int il) {
    const uint32_t moe_layer = uint32_t(_w.layers[size_t(il)].moe_layer);
    const int n_spec = _prefetcher->n_spec_layers(moe_layer);
    const size_t E = size_t(_d.n_experts);
    for (int s = 0; s < n_spec; ++s) {
        const layer_tensors& N = _rw.layers[size_t(_moe_layers[moe_layer + 1 + uint32_t(s)])];
        _be.rmsnorm(_x.data(), N.ffn_norm, _pf_xn.data(), _d.n_embd, float(_d.rms_eps));
        _be.matvec(tensor_type::F32, N.router, _pf_xn.data(), _pf_logits_dev.data() + size_t(s) * E, _d.n_embd,
                   _d.n_experts);
    }
    if (n_spec > 0) _be.download(_pf_logits.data(), _pf_logits_dev.data(), size_t(n_spec) * E * sizeof(float));
    _stats.n_prefetches +=
        _prefetcher->prefetch(moe_layer, _clock, std::span<const float>(_pf_logits.data(), size_t(n_spec) * E));
}

// Qwen2-MoE's shared expert, resident and always on: out += sigmoid(g . xn) * down(silu(gate xn) * up xn), added
// after the routed sum (HF: routed + shared, then the residual).
void forward_pass::shared_expert(const layer_tensors& T, const float* xn, float* out) {
    const int64_t D = _d.n_embd, F = _d.n_ff_shexp;
    _be.matvec(tensor_type::F32, T.sh_gate_inp, xn, _sh_logit.data(), D, 1);
    _be.matvec(tensor_type::F32, T.sh_gate, xn, _gate.data(), D, F);
    _be.matvec(tensor_type::F32, T.sh_up, xn, _up.data(), D, F);
    _be.swiglu(_gate.data(), _up.data(), _gate.data(), F);
    _be.matvec(tensor_type::F32, T.sh_down, _gate.data(), _att.data(), F, D);
    _be.add_gated(out, _att.data(), _sh_logit.data(), D);
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
