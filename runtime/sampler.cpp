// Token sampling (see sampler.h for the order of the filters and why it is deterministic).
#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "common/error.h"

namespace moe {

sampler::sampler(const sampler_config& cfg) : _cfg(cfg), _rng(cfg.seed) {
    if (!(cfg.top_p > 0.0f)) fail("sampler: top-p {} is out of range: expected a value in (0, 1]", cfg.top_p);
    if (!(cfg.min_p >= 0.0f && cfg.min_p <= 1.0f))
        fail("sampler: min-p {} is out of range: expected a value in [0, 1]", cfg.min_p);
    if (!(cfg.repeat_penalty > 0.0f))
        fail("sampler: repeat penalty {} is out of range: expected a value > 0 (1 = off)", cfg.repeat_penalty);
    if (cfg.repeat_last_n < -1) fail("sampler: repeat-last-n {} is out of range: expected >= -1", cfg.repeat_last_n);
    if (std::isnan(cfg.temperature)) fail("sampler: temperature is NaN");
}

void sampler::accept(int token) {
    if (_cfg.repeat_last_n == 0) return;
    _recent.push_back(token);
    if (_cfg.repeat_last_n > 0 && _recent.size() > size_t(_cfg.repeat_last_n)) _recent.pop_front();
}

void sampler::apply_repetition_penalty(std::span<float> logits, std::span<const int> recent, float penalty) {
    if (penalty == 1.0f) return;
    std::unordered_set<int> seen;
    for (int t : recent) {
        if (t < 0 || size_t(t) >= logits.size() || !seen.insert(t).second) continue;
        float& l = logits[size_t(t)];
        l = l > 0.0f ? l / penalty : l * penalty;
    }
}

std::vector<token_prob> sampler::distribution(std::span<const float> logits) const {
    MOE_CHECK(!logits.empty());
    std::vector<float> l(logits.begin(), logits.end());
    if (_cfg.repeat_penalty != 1.0f) {
        std::vector<int> recent(_recent.begin(), _recent.end());
        apply_repetition_penalty(l, recent, _cfg.repeat_penalty);
    }
    if (_cfg.temperature <= 0.0f) {
        int best = 0;
        for (size_t i = 1; i < l.size(); ++i)
            if (l[i] > l[size_t(best)]) best = int(i);
        return {token_prob{best, 1.0f}};
    }

    // Candidates sorted by logit, most likely first; ties keep the lower id first so the order is total.
    std::vector<int> ids(l.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int(i);
    std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) { return l[size_t(a)] > l[size_t(b)]; });
    size_t n = ids.size();
    if (_cfg.top_k > 0) n = std::min(n, size_t(_cfg.top_k));

    // Softmax (before temperature) of the survivors, for top-p and min-p.
    auto softmax = [&](size_t count, float temp) {
        std::vector<double> p(count);
        const double mx = l[size_t(ids[0])];
        double sum = 0.0;
        for (size_t i = 0; i < count; ++i) sum += p[i] = std::exp((double(l[size_t(ids[i])]) - mx) / double(temp));
        for (double& v : p) v /= sum;
        return p;
    };
    if (_cfg.top_p < 1.0f) {
        std::vector<double> p = softmax(n, 1.0f);
        double cum = 0.0;
        for (size_t i = 0; i < n; ++i) {
            cum += p[i];
            if (cum >= double(_cfg.top_p)) {
                n = i + 1;
                break;
            }
        }
    }
    if (_cfg.min_p > 0.0f) {
        std::vector<double> p = softmax(n, 1.0f);
        const double cut = double(_cfg.min_p) * p[0];
        size_t keep = 1;
        while (keep < n && p[keep] >= cut) ++keep;
        n = keep;
    }
    std::vector<double> p = softmax(n, _cfg.temperature);
    std::vector<token_prob> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = token_prob{ids[i], float(p[i])};
    return out;
}

double sampler::uniform() {
    return double(_rng() >> 11) * 0x1.0p-53;
}

int sampler::sample(std::span<const float> logits) {
    std::vector<token_prob> d = distribution(logits);
    if (d.size() == 1) return d[0].id;
    // Inverse CDF over the sorted candidates; a u beyond the float-rounded total falls on the last one.
    const double u = uniform();
    double cum = 0.0;
    for (const token_prob& t : d) {
        cum += double(t.p);
        if (u < cum) return t.id;
    }
    return d.back().id;
}

}  // namespace moe
