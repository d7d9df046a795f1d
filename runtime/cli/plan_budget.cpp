// The budget plan shared by `moe run` and `moe serve` (see plan_budget.h).
#include "runtime/cli/plan_budget.h"

#include <fmt/format.h>

#include <cstdio>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "common/units.h"
#include "runtime/offloader.h"

namespace moe::cli {
namespace {

// Without --vram-budget (runtime/auto_budget.h): the expert budget from the free memory of the memory the backend
// computes in (VRAM for CUDA, RAM for the CPU) and, with a GPU backend and no --host-budget, a host tier from free
// RAM. Sets ec's budgets and `plan` (its budget: the free memory less the margin); returns what was chosen and
// why, for stderr.
std::string size_budgets_from_free_memory(const std::string& model_path, const model_desc& desc,
                                          const memory_need& need, engine_config& ec, bool host_given,
                                          uint32_t min_slots, budget_plan& plan, std::string_view command) {
    const bool cuda = computes_on_cuda(ec.backend);
    const std::optional<free_memory> mem = cuda ? free_vram() : available_ram();
    if (!mem)
        fail("{}: no --vram-budget given, and {} cannot be read to size one; pass --vram-budget", model_path,
             cuda ? "the GPU's free memory" : "/proc/meminfo");
    const uint64_t slot = engine::slot_bytes_for(desc);
    const uint32_t n_total = uint32_t(desc.layout.n_moe_layers * desc.layout.n_experts);
    const budget_choice c = choose_expert_budget(*mem, need, slot, n_total, min_slots, model_path);
    ec.expert_budget_bytes = c.budget_bytes;
    plan.budget_bytes = mem->free_bytes - std::min(mem->free_bytes, safety_margin(*mem));
    plan.need = need;
    plan.slot_bytes = slot;
    plan.n_slots = c.n_slots;
    plan.every_expert = c.every_expert;
    plan.min_budget_bytes = need.total() + uint64_t(min_slots) * slot;
    std::string s = fmt::format(
        "{}: no --vram-budget given: {} for expert slots in {} = {} slots of {} ({:.1f}% of the {} experts{}), "
        "sized from {}\n",
        command, format_bytes(c.budget_bytes), cuda ? "VRAM" : "RAM", c.n_slots, format_bytes(slot),
        100.0 * double(c.n_slots) / double(std::max(1u, n_total)), n_total, c.every_expert ? ": every expert fits" : "",
        c.explain);
    if (cuda && !host_given)
        if (const std::optional<free_memory> ram = available_ram())
            if (const auto h = choose_host_budget(*ram, need.resident_bytes, slot, n_total, c.n_slots)) {
                ec.host_budget_bytes = h->budget_bytes;
                s += fmt::format(
                    "{}: no --host-budget given: {} of pinned RAM for a host tier = {} slots ({:.1f}% of the "
                    "experts), sized as {}\n",
                    command, format_bytes(h->budget_bytes), h->n_slots, 100.0 * double(h->n_slots) / double(n_total),
                    h->explain);
            }
    return s;
}

}  // namespace

planned_budget plan_budget(const std::string& model_path, const model_file& mf, const model_desc& desc,
                           engine_config& ec, std::optional<uint64_t> budget, std::string_view command, int n_seq) {
    const bool cuda = computes_on_cuda(ec.backend);
    const bool host_given = ec.host_budget_bytes > 0;
    // The budget covers resident weights + KV cache + workspaces + expert slots; the slots get what is left, and the
    // offloader's rules (validate_offload_config) are checked here too, all before the weights load.
    const offload_layout layout = offload_layout_of(mf, desc);
    const tier_kind tier = cuda ? tier_kind::DEVICE : tier_kind::RAM;
    const offload_config unbudgeted = offload_config_of(ec, tier);
    const uint32_t min_slots = min_expert_slots(unbudgeted, layout);
    const uint64_t slot = offload_slot_bytes(layout.max_expert_bytes());
    const memory_need need = estimate_memory_need(mf, desc, ec.n_ctx, ec.n_batch, cuda, n_seq);
    planned_budget pb;
    pb.budget_auto = !budget;
    budget_plan& plan = pb.plan;
    if (pb.budget_auto)
        std::fputs(
            size_budgets_from_free_memory(model_path, desc, need, ec, host_given, min_slots, plan, command).c_str(),
            stderr);
    else
        plan = plan_compute_budget(*budget, need, slot, layout.n_keys(), min_slots, model_path, "--vram-budget",
                                   min_slots_reason(unbudgeted, layout));
    ec.expert_budget_bytes = plan.expert_bytes();
    std::vector<std::string> warnings;
    offload_config checked;
    try {
        checked = validate_offload_config(offload_config_of(ec, tier), layout, &warnings);
    } catch (const config_error& e) {
        const std::string msg = fmt::format("{}: {}", model_path, e.what());
        if (e.fault == config_fault::BUDGET) throw budget_error(msg);
        if (e.fault == config_fault::UNSUPPORTED) throw error(msg);
        throw usage_error(msg);  // an unknown policy, a prefetch setting out of range: a bad flag value
    }
    for (const std::string& w : warnings) warn_once(std::string(command) + ".offload_config", w);
    if (checked.prefetch.mode != ec.prefetch.mode) {
        ec.prefetch.mode = checked.prefetch.mode;
        pb.prefetch = "none (off: lru-layer share too small)";
    }

    if (pb.prefetch.empty()) pb.prefetch = std::string(prefetch_mode_name(ec.prefetch.mode));
    return pb;
}

}  // namespace moe::cli
