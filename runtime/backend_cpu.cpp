// CPU reference backend (see backend_cpu.h). Reductions (dot products, sums of squares, softmax denominators)
// accumulate in double so the reference is closer to exact than any fast path it will check.
#include "runtime/backend_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "common/error.h"
#include "runtime/cpu_dot.h"
#include "runtime/dequant.h"
#include "runtime/thread_pool.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace moe {

backend_cpu::backend_cpu(int64_t max_cols, int n_threads, int64_t min_parallel_work)
    : _max_cols(std::max<int64_t>(max_cols, 0)), _min_parallel_work(min_parallel_work) {
    if (n_threads <= 0) n_threads = int(std::max(1u, std::thread::hardware_concurrency()));
    _pool = std::make_unique<thread_pool>(n_threads);
    cpu_isa_selected();  // reads MOE_CPU_ISA here, so a bad value is refused on this thread, not in a worker
    _row.assign(size_t(_max_cols) * size_t(n_threads), 0.0f);
    _att_hd_v = 256;
    _att_ws.assign(size_t(n_threads) * size_t(attention_block_positions + 2 * _att_hd_v), 0.0);
}

backend_cpu::~backend_cpu() = default;

int backend_cpu::n_threads() const {
    return _pool->n_threads();
}

void* backend_cpu::alloc(uint64_t bytes) {
    constexpr uint64_t align = 256;
    const uint64_t rounded = (std::max<uint64_t>(bytes, 1) + align - 1) / align * align;
    void* p = std::aligned_alloc(align, rounded);
    if (!p) fail("cpu backend: cannot allocate {} bytes of working memory", bytes);
    std::memset(p, 0, rounded);
    return p;
}

void backend_cpu::free(void* p) {
    std::free(p);
}

void backend_cpu::upload(void* dst, const void* src, uint64_t bytes) {
    if (bytes) std::memcpy(dst, src, bytes);
}

void backend_cpu::download(void* dst, const void* src, uint64_t bytes) {
    if (bytes) std::memcpy(dst, src, bytes);
}

void backend_cpu::copy(void* dst, const void* src, uint64_t bytes) {
    if (bytes) std::memmove(dst, src, bytes);
}

void backend_cpu::matvec_rows(tensor_type t, const void* W, const float* x, float* y, int64_t n_cols, int64_t r0,
                              int64_t r1, float* /*row: unused since the dot kernels decode block by block*/) {
    // One kernel per (type, process-wide ISA) for every row of every product (runtime/cpu_dot.h), so a row's bits
    // never depend on the thread count, the batch or whether it came through matvec or matmul.
    const dot_kernel dot = cpu_dot_kernel(t, cpu_isa_selected());
    const tensor_type_info& ti = type_info(t);
    const uint64_t row_bytes = uint64_t(n_cols / ti.block_elems) * ti.block_bytes;
    const uint8_t* w = static_cast<const uint8_t*>(W);
    for (int64_t r = r0; r < r1; ++r) y[r] = dot(w + uint64_t(r) * row_bytes, x, n_cols);
}

bool backend_cpu_supports(tensor_type t) {
    return t == tensor_type::F32 || dequant_supported(t);
}

bool backend_cpu::supports(tensor_type t) const {
    return backend_cpu_supports(t);
}

void backend_cpu::get_row(tensor_type t, const void* W, int64_t row, int64_t n_cols, float* out) {
    const tensor_type_info& ti = type_info(t);
    const uint64_t row_bytes = uint64_t(n_cols / ti.block_elems) * ti.block_bytes;
    dequantize_row(t, static_cast<const uint8_t*>(W) + uint64_t(row) * row_bytes, out, n_cols);
}

void backend_cpu::matvec(tensor_type t, const void* W, const float* x, float* y, int64_t n_cols, int64_t n_rows) {
    if (t != tensor_type::F32) {
        MOE_CHECK(dequant_supported(t));
        MOE_CHECK(n_cols <= _max_cols);
        MOE_CHECK(n_cols % type_info(t).block_elems == 0);
    }
    if (_pool->n_threads() == 1 || n_rows * n_cols < _min_parallel_work) {
        matvec_rows(t, W, x, y, n_cols, 0, n_rows, _row.data());
        return;
    }
    auto job = [&](int64_t r0, int64_t r1, int ti) {
        matvec_rows(t, W, x, y, n_cols, r0, r1, _row.data() + size_t(ti) * size_t(_max_cols));
    };
    _pool->parallel_for(n_rows, job);
}

void backend_cpu::matmul(tensor_type t, const void* W, const float* X, float* Y, int64_t n_cols, int64_t n_rows,
                         int64_t n_tok) {
    for (int64_t i = 0; i < n_tok; ++i) matvec(t, W, X + i * n_cols, Y + i * n_rows, n_cols, n_rows);
}

void backend_cpu::rmsnorm(const float* x, const float* w, float* y, int64_t n, float eps) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * double(x[i]);
    const float inv = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
    for (int64_t i = 0; i < n; ++i) y[i] = w ? x[i] * inv * w[i] : x[i] * inv;
}

void backend_cpu::rope(float* x, int n_heads, int head_dim, int n_rot, int pos, float freq_base, rope_style style) {
    MOE_CHECK(n_rot % 2 == 0 && n_rot <= head_dim);
    const int half = n_rot / 2;
    for (int h = 0; h < n_heads; ++h) {
        float* v = x + size_t(h) * head_dim;
        for (int i = 0; i < half; ++i) {
            const double theta = double(pos) * std::pow(double(freq_base), -2.0 * i / double(n_rot));
            const double c = std::cos(theta), s = std::sin(theta);
            float* a = style == rope_style::NORM ? v + 2 * i : v + i;
            float* b = style == rope_style::NORM ? v + 2 * i + 1 : v + i + half;
            const double x0 = *a, x1 = *b;
            *a = float(x0 * c - x1 * s);
            *b = float(x0 * s + x1 * c);
        }
    }
}

namespace {

constexpr int att_block = backend_cpu::attention_block_positions;

// What one (token, head) pair reads: its query row and its kv head's keys and values at position 0, consecutive
// positions k_stride / v_stride floats apart.
struct att_head {
    const float* q;
    const float* k;
    const float* v;
    int64_t k_stride, v_stride;
    int hd_k, hd_v;
    double scale;
};

// The softmax of one block of positions [p0, p1): m = the max score, l = sum exp(s - m), acc = sum exp(s - m) v,
// each sum in position order; a score is q.k summed in double in dimension order (the products are exact), times
// scale, rounded to float. w: room for p1 - p0 doubles. Never inlined: every path runs these same instructions.
// The SSE2 loops put positions side by side in the lanes of a register and give each lane the same multiply and
// add, in the same order, as the plain loops after them: they only compute several positions at once (several
// chains of additions in flight instead of one), so the bits are those of the plain loops.
[[gnu::noinline]] void att_block_partial(const att_head& a, int p0, int p1, double* w, double& m_out, double& l_out,
                                         double* acc) {
    const int n = p1 - p0, hd_k = a.hd_k, hd_v = a.hd_v;
    const int64_t ks = a.k_stride, vs = a.v_stride;
    int t = 0;
#if defined(__SSE2__)
    // Scores of eight positions at a time: lanes (t, t+1), (t+2, t+3), ... Four dimensions of two key rows are
    // interleaved (unpack) so that each converted pair holds one dimension of both rows.
    for (; t + 8 <= n; t += 8) {
        const float* k0 = a.k + int64_t(p0 + t) * ks;
        __m128d d0 = _mm_setzero_pd(), d1 = d0, d2 = d0, d3 = d0;
        auto step4 = [&](__m128d& d, const float* ka, int i, __m128d q0, __m128d q1, __m128d q2, __m128d q3) {
            const __m128 ra = _mm_loadu_ps(ka + i), rb = _mm_loadu_ps(ka + ks + i);
            const __m128 lo = _mm_unpacklo_ps(ra, rb), hi = _mm_unpackhi_ps(ra, rb);
            d = _mm_add_pd(d, _mm_mul_pd(q0, _mm_cvtps_pd(lo)));
            d = _mm_add_pd(d, _mm_mul_pd(q1, _mm_cvtps_pd(_mm_movehl_ps(lo, lo))));
            d = _mm_add_pd(d, _mm_mul_pd(q2, _mm_cvtps_pd(hi)));
            d = _mm_add_pd(d, _mm_mul_pd(q3, _mm_cvtps_pd(_mm_movehl_ps(hi, hi))));
        };
        int i = 0;
        for (; i + 4 <= hd_k; i += 4) {
            const __m128d q0 = _mm_set1_pd(a.q[i]), q1 = _mm_set1_pd(a.q[i + 1]);
            const __m128d q2 = _mm_set1_pd(a.q[i + 2]), q3 = _mm_set1_pd(a.q[i + 3]);
            step4(d0, k0, i, q0, q1, q2, q3);
            step4(d1, k0 + 2 * ks, i, q0, q1, q2, q3);
            step4(d2, k0 + 4 * ks, i, q0, q1, q2, q3);
            step4(d3, k0 + 6 * ks, i, q0, q1, q2, q3);
        }
        for (; i < hd_k; ++i) {
            const __m128d qi = _mm_set1_pd(a.q[i]);
            auto pair = [&](const float* ka) { return _mm_set_pd(double(ka[ks + i]), double(ka[i])); };
            d0 = _mm_add_pd(d0, _mm_mul_pd(qi, pair(k0)));
            d1 = _mm_add_pd(d1, _mm_mul_pd(qi, pair(k0 + 2 * ks)));
            d2 = _mm_add_pd(d2, _mm_mul_pd(qi, pair(k0 + 4 * ks)));
            d3 = _mm_add_pd(d3, _mm_mul_pd(qi, pair(k0 + 6 * ks)));
        }
        double d[8];
        _mm_storeu_pd(d, d0);
        _mm_storeu_pd(d + 2, d1);
        _mm_storeu_pd(d + 4, d2);
        _mm_storeu_pd(d + 6, d3);
        for (int j = 0; j < 8; ++j) w[t + j] = double(float(d[j] * a.scale));
    }
#endif
    for (; t < n; ++t) {
        const float* k0 = a.k + int64_t(p0 + t) * ks;
        double d0 = 0.0;
        for (int i = 0; i < hd_k; ++i) d0 += double(a.q[i]) * double(k0[i]);
        w[t] = double(float(d0 * a.scale));
    }
    double m = -INFINITY;
    for (t = 0; t < n; ++t) m = std::max(m, w[t]);
    double l = 0.0;
    for (t = 0; t < n; ++t) {
        w[t] = std::exp(w[t] - m);
        l += w[t];
    }
    std::fill(acc, acc + hd_v, 0.0);
    t = 0;
#if defined(__SSE2__)
    // acc[i] += w[t] v_t[i] for t in order: four positions per pass over acc, two dimensions per lane pair.
    for (; t + 4 <= n; t += 4) {
        const float* v0 = a.v + int64_t(p0 + t) * vs;
        const __m128d w0 = _mm_set1_pd(w[t]), w1 = _mm_set1_pd(w[t + 1]);
        const __m128d w2 = _mm_set1_pd(w[t + 2]), w3 = _mm_set1_pd(w[t + 3]);
        int i = 0;
        for (; i + 4 <= hd_v; i += 4) {
            __m128d lo = _mm_loadu_pd(acc + i), hi = _mm_loadu_pd(acc + i + 2);
            auto add = [&](const float* vr, __m128d wr) {
                const __m128 r = _mm_loadu_ps(vr + i);
                lo = _mm_add_pd(lo, _mm_mul_pd(wr, _mm_cvtps_pd(r)));
                hi = _mm_add_pd(hi, _mm_mul_pd(wr, _mm_cvtps_pd(_mm_movehl_ps(r, r))));
            };
            add(v0, w0);
            add(v0 + vs, w1);
            add(v0 + 2 * vs, w2);
            add(v0 + 3 * vs, w3);
            _mm_storeu_pd(acc + i, lo);
            _mm_storeu_pd(acc + i + 2, hi);
        }
        for (; i < hd_v; ++i) {
            double s = acc[i];
            for (int j = 0; j < 4; ++j) s += w[t + j] * double(v0[int64_t(j) * vs + i]);
            acc[i] = s;
        }
    }
#endif
    for (; t < n; ++t) {
        const float* v0 = a.v + int64_t(p0 + t) * vs;
        for (int i = 0; i < hd_v; ++i) acc[i] += w[t] * double(v0[i]);
    }
    m_out = m;
    l_out = l;
}

// Folds the next block's (m_b, l_b, acc_b) into the running (m, l, acc) of the blocks before it, both rescaled to
// the larger max. Never inlined, for the same reason.
[[gnu::noinline]] void att_fold(double& m, double& l, double* acc, double m_b, double l_b, const double* acc_b,
                                int hd_v) {
    const double mx = std::max(m, m_b);
    const double a = std::exp(m - mx), b = std::exp(m_b - mx);
    l = l * a + l_b * b;
    for (int i = 0; i < hd_v; ++i) acc[i] = acc[i] * a + acc_b[i] * b;
    m = mx;
}

void att_finish(double l, const double* acc, float* out, int hd_v) {
    for (int i = 0; i < hd_v; ++i) out[i] = float(acc[i] / l);
}

// One (token, head) pair over positions [0, n_kv), block by block. w, acc, acc_b: per-thread workspace.
void att_pair(const att_head& a, int n_kv, double* w, double* acc, double* acc_b, float* out) {
    double m, l;
    att_block_partial(a, 0, std::min(n_kv, att_block), w, m, l, acc);
    for (int p0 = att_block; p0 < n_kv; p0 += att_block) {
        double m_b, l_b;
        att_block_partial(a, p0, std::min(n_kv, p0 + att_block), w, m_b, l_b, acc_b);
        att_fold(m, l, acc, m_b, l_b, acc_b, a.hd_v);
    }
    att_finish(l, acc, out, a.hd_v);
}

}  // namespace

void backend_cpu::attention(const float* q, const float* k_cache, const float* v_cache, float* out, float* scores,
                            int n_head, int n_head_kv, int hd_k, int hd_v, int n_kv, float scale) {
    MOE_CHECK(n_kv > 0);
    attention_batch(q, k_cache, v_cache, out, scores, n_head, n_head_kv, hd_k, hd_v, n_kv - 1, 1, scale);
}

void backend_cpu::attention_batch(const float* q, const float* k_cache, const float* v_cache, float* out, float* scores,
                                  int n_head, int n_head_kv, int hd_k, int hd_v, int pos0, int n_tok, float scale) {
    MOE_CHECK(n_head_kv > 0 && n_head % n_head_kv == 0 && pos0 >= 0 && n_tok > 0 && hd_k > 0 && hd_v > 0);
    const int n_threads = _pool->n_threads();
    if (hd_v > _att_hd_v) {  // wider heads than any call before: grow every thread's workspace (once)
        _att_hd_v = hd_v;
        _att_ws.assign(size_t(n_threads) * size_t(att_block + 2 * _att_hd_v), 0.0);
    }
    const size_t ws_stride = size_t(att_block + 2 * _att_hd_v);
    const int group = n_head / n_head_kv;
    const int64_t n_pairs = int64_t(n_tok) * n_head;  // pair p: token p / n_head, head p % n_head
    auto pair = [&](int64_t p) {
        const int kh = int(p % n_head) / group;
        return att_head{q + p * hd_k,
                        k_cache + int64_t(kh) * hd_k,
                        v_cache + int64_t(kh) * hd_v,
                        int64_t(n_head_kv) * hd_k,
                        int64_t(n_head_kv) * hd_v,
                        hd_k,
                        hd_v,
                        double(scale)};
    };
    auto n_kv_of = [&](int64_t p) { return pos0 + int(p / n_head) + 1; };
    auto run_pair = [&](int64_t p, int ti) {
        double* w = _att_ws.data() + size_t(ti) * ws_stride;
        att_pair(pair(p), n_kv_of(p), w, w + att_block, w + att_block + _att_hd_v, out + p * hd_v);
    };

    // Multiply-adds in all: every pair reads n_kv keys and values.
    const int64_t n_pos = int64_t(n_tok) * pos0 + int64_t(n_tok) * (n_tok + 1) / 2;
    if (n_threads == 1 || n_pos * n_head * (hd_k + hd_v) < _min_parallel_work) {
        for (int64_t p = 0; p < n_pairs; ++p) run_pair(p, 0);
        return;
    }
    // Thread c takes pairs (or triples) c, c + n_threads, ..: costs grow with the token, so a stride shares them
    // out more evenly than contiguous ranges would.
    const int n_blocks = (pos0 + n_tok + att_block - 1) / att_block;  // of the last token
    const int64_t rec = 2 + int64_t(hd_v);                            // doubles per partial: m, l, acc
    const bool fits = uint64_t(n_pairs) * uint64_t(n_blocks) * uint64_t(rec) * sizeof(double) <=
                      uint64_t(n_head) * uint64_t(pos0 + n_tok) * sizeof(float);
    if (n_pairs >= 4 * int64_t(n_threads) || n_blocks < 2 || !fits) {
        auto job = [&](int64_t c0, int64_t c1, int ti) {
            for (int64_t c = c0; c < c1; ++c)
                for (int64_t p = c; p < n_pairs; p += n_threads) run_pair(p, ti);
        };
        _pool->parallel_for(n_threads, job);
        return;
    }
    // Too few pairs to keep every thread busy: split each pair's positions into its blocks. Triple u is block
    // u / n_pairs of pair u % n_pairs; its partial goes to record (pair, block) of `scores` (bytes copied, as the
    // workspace is a float array), then each pair folds its records in block order exactly as att_pair does.
    char* recs = reinterpret_cast<char*>(scores);
    const size_t rec_bytes = size_t(rec) * sizeof(double);
    auto rec_at = [&](int64_t p, int b) { return recs + (size_t(p) * size_t(n_blocks) + size_t(b)) * rec_bytes; };
    const int64_t n_triples = n_pairs * n_blocks;
    auto blocks = [&](int64_t c0, int64_t c1, int ti) {
        double* w = _att_ws.data() + size_t(ti) * ws_stride;
        double* acc = w + att_block;
        for (int64_t c = c0; c < c1; ++c)
            for (int64_t u = c; u < n_triples; u += n_threads) {
                const int64_t p = u % n_pairs;
                const int b = int(u / n_pairs), n_kv = n_kv_of(p), b0 = b * att_block;
                if (b0 >= n_kv) continue;
                double ml[2];
                att_block_partial(pair(p), b0, std::min(n_kv, b0 + att_block), w, ml[0], ml[1], acc);
                std::memcpy(rec_at(p, b), ml, sizeof(ml));
                std::memcpy(rec_at(p, b) + sizeof(ml), acc, size_t(hd_v) * sizeof(double));
            }
    };
    _pool->parallel_for(n_threads, blocks);
    auto fold = [&](int64_t c0, int64_t c1, int ti) {
        double* acc = _att_ws.data() + size_t(ti) * ws_stride + att_block;
        double* acc_b = acc + _att_hd_v;
        for (int64_t c = c0; c < c1; ++c)
            for (int64_t p = c; p < n_pairs; p += n_threads) {
                const int nb = (n_kv_of(p) + att_block - 1) / att_block;
                double ml[2], ml_b[2];
                std::memcpy(ml, rec_at(p, 0), sizeof(ml));
                std::memcpy(acc, rec_at(p, 0) + sizeof(ml), size_t(hd_v) * sizeof(double));
                for (int b = 1; b < nb; ++b) {
                    std::memcpy(ml_b, rec_at(p, b), sizeof(ml_b));
                    std::memcpy(acc_b, rec_at(p, b) + sizeof(ml_b), size_t(hd_v) * sizeof(double));
                    att_fold(ml[0], ml[1], acc, ml_b[0], ml_b[1], acc_b, hd_v);
                }
                att_finish(ml[1], acc, out + p * hd_v, hd_v);
            }
    };
    _pool->parallel_for(n_threads, fold);
}

void routing_scores(const float* logits, float* probs, int n_experts, gating_func gating) {
    switch (gating) {
        case gating_func::SOFTMAX: {
            double mx = -INFINITY, sum = 0.0;
            for (int e = 0; e < n_experts; ++e) mx = std::max(mx, double(logits[e]));
            for (int e = 0; e < n_experts; ++e) sum += std::exp(double(logits[e]) - mx);
            for (int e = 0; e < n_experts; ++e) probs[e] = float(std::exp(double(logits[e]) - mx) / sum);
            break;
        }
        case gating_func::SIGMOID:
            for (int e = 0; e < n_experts; ++e) probs[e] = float(1.0 / (1.0 + std::exp(-double(logits[e]))));
            break;
        case gating_func::SOFTMAX_WEIGHT:
            for (int e = 0; e < n_experts; ++e) probs[e] = logits[e];
            break;
    }
}

void routing_weights(const float* probs, const int* ids, int k, gating_func gating, bool norm_topk, float weights_scale,
                     float* weights) {
    for (int r = 0; r < k; ++r) weights[r] = probs[ids[r]];
    if (gating == gating_func::SOFTMAX_WEIGHT) {
        double mx = -INFINITY, sum = 0.0;
        for (int r = 0; r < k; ++r) mx = std::max(mx, double(weights[r]));
        for (int r = 0; r < k; ++r) sum += std::exp(double(weights[r]) - mx);
        for (int r = 0; r < k; ++r) weights[r] = float(std::exp(double(weights[r]) - mx) / sum);
    }
    if (norm_topk) {
        double sum = 0.0;
        for (int r = 0; r < k; ++r) sum += weights[r];
        sum = std::max(sum, 6.103515625e-5);  // llama.cpp's floor: a degenerate sum never divides by ~0
        for (int r = 0; r < k; ++r) weights[r] = float(weights[r] / sum);
    }
    if (weights_scale != 0.0f && weights_scale != 1.0f)
        for (int r = 0; r < k; ++r) weights[r] *= weights_scale;
}

void backend_cpu::route(const float* logits, float* probs, int n_experts, int k, gating_func gating, bool norm_topk,
                        float weights_scale, int* ids, float* weights) {
    MOE_CHECK(k > 0 && k <= n_experts);
    routing_scores(logits, probs, n_experts, gating);
    // Top-k by selection, k passes of an arg-max: ties go to the lower expert id (strict >), so the choice is a
    // pure function of the scores. NaN scores are never selected over a number.
    for (int r = 0; r < k; ++r) {
        int best = -1;
        for (int e = 0; e < n_experts; ++e) {
            bool taken = false;
            for (int j = 0; j < r; ++j) taken = taken || ids[j] == e;
            if (taken) continue;
            if (best < 0 || probs[e] > probs[best] || (std::isnan(probs[best]) && !std::isnan(probs[e]))) best = e;
        }
        ids[r] = best;
    }
    routing_weights(probs, ids, k, gating, norm_topk, weights_scale, weights);
}

void backend_cpu::swiglu(const float* gate, const float* up, float* out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const float g = gate[i];
        out[i] = float(double(g) / (1.0 + std::exp(-double(g)))) * up[i];
    }
}

void backend_cpu::weighted_sum(const float* const* ys, const float* w, int k, float* out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        float acc = 0.0f;
        for (int r = 0; r < k; ++r) acc += w[r] * ys[r][i];
        out[i] = acc;
    }
}

void backend_cpu::add(float* y, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void backend_cpu::add_gated(float* y, const float* x, const float* gate_logit, int64_t n) {
    const float s = float(1.0 / (1.0 + std::exp(-double(gate_logit[0]))));
    for (int64_t i = 0; i < n; ++i) y[i] += s * x[i];
}

}  // namespace moe
