#include "runtime/trace_routing.h"

#include <cstdint>
#include <memory>
#include <vector>

#include "common/error.h"

namespace moe {

namespace {

struct trace_cursors {
    std::vector<std::vector<std::vector<int>>> rows;  // (layer) that layer's rows, file order
    std::vector<size_t> next;                         // (layer) the row its next decision takes
};

}  // namespace

routing_override trace_routing_override(const routing_trace& t, const model_desc& d, const std::string& name) {
    const uint32_t n_layers = uint32_t(d.layout.n_moe_layers), n_experts = uint32_t(d.n_experts);
    const uint32_t top_k = uint32_t(d.n_experts_used);
    if (t.n_layers != n_layers || t.n_experts != n_experts || t.top_k != top_k)
        fail(
            "routing trace {}: its shape is {} MoE layers x {} experts, top-{}, but the model {} has {} MoE layers x "
            "{} "
            "experts, top-{}",
            name, t.n_layers, t.n_experts, t.top_k, d.name, n_layers, n_experts, top_k);
    auto c = std::make_shared<trace_cursors>();
    c->rows.resize(n_layers);
    c->next.assign(n_layers, 0);
    for (const trace_row& r : t.rows) {
        // parse_trace has checked the layer, the ids and the row size; a trace built in memory is checked again.
        if (r.layer >= n_layers || r.experts.empty() || r.experts.size() > top_k)
            fail("routing trace {}: row of MoE layer {} with {} experts does not fit {} layers, top-{}", name, r.layer,
                 r.experts.size(), n_layers, top_k);
        std::vector<int> ids;
        for (uint32_t e : r.experts) {
            if (e >= n_experts) fail("routing trace {}: expert id {} out of range [0, {})", name, e, n_experts);
            ids.push_back(int(e));
        }
        c->rows[r.layer].push_back(std::move(ids));
    }
    for (uint32_t l = 0; l < n_layers; ++l)
        if (c->rows[l].empty())
            fail("routing trace {}: no row for MoE layer {} (the model {} has {} MoE layers)", name, l, d.name,
                 n_layers);
    return [c](int, int moe_layer, std::vector<int>& experts) {
        const size_t l = size_t(moe_layer);
        const std::vector<std::vector<int>>& rows = c->rows[l];
        size_t& next = c->next[l];
        experts = rows[next];
        next = (next + 1) % rows.size();
    };
}

}  // namespace moe
