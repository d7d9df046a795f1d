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

namespace moe {

backend_cpu::backend_cpu(int64_t max_cols, int n_threads, int64_t min_parallel_work)
    : _max_cols(std::max<int64_t>(max_cols, 0)), _min_parallel_work(min_parallel_work) {
    if (n_threads <= 0) n_threads = int(std::max(1u, std::thread::hardware_concurrency()));
    _pool = std::make_unique<thread_pool>(n_threads);
    cpu_isa_selected();  // reads MOE_CPU_ISA here, so a bad value is refused on this thread, not in a worker
    _row.assign(size_t(_max_cols) * size_t(n_threads), 0.0f);
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

void backend_cpu::attention(const float* q, const float* k_cache, const float* v_cache, float* out, float* scores,
                            int n_head, int n_head_kv, int hd_k, int hd_v, int n_kv, float scale) {
    MOE_CHECK(n_head_kv > 0 && n_head % n_head_kv == 0 && n_kv > 0);
    const int group = n_head / n_head_kv;
    for (int h = 0; h < n_head; ++h) {
        const int kh = h / group;
        const float* qh = q + size_t(h) * hd_k;
        double mx = -INFINITY;
        for (int t = 0; t < n_kv; ++t) {
            const float* k = k_cache + (size_t(t) * n_head_kv + kh) * hd_k;
            double dot = 0.0;
            for (int i = 0; i < hd_k; ++i) dot += double(qh[i]) * double(k[i]);
            scores[t] = float(dot * scale);
            mx = std::max(mx, double(scores[t]));
        }
        double sum = 0.0;
        for (int t = 0; t < n_kv; ++t) sum += std::exp(double(scores[t]) - mx);
        float* o = out + size_t(h) * hd_v;
        for (int i = 0; i < hd_v; ++i) {
            double acc = 0.0;
            for (int t = 0; t < n_kv; ++t)
                acc += std::exp(double(scores[t]) - mx) * double(v_cache[(size_t(t) * n_head_kv + kh) * hd_v + i]);
            o[i] = float(acc / sum);
        }
    }
}

void backend_cpu::route(const float* logits, float* probs, int n_experts, int k, gating_func gating, bool norm_topk,
                        float weights_scale, int* ids, float* weights) {
    MOE_CHECK(k > 0 && k <= n_experts);
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
        weights[r] = probs[best];
    }
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
