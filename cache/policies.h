// The catalogue of eviction policies, by name, so the simulator, the runtime and the C API pick one from a
// flag. Each policy lives in its own policy_<name>.cpp.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cache/eviction_policy.h"

namespace moe {

struct routing_trace;  // cache/trace.h

struct policy_params {
    uint32_t n_layers = 0;   // MoE layers (per-layer quota policies split the capacity evenly over them)
    uint32_t n_experts = 0;  // experts per layer
    uint64_t capacity = 0;   // expert slots shared by all layers
    // Belady needs the future: the trace it will be replayed on (nullptr for online policies).
    const routing_trace* future = nullptr;
};

// Names accepted by make_policy ("lru", "lru-layer", "lfu", ..., "belady").
std::vector<std::string> policy_names();
// Throws moe::error listing the valid names when `name` is unknown, or when the policy needs what the
// params lack (belady without a trace).
std::unique_ptr<eviction_policy> make_policy(std::string_view name, const policy_params& params);

}  // namespace moe
