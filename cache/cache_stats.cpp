// Aggregation and printing of per-layer cache statistics.
#include "cache/cache_stats.h"

#include <fmt/format.h>

#include "common/units.h"

namespace moe {

layer_stats& layer_stats::operator+=(const layer_stats& o) {
    hits += o.hits;
    prefetch_hits += o.prefetch_hits;
    misses += o.misses;
    joins += o.joins;
    evictions += o.evictions;
    loads += o.loads;
    prefetch_loads += o.prefetch_loads;
    failed_loads += o.failed_loads;
    bytes_loaded += o.bytes_loaded;
    wait_ns += o.wait_ns;
    prefetch_joins += o.prefetch_joins;
    cancelled_loads += o.cancelled_loads;
    prefetch_unused_evictions += o.prefetch_unused_evictions;
    prefetch_unused_bytes += o.prefetch_unused_bytes;
    return *this;
}

double layer_stats::hit_rate() const {
    uint64_t n = hits + misses;
    return n == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(n);
}

double layer_stats::prefetch_recall() const {
    uint64_t n = hits + misses;
    return n == 0 ? 0.0 : static_cast<double>(prefetch_used()) / static_cast<double>(n);
}

double layer_stats::prefetch_precision() const {
    return prefetch_loads == 0 ? 0.0 : static_cast<double>(prefetch_used()) / static_cast<double>(prefetch_loads);
}

layer_stats cache_stats::total() const {
    layer_stats t;
    for (const auto& l : layers) t += l;
    return t;
}

namespace {
std::string row(const std::string& name, const layer_stats& s) {
    return fmt::format("{:>6} {:>10} {:>10} {:>7.2f}% {:>9} {:>9} {:>9} {:>7} {:>12} {:>10.3f}\n", name, s.hits,
                       s.misses, 100.0 * s.hit_rate(), s.prefetch_hits, s.evictions, s.loads, s.failed_loads,
                       format_bytes(s.bytes_loaded), static_cast<double>(s.wait_ns) * 1e-6);
}
}  // namespace

std::string cache_stats::format() const {
    std::string out = fmt::format("{:>6} {:>10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>7} {:>12} {:>10}\n", "layer", "hits",
                                  "misses", "hit rate", "pf hits", "evictions", "loads", "failed", "loaded", "wait ms");
    for (size_t i = 0; i < layers.size(); i++) {
        const auto& l = layers[i];
        if (l.hits + l.misses + l.loads + l.evictions == 0) continue;
        out += row(std::to_string(i), l);
    }
    out += row("total", total());
    return out;
}

}  // namespace moe
