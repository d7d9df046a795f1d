// The MoE decoder forward pass (see forward.h). Invariant 2 (offloading never changes the answer) rests on three
// things here: expert outputs are kept per rank and summed by backend.weighted_sum in rank order after all of
// them are computed; each expert's batched product covers exactly the tokens that chose it, gathered in token
// order, whatever order the experts are visited in (that order follows residency); and nothing in the arithmetic
// depends on whether an acquire hit or waited.
#include "runtime/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "prefetch/streamer.h"
#include "runtime/backend_cpu.h"

namespace moe {

forward_pass::forward_pass(const model& m, offloader& off, const forward_config& cfg)
    : _m(m),
      _d(m.desc()),
      _rw(m.weights()),
      _be(m.compute()),
      _off(off),
      _cache(off.cache()),
      _prefetcher(off.prefetch()),
      _cfg(cfg) {
    const model_desc& desc = _d;
    backend& be = _be;
    const offload_layout& ol = off.layout();
    if (ol.n_layers != uint32_t(desc.layout.n_moe_layers) || ol.n_experts != uint32_t(desc.n_experts) ||
        ol.top_k != uint32_t(desc.n_experts_used))
        fail("{}: the offloader streams {} x {} experts (top-{}), the model has {} x {} (top-{})", desc.name,
             ol.n_layers, ol.n_experts, ol.top_k, desc.layout.n_moe_layers, desc.n_experts, desc.n_experts_used);
    if (off.config().tier != m.expert_tier())
        fail("{}: the offloader's expert slots are in {} memory, but the model computes on the {} backend", desc.name,
             tier_kind_name(off.config().tier), be.name());
    if (cfg.n_ctx <= 0) fail("forward pass: context length (n_ctx) must be > 0, found {}", cfg.n_ctx);
    if (cfg.n_batch <= 0) fail("forward pass: batch size (n_batch) must be > 0, found {}", cfg.n_batch);
    if (cfg.n_seq <= 0) fail("forward pass: number of sequences (n_seq) must be > 0, found {}", cfg.n_seq);
    MOE_CHECK(int(_rw.layers.size()) == desc.n_layers);
    const size_t L = size_t(desc.n_layers), C = size_t(cfg.n_ctx), Hkv = size_t(desc.n_head_kv);
    const size_t S = size_t(cfg.n_seq);
    const size_t K = size_t(desc.n_experts_used), D = size_t(desc.n_embd), B = size_t(cfg.n_batch);
    const size_t F = size_t(std::max(desc.n_ff_exp, desc.n_ff_shexp)), E = size_t(desc.n_experts);
    // All positions' logits (all_logits) take one output-head product per _head_rows positions: enough rows to read
    // the (large) output matrix once per chunk, few enough that (rows, n_vocab) stays small next to the KV cache.
    constexpr int max_head_rows = 32;
    _head_rows = std::min(cfg.n_batch, max_head_rows);
    _k_cache = backend_array<float>(be, L * S * C * Hkv * size_t(desc.head_dim_k));
    _v_cache = backend_array<float>(be, L * S * C * Hkv * size_t(desc.head_dim_v));
    _n_past.assign(S, 0);
    _segs.reserve(std::min(S, B));
    _row_pos.assign(B, 0);
    _x = backend_array<float>(be, B * D);
    _xn = backend_array<float>(be, B * D);
    _q = backend_array<float>(be, B * size_t(desc.n_head) * size_t(desc.head_dim_k));
    _att = backend_array<float>(be, B * size_t(desc.n_head) * size_t(desc.head_dim_v));
    _tmp = backend_array<float>(be, B * D);
    _scores = backend_array<float>(be, size_t(desc.n_head) * C);
    _router = backend_array<float>(be, B * E);
    _probs = backend_array<float>(be, E);
    _ids_dev = backend_array<int>(be, B * K);
    _weights_dev = backend_array<float>(be, B * K);
    _rows = backend_array<float>(be, B * D);
    _gate = backend_array<float>(be, B * F);
    _up = backend_array<float>(be, B * F);
    _ys = backend_array<float>(be, B * K * D);
    _sh_logit = backend_array<float>(be, B);
    _logits_dev = backend_array<float>(be, size_t(_head_rows) * size_t(desc.n_vocab));
    _ids.assign(B * K, 0);
    _weights.assign(B * K, 0.0f);
    for (int il = 0; il < desc.n_layers; ++il)
        if (_rw.layers[size_t(il)].moe_layer >= 0) _moe_layers.push_back(il);
    if (_prefetcher) {
        const size_t n_spec = _prefetcher->n_spec_layers(0) > 0 ? size_t(_prefetcher->config().depth) : 0;
        _pf_logits_dev = backend_array<float>(be, n_spec * size_t(desc.n_experts));
        if (n_spec) _pf_xn = backend_array<float>(be, D);
        _pf_logits.assign(n_spec * size_t(desc.n_experts), 0.0f);
    }
    _y_ptrs.assign(B * K, nullptr);
    _gather_tok.assign(B, 0);
    _gather_slot.assign(B, 0);
    _ys_first.assign(E, 0);
    _used.assign(size_t(desc.n_experts), 0);
    _visit.assign(size_t(desc.n_experts), 0);
    _group.assign(K, 0);
    _handles.resize(K);
    _logits.assign(std::min(S, B) * size_t(desc.n_vocab), 0.0f);
}

uint64_t forward_pass::workspace_bytes() const {
    const uint64_t backend_bytes = _k_cache.bytes() + _v_cache.bytes() + _x.bytes() + _xn.bytes() + _q.bytes() +
                                   _att.bytes() + _tmp.bytes() + _scores.bytes() + _router.bytes() + _probs.bytes() +
                                   _ids_dev.bytes() + _weights_dev.bytes() + _pf_logits_dev.bytes() + _pf_xn.bytes() +
                                   _rows.bytes() + _gate.bytes() + _up.bytes() + _ys.bytes() + _sh_logit.bytes() +
                                   _logits_dev.bytes();
    const uint64_t f = _weights.size() + _pf_logits.size() + _logits.size() + _router_host.size() + _probs_host.size();
    return backend_bytes + f * sizeof(float) +
           (_ids.size() + _moe_layers.size() + _override_ids.capacity() + _n_past.size() + _row_pos.size()) *
               sizeof(int) +
           _segs.capacity() * sizeof(segment) + _y_ptrs.size() * sizeof(void*) +
           _handles.size() * sizeof(expert_handle) + _used.size() +
           (_visit.size() + _group.size() + _gather_tok.size() + _gather_slot.size() + _ys_first.size()) * sizeof(int);
}

const float* forward_pass::eval(std::span<const int> tokens, float* all_logits) {
    const seq_tokens one{0, tokens};
    std::lock_guard<std::mutex> lock(_m.compute_lock());
    const int n = plan_rows(std::span<const seq_tokens>(&one, 1));
    run_layers(std::span<const seq_tokens>(&one, 1), n);
    if (all_logits)
        output_head(n, all_logits);
    else
        output_rows(n);
    _n_past[0] += n;
    _stats.n_tokens += uint64_t(n);
    return _logits.data();
}

const float* forward_pass::eval_batch(std::span<const seq_tokens> batch) {
    std::lock_guard<std::mutex> lock(_m.compute_lock());
    const int n = plan_rows(batch);
    run_layers(batch, n);
    output_rows(n);
    for (const seq_tokens& st : batch) _n_past[size_t(st.seq)] += int(st.tokens.size());
    _stats.n_tokens += uint64_t(n);
    return _logits.data();
}

int forward_pass::plan_rows(std::span<const seq_tokens> batch) {
    if (batch.empty()) fail("{}: a forward step needs at least one sequence", _d.name);
    _segs.clear();
    int n = 0;
    for (const seq_tokens& st : batch) {
        if (st.seq < 0 || st.seq >= _cfg.n_seq)
            fail("{}: sequence {} does not exist: the forward pass has {} (n_seq)", _d.name, st.seq, _cfg.n_seq);
        for (const segment& sg : _segs)
            if (sg.seq == st.seq) fail("{}: sequence {} appears twice in one forward step", _d.name, st.seq);
        const int m = int(st.tokens.size());
        if (m <= 0 || n + m > _cfg.n_batch)
            fail("{}: eval of {} tokens: expected 1..{} (n_batch) per call", _d.name, n + std::max(m, 0), _cfg.n_batch);
        for (int t : st.tokens)
            if (t < 0 || t >= _d.n_vocab)
                fail("{}: token id {} is outside the vocabulary [0, {})", _d.name, t, _d.n_vocab);
        const int past = _n_past[size_t(st.seq)];
        if (past + m > _cfg.n_ctx)
            fail("{}: context is full: {} positions decoded, {} more requested, n_ctx = {}; raise the context length",
                 _d.name, past, m, _cfg.n_ctx);
        _segs.push_back(segment{st.seq, n, m});
        for (int i = 0; i < m; ++i) _row_pos[size_t(n + i)] = past + i;
        n += m;
    }
    return n;
}

void forward_pass::run_layers(std::span<const seq_tokens> batch, int n_tok) {
    const size_t D = size_t(_d.n_embd);
    int row = 0;
    for (const seq_tokens& st : batch)
        for (int t : st.tokens)
            _be.get_row(_rw.tok_embd.type, _rw.tok_embd.data, t, _d.n_embd, _x.data() + size_t(row++) * D);
    try {
        for (int il = 0; il < _d.n_layers; ++il) {
            attention_block(il, n_tok);
            moe_step(il, n_tok);
        }
    } catch (...) {
        // A failed load: drop every pin of the group (a pinned slot left behind could starve the next acquire
        // at the smallest budget). n_past is unchanged, so the sequences are as they were before the call.
        _be.synchronize();  // kernels of the group may still read pinned slots
        for (auto& h : _handles) h.reset();
        throw;
    }
}

void forward_pass::product(const weight_matrix& W, const float* X, float* Y, int n_tok) {
    product(W.type, W.data, X, Y, W.n_cols, W.n_rows, n_tok);
}

void forward_pass::product(tensor_type t, const void* W, const float* X, float* Y, int64_t n_cols, int64_t n_rows,
                           int n_tok) {
    if (n_tok == 1)
        _be.matvec(t, W, X, Y, n_cols, n_rows);
    else
        _be.matmul(t, W, X, Y, n_cols, n_rows, n_tok);
}

// The attention block of the step's n_tok rows, residual included. The q and output projections of all rows are
// batched (they read only the row's own input); k and v are projected per sequence straight into its KV cache,
// whose rows for consecutive positions are contiguous. RoPE then runs row by row at each row's position, and
// attention once per sequence for all its rows, causally: row t of a sequence sees the KV rows of positions <=
// its own, exactly what a token-by-token decode of that sequence alone sees.
void forward_pass::attention_block(int il, int n_tok) {
    const layer_tensors& T = _rw.layers[size_t(il)];
    const int H = _d.n_head, Hkv = _d.n_head_kv, hk = _d.head_dim_k, hv = _d.head_dim_v, D = _d.n_embd;
    const float eps = float(_d.rms_eps);
    const size_t row_q = size_t(H) * size_t(hk), row_att = size_t(H) * size_t(hv);
    const size_t row_k = size_t(Hkv) * size_t(hk), row_v = size_t(Hkv) * size_t(hv);
    float* q = _q.data();

    _be.rmsnorm_rows(_x.data(), T.attn_norm, _xn.data(), D, n_tok, eps);
    product(T.wq, _xn.data(), q, n_tok);
    if (T.bq)
        for (int t = 0; t < n_tok; ++t) _be.add(q + size_t(t) * row_q, T.bq, int64_t(row_q));
    const bool head_norm = T.q_norm && T.q_norm_n == hk;
    if (head_norm)  // qwen3moe: RMSNorm over each head before RoPE
        _be.rmsnorm_rows(q, T.q_norm, q, hk, int64_t(n_tok) * H, eps);
    else if (T.q_norm)  // olmoe: RMSNorm over the whole q and k projections
        _be.rmsnorm_rows(q, T.q_norm, q, int64_t(row_q), n_tok, eps);
    for (int t = 0; t < n_tok; ++t)
        _be.rope(q + size_t(t) * row_q, H, hk, _d.n_rot, _row_pos[size_t(t)], _rw.rope_freq_base, _d.rope);

    for (const segment& sg : _segs) {
        // Layer il, sequence sg.seq: position 0 of its KV cache.
        const size_t first = (size_t(il) * size_t(_cfg.n_seq) + size_t(sg.seq)) * size_t(_cfg.n_ctx);
        const int past = _n_past[size_t(sg.seq)];
        const float* xn = _xn.data() + size_t(sg.first) * size_t(D);
        float* k = _k_cache.data() + (first + size_t(past)) * row_k;
        float* v = _v_cache.data() + (first + size_t(past)) * row_v;
        product(T.wk, xn, k, sg.n);
        product(T.wv, xn, v, sg.n);
        if (T.bq) {
            for (int t = 0; t < sg.n; ++t) {
                _be.add(k + size_t(t) * row_k, T.bk, int64_t(row_k));
                _be.add(v + size_t(t) * row_v, T.bv, int64_t(row_v));
            }
        }
        if (head_norm)
            _be.rmsnorm_rows(k, T.k_norm, k, hk, int64_t(sg.n) * Hkv, eps);
        else if (T.q_norm)
            _be.rmsnorm_rows(k, T.k_norm, k, int64_t(row_k), sg.n, eps);
        for (int t = 0; t < sg.n; ++t)
            _be.rope(k + size_t(t) * row_k, Hkv, hk, _d.n_rot, past + t, _rw.rope_freq_base, _d.rope);
        _be.attention_batch(q + size_t(sg.first) * row_q, _k_cache.data() + first * row_k,
                            _v_cache.data() + first * row_v, _att.data() + size_t(sg.first) * row_att, _scores.data(),
                            H, Hkv, hk, hv, past, sg.n, float(1.0 / std::sqrt(double(hk))));
    }
    product(T.wo, _att.data(), _tmp.data(), n_tok);
    _be.add(_x.data(), _tmp.data(), int64_t(n_tok) * D);
}

void forward_pass::moe_step(int il, int n_tok) {
    const layer_tensors& L = _rw.layers[size_t(il)];
    const layer_tensors& T = L;
    const int D = _d.n_embd, E = _d.n_experts, K = _d.n_experts_used;
    std::fill(_used.begin(), _used.end(), uint8_t(0));
    _be.rmsnorm_rows(_x.data(), T.ffn_norm, _xn.data(), D, n_tok, float(_d.rms_eps));
    product(T.router, _xn.data(), _router.data(), n_tok);
    for (int i = 0; i < n_tok; ++i)
        _be.route(_router.data() + size_t(i) * size_t(E), _probs.data(), E, K, _d.gating, _d.norm_topk,
                  float(_d.weights_scale), _ids_dev.data() + size_t(i) * size_t(K),
                  _weights_dev.data() + size_t(i) * size_t(K));
    // The cache (and the observer) need the decisions on the host: one download for the whole batch.
    _be.download(_ids.data(), _ids_dev.data(), size_t(n_tok) * size_t(K) * sizeof(int));
    _be.download(_weights.data(), _weights_dev.data(), size_t(n_tok) * size_t(K) * sizeof(float));
    if (_override) override_routing(L.moe_layer, n_tok);
    std::fill(_ys_first.begin(), _ys_first.end(), 0);
    for (int i = 0; i < n_tok; ++i) {
        const int* ids = _ids.data() + size_t(i) * size_t(K);
        for (int r = 0; r < K; ++r) _used[size_t(ids[r])] = 1, ++_ys_first[size_t(ids[r])];
        if (_observer)
            _observer(_row_pos[size_t(i)], L.moe_layer, std::span<const int>(ids, size_t(K)),
                      std::span<const float>(_weights.data() + size_t(i) * size_t(K), size_t(K)));
    }
    // Expert outputs in _ys: expert by expert in id order, so where each row lands (and with it the address the
    // batched product writes to) follows from the routing alone, never from the visiting order.
    for (int e = 0, first = 0; e < E; ++e) {
        const int n_rows = _ys_first[size_t(e)];
        _ys_first[size_t(e)] = first;
        first += n_rows;
    }
    // The prefetcher hears every routing (its history learns from prefill too) and cancels stale prefetches.
    // (With several sequences in the step their rows are routed together, at the first row's position.)
    if (_prefetcher) _prefetcher->routed(uint32_t(L.moe_layer), uint32_t(_row_pos[0]), n_tok, _ids);

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
        _handles[size_t(n_group)] = _cache.acquire(key, access_info{_off.now(), rank, weight});
        ++_stats.n_acquires;
        if (!_handles[size_t(n_group)].ready()) {
            ++_stats.n_expert_waits;
            _off.loader().promote(key);  // a demand that joined a queued prefetch overtakes the rest
        }
        _group[size_t(n_group++)] = e;
        const bool last = v + 1 == n_visit;
        // Decode: this layer's experts are all pinned now (one group), so no prefetch can evict one, and the
        // prefetches' loads overlap this layer's compute.
        if (last && n_tok == 1 && _prefetcher) prefetch_ahead(il);
        if (n_group == K || last) apply_group(L.moe_layer, n_group, n_tok), n_group = 0;
    }
    _off.tick();
    const bool shared = bool(L.sh_gate);
    if (shared) shared_expert(T, n_tok);
    for (int i = 0; i < n_tok; ++i) {
        float* out = _tmp.data() + size_t(i) * size_t(D);
        _be.weighted_sum(_y_ptrs.data() + size_t(i) * size_t(K), _weights_dev.data() + size_t(i) * size_t(K), K, out,
                         D);
        if (shared) _be.add_gated(out, _rows.data() + size_t(i) * size_t(D), _sh_logit.data() + i, D);
    }
    _be.add(_x.data(), _tmp.data(), int64_t(n_tok) * D);
}

void forward_pass::set_routing_override(routing_override ovr) {
    _override = std::move(ovr);
    if (_override && _router_host.empty()) {
        _router_host.assign(size_t(_cfg.n_batch) * size_t(_d.n_experts), 0.0f);
        _probs_host.assign(size_t(_d.n_experts), 0.0f);
        _override_ids.reserve(size_t(_d.n_experts_used));
    }
}

// Replaces the router's ids in _ids with the override's (filled to top_k from the router's own picks) and
// recomputes their weights on the host from the router logits as backend::route does (CPU arithmetic); a row
// equal to the router's keeps the router's weights untouched, so replaying the router's own choices changes
// nothing. When some row changed, both arrays go back to backend memory: weighted_sum reads the weights there.
void forward_pass::override_routing(int moe_layer, int n_tok) {
    const int E = _d.n_experts, K = _d.n_experts_used;
    bool have_logits = false, changed = false;
    for (int i = 0; i < n_tok; ++i) {
        int* ids = _ids.data() + size_t(i) * size_t(K);
        float* w = _weights.data() + size_t(i) * size_t(K);
        const int pos = _row_pos[size_t(i)];
        _override_ids.clear();
        _override(pos, moe_layer, _override_ids);
        const size_t n = _override_ids.size();
        if (n == 0 || n > size_t(K))
            fail("{}: routing override for position {}, MoE layer {}: {} experts, expected 1..{} (top_k)", _d.name, pos,
                 moe_layer, n, K);
        for (size_t r = 0; r < n; ++r) {
            const int e = _override_ids[r];
            if (e < 0 || e >= E)
                fail("{}: routing override for position {}, MoE layer {}: expert id {} out of range [0, {})", _d.name,
                     pos, moe_layer, e, E);
            if (std::find(_override_ids.begin(), _override_ids.begin() + std::ptrdiff_t(r), e) !=
                _override_ids.begin() + std::ptrdiff_t(r))
                fail("{}: routing override for position {}, MoE layer {}: expert {} given twice", _d.name, pos,
                     moe_layer, e);
        }
        for (int r = 0; r < K && _override_ids.size() < size_t(K); ++r)
            if (std::find(_override_ids.begin(), _override_ids.end(), ids[r]) == _override_ids.end())
                _override_ids.push_back(ids[r]);
        if (std::equal(_override_ids.begin(), _override_ids.end(), ids)) continue;
        if (!have_logits) {
            _be.download(_router_host.data(), _router.data(), size_t(n_tok) * size_t(E) * sizeof(float));
            have_logits = true;
        }
        const float* logits = _router_host.data() + size_t(i) * size_t(E);
        float* probs = _probs_host.data();
        routing_scores(logits, probs, E, _d.gating);
        for (int r = 0; r < K; ++r) ids[r] = _override_ids[size_t(r)];
        routing_weights(probs, ids, K, _d.gating, _d.norm_topk, float(_d.weights_scale), w);
        changed = true;
    }
    if (changed) {
        _be.upload(_ids_dev.data(), _ids.data(), size_t(n_tok) * size_t(K) * sizeof(int));
        _be.upload(_weights_dev.data(), _weights.data(), size_t(n_tok) * size_t(K) * sizeof(float));
    }
}

// Waits for the pinned group and applies each expert to the tokens that chose it, all at once: their normed inputs
// gathered in token order, their outputs in the expert's rows of _ys, each (token, rank) slot pointed at its row.
// Nothing of a product (its tokens, their order, its buffers) depends on residency or on the group, so the
// result, and on CUDA its rounding, is the same at every budget. Then unpins.
void forward_pass::apply_group(int moe_layer, int n_pinned, int n_tok) {
    const int K = _d.n_experts_used;
    const size_t D = size_t(_d.n_embd);
    for (int g = 0; g < n_pinned; ++g) {
        expert_handle& h = _handles[size_t(g)];
        h.wait();
        const int e = _group[size_t(g)];
        int m = 0;
        for (int i = 0; i < n_tok; ++i)
            for (int r = 0; r < K; ++r)
                if (_ids[size_t(i) * size_t(K) + size_t(r)] == e) {
                    _gather_tok[size_t(m)] = i;
                    _gather_slot[size_t(m++)] = i * K + r;
                    break;  // top-k experts are distinct
                }
        MOE_CHECK(m > 0);                                          // it is visited because some token chose it
        const float* X = _xn.data() + size_t(_gather_tok[0]) * D;  // one token (decode): its row as it is
        if (m > 1) {
            for (int j = 0; j < m; ++j)
                _be.copy(_rows.data() + size_t(j) * D, _xn.data() + size_t(_gather_tok[size_t(j)]) * D,
                         D * sizeof(float));
            X = _rows.data();
        }
        float* Y = _ys.data() + size_t(_ys_first[size_t(e)]) * D;
        expert_ffn(moe_layer, e, h.data(), X, Y, m);
        for (int j = 0; j < m; ++j) _y_ptrs[size_t(_gather_slot[size_t(j)])] = Y + size_t(j) * D;
        _stats.n_expert_uses += uint64_t(m);
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
    const uint32_t moe_layer = uint32_t(_rw.layers[size_t(il)].moe_layer);
    const int n_spec = _prefetcher->n_spec_layers(moe_layer);
    const size_t E = size_t(_d.n_experts);
    for (int s = 0; s < n_spec; ++s) {
        const layer_tensors& N = _rw.layers[size_t(_moe_layers[moe_layer + 1 + uint32_t(s)])];
        _be.rmsnorm(_x.data(), N.ffn_norm, _pf_xn.data(), _d.n_embd, float(_d.rms_eps));
        _be.matvec(N.router.type, N.router.data, _pf_xn.data(), _pf_logits_dev.data() + size_t(s) * E, N.router.n_cols,
                   N.router.n_rows);
    }
    if (n_spec > 0) _be.download(_pf_logits.data(), _pf_logits_dev.data(), size_t(n_spec) * E * sizeof(float));
    _stats.n_prefetches +=
        _prefetcher->prefetch(moe_layer, _off.now(), std::span<const float>(_pf_logits.data(), size_t(n_spec) * E));
}

// Qwen2-MoE's shared expert, resident and always on, for the batch's tokens: down(silu(gate xn) * up xn) into
// _rows and the gate logit g . xn into _sh_logit; moe_step adds sigmoid(logit) * that after the routed sum (HF:
// routed + shared, then the residual). Runs after the routed experts: it reuses their workspaces.
void forward_pass::shared_expert(const layer_tensors& T, int n_tok) {
    const int64_t F = _d.n_ff_shexp;
    product(T.sh_gate_inp, _xn.data(), _sh_logit.data(), n_tok);
    product(T.sh_gate, _xn.data(), _gate.data(), n_tok);
    product(T.sh_up, _xn.data(), _up.data(), n_tok);
    _be.swiglu(_gate.data(), _up.data(), _gate.data(), F * n_tok);
    product(T.sh_down, _gate.data(), _rows.data(), n_tok);
}

// The final norm and the output head for each segment's last row, into _logits (one row per segment, in chunks of
// _head_rows rows per product).
void forward_pass::output_rows(int n_tok) {
    MOE_CHECK(!_segs.empty() && _segs.back().first + _segs.back().n == n_tok);
    const size_t D = size_t(_d.n_embd), V = size_t(_d.n_vocab), S = _segs.size();
    const float eps = float(_d.rms_eps);
    for (size_t c = 0; c < S; c += size_t(_head_rows)) {
        const size_t m = std::min(size_t(_head_rows), S - c);
        for (size_t j = 0; j < m; ++j) {
            const segment& sg = _segs[c + j];
            _be.rmsnorm(_x.data() + size_t(sg.first + sg.n - 1) * D, _rw.output_norm, _xn.data() + j * D, _d.n_embd,
                        eps);
        }
        product(_rw.output, _xn.data(), _logits_dev.data(), int(m));
        _be.download(_logits.data() + c * V, _logits_dev.data(), m * V * sizeof(float));
    }
}

// Every position's logits of a one-sequence step into all_logits (in chunks of _head_rows positions, one product
// each), the last one's also into _logits.
void forward_pass::output_head(int n_tok, float* all_logits) {
    const size_t D = size_t(_d.n_embd), V = size_t(_d.n_vocab);
    const float eps = float(_d.rms_eps);
    for (int c = 0; c < n_tok; c += _head_rows) {
        const int m = std::min(_head_rows, n_tok - c);
        _be.rmsnorm_rows(_x.data() + size_t(c) * D, _rw.output_norm, _xn.data(), _d.n_embd, m, eps);
        product(_rw.output, _xn.data(), _logits_dev.data(), m);
        _be.download(all_logits + size_t(c) * V, _logits_dev.data(), size_t(m) * V * sizeof(float));
    }
    std::memcpy(_logits.data(), all_logits + size_t(n_tok - 1) * V, V * sizeof(float));
}

// One expert on n_rows gathered inputs X (n_rows, n_embd) -> Y (n_rows, n_embd).
void forward_pass::expert_ffn(int moe_layer, int expert, const void* slot, const float* X, float* Y, int n_rows) {
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
    product(tg, gate, X, _gate.data(), D, F, n_rows);
    product(tu, up, X, _up.data(), D, F, n_rows);
    _be.swiglu(_gate.data(), _up.data(), _gate.data(), F * n_rows);
    product(td, down, _gate.data(), Y, F, D, n_rows);
}

}  // namespace moe
