// The policy catalogue: names -> constructors, with errors that list what is valid.
#include "cache/policies.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cache/policy_belady.h"
#include "cache/policy_lfu.h"
#include "cache/policy_lfu_recent.h"
#include "cache/policy_lru.h"
#include "cache/policy_lru_layer.h"
#include "common/error.h"

namespace moe {

std::vector<std::string> policy_names() {
    return {"lru", "lru-layer", "lfu", "lfu-recent", "belady"};
}

std::unique_ptr<eviction_policy> make_policy(std::string_view name, const policy_params& p) {
    if (p.n_layers == 0 || p.n_experts == 0)
        fail("policy '{}': n_layers and n_experts must be positive (got {} and {})", name, p.n_layers, p.n_experts);
    if (name == "lru") return std::make_unique<lru_policy>(p.n_layers, p.n_experts);
    if (name == "lru-layer") return std::make_unique<lru_layer_policy>(p.n_layers, p.n_experts, p.capacity);
    if (name == "lfu") return std::make_unique<lfu_policy>(p.n_layers, p.n_experts, p.capacity);
    if (name == "lfu-recent") return std::make_unique<lfu_recent_policy>(p.n_layers, p.n_experts, p.capacity);
    if (name == "belady") {
        if (!p.future) fail("policy 'belady' needs the trace it will replay (offline optimum, evaluation only)");
        return std::make_unique<belady_policy>(*p.future, p.n_layers, p.n_experts);
    }
    fail("unknown eviction policy '{}': valid policies are {}", name, fmt::join(policy_names(), ", "));
}

}  // namespace moe
