// Synthetic trace generator. Per (token, layer) it fills top_k slots in order: with probability `reuse`
// the slot keeps the previous token's expert at that rank, else with probability `layer_corr` it takes the
// mapped choice of the previous layer at that rank, else it draws from the layer's Zipf popularity; a
// duplicate falls back to a fresh Zipf draw. std::mt19937_64 and our own samplers keep it reproducible across
// standard libraries (std:: distributions are implementation-defined).
#include "cache/trace_gen.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "common/error.h"

namespace moe {

namespace {

struct rng {
    std::mt19937_64 g;
    explicit rng(uint64_t seed) : g(seed) {}
    double uniform() { return double(g() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
    uint32_t below(uint32_t n) { return uint32_t(uniform() * n); }
    double normal() {  // Box-Muller
        double u1 = uniform(), u2 = uniform();
        return std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(6.283185307179586 * u2);
    }
    template <typename T>
    void shuffle(std::vector<T>& v) {
        for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(uint32_t(i))]);
    }
};

// Zipf over ranks 0..n-1 by inverse CDF (binary search on the cumulative table).
struct zipf {
    std::vector<double> cdf;
    zipf(uint32_t n, double s) : cdf(n) {
        double acc = 0;
        for (uint32_t i = 0; i < n; ++i) cdf[i] = acc += 1.0 / std::pow(double(i + 1), s);
        for (double& c : cdf) c /= acc;
    }
    uint32_t draw(rng& r) const {
        auto it = std::upper_bound(cdf.begin(), cdf.end(), r.uniform());
        return uint32_t(std::min<size_t>(size_t(it - cdf.begin()), cdf.size() - 1));
    }
};

std::string fmt_knob(double v) {
    return fmt::format("{:g}", v);
}

}  // namespace

std::string synth_model_name(const synth_params& p) {
    std::string s =
        fmt::format("synthetic-zipf-s{}-r{}-c{}", fmt_knob(p.skew), fmt_knob(p.reuse), fmt_knob(p.layer_corr));
    if (p.drift > 0) s += "-d" + fmt_knob(p.drift);
    return s;
}

void check_synth_params(const synth_params& p) {
    if (p.n_layers == 0 || p.n_experts == 0 || p.top_k == 0 || p.n_tokens == 0 || p.n_seqs == 0)
        fail("synthetic trace: layers, experts, top-k, tokens and seqs must be positive (got {}, {}, {}, {}, {})",
             p.n_layers, p.n_experts, p.top_k, p.n_tokens, p.n_seqs);
    if (p.top_k > p.n_experts) fail("synthetic trace: top-k {} exceeds the {} experts", p.top_k, p.n_experts);
    check_trace_shape(p.n_layers, p.n_experts, p.top_k, "synthetic trace:");
    if (p.n_tokens > k_synth_max_rows / p.n_layers)
        fail("synthetic trace: {} tokens x {} layers is above the limit of {} rows (token x layer)", p.n_tokens,
             p.n_layers, k_synth_max_rows);
    if (p.n_tokens * p.n_layers > k_synth_max_accesses / p.top_k)
        fail("synthetic trace: {} tokens x {} layers x top-k {} is above the limit of {} expert accesses", p.n_tokens,
             p.n_layers, p.top_k, k_synth_max_accesses);
    auto prob_ok = [](double v) { return v >= 0.0 && v <= 1.0; };
    if (!prob_ok(p.reuse) || !prob_ok(p.layer_corr) || !prob_ok(p.drift))
        fail("synthetic trace: reuse, layer-corr and drift are probabilities in [0, 1] (got {}, {}, {})", p.reuse,
             p.layer_corr, p.drift);
    if (!(p.skew >= 0.0) || p.skew > 10.0) fail("synthetic trace: skew must be in [0, 10] (got {})", p.skew);
}

routing_trace generate_trace(const synth_params& p) {
    check_synth_params(p);

    rng r(p.seed);
    const uint32_t L = p.n_layers, E = p.n_experts, K = p.top_k;
    zipf z(E, p.skew);
    std::vector<std::vector<uint32_t>> popular(L, std::vector<uint32_t>(E));   // (L, E) rank -> expert id
    std::vector<std::vector<uint32_t>> next_map(L, std::vector<uint32_t>(E));  // (L, E) layer l-1 expert -> l
    for (uint32_t l = 0; l < L; ++l) {
        std::iota(popular[l].begin(), popular[l].end(), 0u);
        r.shuffle(popular[l]);
        std::iota(next_map[l].begin(), next_map[l].end(), 0u);
        r.shuffle(next_map[l]);
    }

    routing_trace t;
    t.model = synth_model_name(p);
    t.n_layers = L;
    t.n_experts = E;
    t.top_k = K;
    t.rows.reserve(p.n_tokens * L);
    std::vector<std::vector<uint32_t>> prev(L);  // (L, K) previous token's choice per layer, rank order
    std::vector<uint32_t> cur;
    std::vector<double> logits(K);
    uint64_t per_seq = (p.n_tokens + p.n_seqs - 1) / p.n_seqs;
    uint32_t seq = 0, token = 0;
    for (uint64_t i = 0; i < p.n_tokens; ++i) {
        if (i > 0 && i % per_seq == 0) {
            ++seq;
            token = 0;
            for (auto& v : prev) v.clear();  // a new request has no previous token
            // Drift: swap a fraction of each layer's popularity ranks with random others.
            uint32_t n_swaps = uint32_t(std::lround(p.drift * E));
            for (uint32_t l = 0; l < L; ++l)
                for (uint32_t s = 0; s < n_swaps; ++s) std::swap(popular[l][r.below(E)], popular[l][r.below(E)]);
        }
        for (uint32_t l = 0; l < L; ++l) {
            cur.clear();
            const std::vector<uint32_t>* above = l > 0 ? &t.rows.back().experts : nullptr;
            for (uint32_t j = 0; j < K; ++j) {
                uint32_t e;
                double u = r.uniform();
                if (u < p.reuse && j < prev[l].size())
                    e = prev[l][j];
                else if (u < p.reuse + (1.0 - p.reuse) * p.layer_corr && above && j < above->size())
                    e = next_map[l][(*above)[j]];
                else
                    e = popular[l][z.draw(r)];
                while (std::find(cur.begin(), cur.end(), e) != cur.end()) e = popular[l][z.draw(r)];
                cur.push_back(e);
            }
            // Router-like weights: sorted logits, softmax, renormalised over the top-k (already sums to 1).
            for (auto& x : logits) x = 1.5 * r.normal();
            std::sort(logits.begin(), logits.end(), std::greater<>());
            trace_row row;
            row.seq = seq;
            row.token = token;
            row.layer = l;
            row.experts = cur;
            row.weights.resize(K);
            double sum = 0;
            for (uint32_t j = 0; j < K; ++j) sum += std::exp(logits[j] - logits[0]);
            for (uint32_t j = 0; j < K; ++j) row.weights[j] = float(std::exp(logits[j] - logits[0]) / sum);
            prev[l] = cur;
            t.rows.push_back(std::move(row));
        }
        ++token;
    }
    return t;
}

}  // namespace moe
