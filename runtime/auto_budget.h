// Sizing the expert budget from free memory when the user gives none (`moe run` without --vram-budget).
// The compute tier gets what the memory the backend computes in has free (VRAM for CUDA, MemAvailable for the
// CPU) after everything else the engine puts there (resident weights as F32, KV cache, workspaces) and a safety
// margin, in whole slots, capped at every expert. With the CUDA backend the host tier is sized the same way
// from RAM. A budget below the smallest workable one (one layer's top-k pinned at once) is refused with the
// figures, so the user knows what to free or which flag to pass.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "runtime/model_desc.h"
#include "runtime/model_file.h"

namespace moe {

// A memory the budget comes from: what is free now, its size, and its name for messages.
struct free_memory {
    uint64_t free_bytes = 0;
    uint64_t total_bytes = 0;
    std::string name;  // "MemAvailable", "free VRAM of device 0", ...
};

// MemAvailable from /proc/meminfo, lowered to the headroom under a cgroup v2 memory.max when one is set (a
// container's limit is what the kernel enforces). nullopt when /proc/meminfo cannot be read.
std::optional<free_memory> available_ram();
// The MemAvailable line of a /proc/meminfo text, in bytes (for tests).
std::optional<uint64_t> parse_mem_available(std::string_view meminfo);
// cudaMemGetInfo of device 0; nullopt without a GPU.
std::optional<free_memory> free_vram();

// What the engine keeps in the compute memory besides expert slots. Estimates made before loading anything,
// from the tensor table: the resident weights exactly as the loader places them (plan_resident_weights: matrices
// in their stored type, vectors as F32, each aligned).
struct memory_need {
    uint64_t resident_bytes = 0;   // every tensor that is not a routed expert, as placed in compute memory
    uint64_t kv_bytes = 0;         // F32 K and V for n_ctx positions of every layer
    uint64_t workspace_bytes = 0;  // activations of one batch (+ the CUDA backend's matmul/cuBLAS workspaces)
    uint64_t total() const { return resident_bytes + kv_bytes + workspace_bytes; }
};
// The resident weights' bytes in compute memory (cuda: the CUDA backend's kernels decide which types stay as
// stored). For an architecture the forward pass cannot run yet: its non-expert tensors as stored.
uint64_t estimate_resident_bytes(const model_file& file, const model_desc& desc, bool cuda);
// n_seq: sequences of one forward pass (a server's parallel conversations), each with a KV cache of n_ctx positions.
memory_need estimate_memory_need(const model_file& file, const model_desc& desc, int n_ctx, int n_batch, bool cuda,
                                 int n_seq = 1);
// The KV cache the forward pass allocates for n_ctx positions (exact: F32 K and V rows of every layer).
uint64_t kv_cache_bytes(const model_desc& desc, int n_ctx);
// The CUDA backend's fixed device workspaces (backend_cuda_config's matmul + cuBLAS workspaces).
uint64_t cuda_backend_workspace_bytes();

// An explicit compute-memory budget (--vram-budget) split as invariant 1 of docs/invariants.md (budgets are hard) asks:
// the resident weights, the KV cache and the workspaces come first, the expert slots get what is left, in whole slots,
// capped at every expert. The budget covers everything the engine puts in the memory it computes in (VRAM with CUDA,
// RAM on the CPU), not only the slots.
struct budget_plan {
    uint64_t budget_bytes = 0;  // the budget as given
    memory_need need;           // what comes before the slots (estimated: at least what the engine allocates)
    uint64_t slot_bytes = 0;
    uint32_t n_slots = 0;           // expert slots that fit after `need`, capped at every expert
    bool every_expert = false;      // the cap was reached
    uint64_t min_budget_bytes = 0;  // need + min_slots slots: the smallest budget that runs
    uint64_t expert_bytes() const { return uint64_t(n_slots) * slot_bytes; }
    uint64_t total() const { return need.total() + expert_bytes(); }  // <= budget_bytes
};
// Throws moe::error naming `source` and `flag` with the breakdown and the minimum when the budget cannot hold
// `need` plus min_slots slots (one layer's top-k experts are pinned at once).
// `reason` says why min_slots slots are the least (default: one layer's top-k pinned at once).
budget_plan plan_compute_budget(uint64_t budget, const memory_need& need, uint64_t slot_bytes, uint32_t n_experts_total,
                                uint32_t min_slots, std::string_view source, std::string_view flag,
                                std::string_view reason = {});
// "resident 163.25 KiB + KV cache 8.00 KiB + workspace 12.34 KiB + 3 expert slots of 24.00 KiB (72.00 KiB)"
std::string format_breakdown(const memory_need& need, uint32_t n_slots, uint64_t slot_bytes);

// The margin kept free: 5% of the memory, at least 512 MiB (allocator slack, the CUDA context, other programs).
uint64_t safety_margin(const free_memory& mem);

struct budget_choice {
    uint64_t budget_bytes = 0;  // whole slots, at most one per expert
    uint32_t n_slots = 0;
    bool every_expert = false;  // capped: every expert has a slot
    std::string explain;        // how it was chosen, one line: "2.00 GiB MemAvailable - ... = ..."
};

// The compute-tier budget: free - need - margin in whole slots of slot_bytes, capped at n_experts_total slots.
// Throws moe::error naming `source`, the figures and the minimum when fewer than min_slots slots fit.
budget_choice choose_expert_budget(const free_memory& mem, const memory_need& need, uint64_t slot_bytes,
                                   uint32_t n_experts_total, uint32_t min_slots, std::string_view source);

// The host-tier budget under a GPU compute tier holding compute_slots: half of what RAM has free after the host's
// own copy of the resident weights and the margin (pinned pages cannot be swapped, so leave the rest of the
// machine room), capped at every expert. nullopt when that is not more slots than the compute tier already has
// (a host tier no larger than the tier above it would hold nothing new) or every expert is already on the GPU.
std::optional<budget_choice> choose_host_budget(const free_memory& ram, uint64_t host_resident_bytes,
                                                uint64_t slot_bytes, uint32_t n_experts_total, uint32_t compute_slots);

}  // namespace moe
