// The compute-memory plan of `moe run` and `moe serve`: the resident weights, the KV caches (one per sequence)
// and the workspaces come first, the expert slots get what is left of --vram-budget (or, without it, of the free
// memory less a margin); the offloader's rules are checked too, all before any weight is loaded.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "runtime/auto_budget.h"
#include "runtime/engine.h"
#include "runtime/model_desc.h"
#include "runtime/model_file.h"

namespace moe::cli {

struct planned_budget {
    budget_plan plan;
    bool budget_auto = false;  // sized from free memory
    std::string prefetch;      // the prefetch mode as shown ("none (off: ...)" when the rules turned it off)
};

// Sets ec.expert_budget_bytes (and, without --vram-budget on a GPU, ec.host_budget_bytes when ec has none) from
// `budget` (--vram-budget; nullopt: from free memory) for n_seq sequences of ec.n_ctx positions. What it chose
// without a budget goes to stderr, prefixed with `command`. Throws budget_error (exit 3) for a budget too small,
// usage_error for a bad policy or prefetch setting, moe::error for an unsupported configuration.
planned_budget plan_budget(const std::string& model_path, const model_file& mf, const model_desc& desc,
                           engine_config& ec, std::optional<uint64_t> budget, std::string_view command, int n_seq = 1);

}  // namespace moe::cli
