// Replaying a recorded routing trace (moe-trace v1) in place of the router, for benchmarks: a random-weight model
// routes almost uniformly (the worst case for an expert cache); replaying the routing of a real model's run
// reproduces its locality. Each MoE layer has its own cursor over that layer's rows, in file order: every
// (token, layer) routing decision takes the next row of its layer, wrapping around at the end. The trace's token
// positions are not matched to the sequence's; only the order of the rows counts.
#pragma once

#include <string>

#include "cache/trace.h"
#include "runtime/forward.h"
#include "runtime/model_desc.h"

namespace moe {

// Throws moe::error (naming `name` and both shapes) when the trace's n_layers / n_experts / top_k differ from the
// model's MoE layers / experts / experts per token, or when some MoE layer has no row. The returned override owns
// a copy of the rows and its cursors, which start at each layer's first row: make a new one to start over.
routing_override trace_routing_override(const routing_trace& t, const model_desc& d, const std::string& name);

}  // namespace moe
