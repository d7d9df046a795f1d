// Sizing expert budgets from free memory (see auto_budget.h).
#include "runtime/auto_budget.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "common/error.h"
#include "common/gpu.h"
#include "common/units.h"
#include "runtime/backend_cuda.h"
#include "runtime/model.h"
#include "runtime/resident_weights.h"

namespace moe {

namespace {

std::optional<uint64_t> meminfo_field(std::string_view text, std::string_view key) {
    size_t at = 0;
    while (at < text.size()) {
        size_t eol = text.find('\n', at);
        if (eol == std::string_view::npos) eol = text.size();
        std::string_view line = text.substr(at, eol - at);
        at = eol + 1;
        if (line.size() <= key.size() || line.substr(0, key.size()) != key || line[key.size()] != ':') continue;
        std::istringstream in{std::string(line.substr(key.size() + 1))};
        uint64_t kib = 0;
        std::string unit;
        if (!(in >> kib)) return std::nullopt;
        in >> unit;
        return unit == "kB" ? kib * 1024 : kib;  // /proc/meminfo says kB (meaning KiB); a bare number is bytes
    }
    return std::nullopt;
}

std::optional<uint64_t> read_number_file(const char* path) {
    std::ifstream in(path);
    uint64_t v = 0;
    if (!(in >> v)) return std::nullopt;  // also "max": no limit
    return v;
}

}  // namespace

std::optional<uint64_t> parse_mem_available(std::string_view meminfo) {
    return meminfo_field(meminfo, "MemAvailable");
}

std::optional<free_memory> available_ram() {
    std::ifstream in("/proc/meminfo");
    if (!in) return std::nullopt;
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    const std::optional<uint64_t> avail = parse_mem_available(text);
    if (!avail) return std::nullopt;
    free_memory m;
    m.free_bytes = *avail;
    m.total_bytes = meminfo_field(text, "MemTotal").value_or(*avail);
    m.name = "MemAvailable";
    // A container's memory.max is enforced by the OOM killer whatever MemAvailable says about the host.
    const std::optional<uint64_t> limit = read_number_file("/sys/fs/cgroup/memory.max");
    const std::optional<uint64_t> used = read_number_file("/sys/fs/cgroup/memory.current");
    if (limit && used) {
        const uint64_t headroom = *limit > *used ? *limit - *used : 0;
        if (headroom < m.free_bytes) {
            m.free_bytes = headroom;
            m.total_bytes = std::min(m.total_bytes, *limit);
            m.name = "RAM left under the cgroup's memory.max";
        }
    }
    return m;
}

std::optional<free_memory> free_vram() {
    free_memory m;
    if (!gpu_memory_info(m.free_bytes, m.total_bytes, 0)) return std::nullopt;
    m.name = "free VRAM";
    return m;
}

uint64_t estimate_resident_bytes(const model_file& file, const model_desc& d, bool cuda) {
    if (forward_supported(d.architecture) && d.rope_scale.type == rope_scaling_type::NONE)
        return plan_resident_weights(file, d, compute_type_support(cuda)).bytes;
    // Not runnable yet: every tensor that is not a routed expert, as stored (what the loader will keep once the
    // forward pass supports the architecture).
    std::set<std::string> expert_tensors;
    for (const expert_entry& e : d.layout.experts)
        for (const expert_range& r : e.ranges) expert_tensors.insert(r.tensor);
    uint64_t bytes = 0;
    for (const tensor_desc& t : file.tensors)
        if (!expert_tensors.count(t.name))
            bytes += (t.bytes + k_resident_align - 1) / k_resident_align * k_resident_align;
    return bytes;
}

memory_need estimate_memory_need(const model_file& file, const model_desc& d, int n_ctx, int n_batch, bool cuda,
                                 int n_seq) {
    memory_need n;
    n.resident_bytes = estimate_resident_bytes(file, d, cuda);
    n.kv_bytes = uint64_t(std::max(1, n_seq)) * kv_cache_bytes(d, n_ctx);
    // An upper bound of forward_pass's workspaces (forward.h lists them; keep the two in step: moe run refuses to
    // run when the engine allocates more than this). Batch-wide activations: the residual, its normed copy, block
    // outputs and gathered rows (4 x B x D), expert outputs by rank (B x K x D), q and attention outputs, router
    // logits, gate and up, shared-expert gates; then the attention scores (n_head x n_ctx), the output head's
    // logits (up to 32 rows on the device, one on the host), probabilities, and the residual normed for the
    // speculative routers.
    const uint64_t C = uint64_t(std::max(1, n_ctx)), B = uint64_t(std::max(1, n_batch));
    const uint64_t D = uint64_t(d.n_embd), K = uint64_t(d.n_experts_used), E = uint64_t(d.n_experts);
    const uint64_t F = uint64_t(std::max(d.n_ff_exp, d.n_ff_shexp)), H = uint64_t(d.n_head);
    const uint64_t V = uint64_t(d.n_vocab), Ln = uint64_t(std::max(1, d.n_layers));
    const uint64_t head_rows = std::min<uint64_t>(B, 32), S = uint64_t(std::max(1, n_seq));
    const uint64_t last_rows = std::min(S, B);  // host logits: the last row of each sequence of a step
    n.workspace_bytes = (B * D * (4 + K) + B * H * uint64_t(d.head_dim_k + d.head_dim_v) + B * E + 2 * B * F + B +
                         H * C + (head_rows + last_rows) * V + E + D) *
                        sizeof(float);
    // The step's layout: positions per sequence and per row, segments.
    n.workspace_bytes += (S + B) * sizeof(int) + last_rows * 3 * sizeof(int);
    // Routing of a batch (ids, weights, their device copies, output pointers), gathers, pins and groups,
    // per-expert marks, visiting order and output rows, the MoE layer table, and the speculative router logits of the
    // layers ahead (device and host copies; the prefetcher looks at most every layer ahead).
    n.workspace_bytes += B * K * (4 * sizeof(float) + sizeof(void*)) + 2 * B * sizeof(int) + K * (64 + sizeof(int)) +
                         E * (1 + 2 * sizeof(int)) + Ln * sizeof(int) + 2 * Ln * E * sizeof(float);
    if (cuda) n.workspace_bytes += cuda_backend_workspace_bytes();
    return n;
}

uint64_t kv_cache_bytes(const model_desc& d, int n_ctx) {
    const uint64_t L = uint64_t(d.n_layers), C = uint64_t(std::max(1, n_ctx)), Hkv = uint64_t(d.n_head_kv);
    return L * C * Hkv * uint64_t(d.head_dim_k + d.head_dim_v) * sizeof(float);
}

uint64_t cuda_backend_workspace_bytes() {
    const backend_cuda_config c;
    return c.matmul_workspace_bytes + c.cublas_workspace_bytes;
}

std::string format_breakdown(const memory_need& need, uint32_t n_slots, uint64_t slot_bytes) {
    return fmt::format("resident {} + KV cache {} + workspace {} + {} expert slot(s) of {} ({})",
                       format_bytes(need.resident_bytes), format_bytes(need.kv_bytes),
                       format_bytes(need.workspace_bytes), n_slots, format_bytes(slot_bytes),
                       format_bytes(uint64_t(n_slots) * slot_bytes));
}

budget_plan plan_compute_budget(uint64_t budget, const memory_need& need, uint64_t slot_bytes, uint32_t n_experts_total,
                                uint32_t min_slots, std::string_view source, std::string_view flag,
                                std::string_view reason) {
    MOE_CHECK(slot_bytes > 0);
    budget_plan p;
    p.budget_bytes = budget;
    p.need = need;
    p.slot_bytes = slot_bytes;
    p.min_budget_bytes = need.total() + uint64_t(min_slots) * slot_bytes;
    const uint64_t left = budget > need.total() ? budget - need.total() : 0;
    const uint64_t fit = left / slot_bytes;
    if (fit < min_slots)
        throw budget_error(fmt::format(
            "{}: {} {} ({} bytes) is too small: it must hold the resident weights, the KV cache and the workspaces "
            "besides the expert slots, and {}, so it needs at least {} ({} bytes) = {}",
            source, flag, format_bytes(budget), budget,
            reason.empty() ? fmt::format("the forward pass pins one layer's top-{} experts at once", min_slots)
                           : std::string(reason),
            format_bytes(p.min_budget_bytes), p.min_budget_bytes, format_breakdown(need, min_slots, slot_bytes)));
    p.every_expert = fit >= n_experts_total;
    p.n_slots = uint32_t(std::min<uint64_t>(fit, n_experts_total));
    return p;
}

uint64_t safety_margin(const free_memory& mem) {
    return std::max<uint64_t>(512ull << 20, mem.total_bytes / 20);
}

budget_choice choose_expert_budget(const free_memory& mem, const memory_need& need, uint64_t slot_bytes,
                                   uint32_t n_experts_total, uint32_t min_slots, std::string_view source) {
    MOE_CHECK(slot_bytes > 0);
    const uint64_t margin = safety_margin(mem);
    const uint64_t taken = need.total() + margin;
    const uint64_t usable = mem.free_bytes > taken ? mem.free_bytes - taken : 0;
    const std::string figures = fmt::format(
        "{} {} - {} resident weights - {} KV cache - {} workspace - {} margin = {}", format_bytes(mem.free_bytes),
        mem.name, format_bytes(need.resident_bytes), format_bytes(need.kv_bytes), format_bytes(need.workspace_bytes),
        format_bytes(margin), mem.free_bytes > taken ? format_bytes(usable) : "nothing");
    const uint64_t fit = usable / slot_bytes;
    if (fit < min_slots)
        fail(
            "{}: no --vram-budget given, and free memory leaves too little for expert slots: {}; the forward pass "
            "pins one layer's top-{} experts at once, so it needs at least {} ({} slots of {}): free some memory, "
            "or pass --vram-budget (at least {}) to override",
            source, figures, min_slots, format_bytes(uint64_t(min_slots) * slot_bytes), min_slots,
            format_bytes(slot_bytes), format_bytes(uint64_t(min_slots) * slot_bytes));
    budget_choice c;
    c.every_expert = fit >= n_experts_total;
    c.n_slots = uint32_t(std::min<uint64_t>(fit, n_experts_total));
    c.budget_bytes = uint64_t(c.n_slots) * slot_bytes;
    c.explain = figures;
    return c;
}

std::optional<budget_choice> choose_host_budget(const free_memory& ram, uint64_t host_resident_bytes,
                                                uint64_t slot_bytes, uint32_t n_experts_total, uint32_t compute_slots) {
    MOE_CHECK(slot_bytes > 0);
    if (compute_slots >= n_experts_total) return std::nullopt;
    const uint64_t margin = safety_margin(ram);
    const uint64_t taken = host_resident_bytes + margin;
    const uint64_t usable = ram.free_bytes > taken ? (ram.free_bytes - taken) / 2 : 0;
    const uint64_t fit = std::min<uint64_t>(usable / slot_bytes, n_experts_total);
    if (fit <= compute_slots) return std::nullopt;
    budget_choice c;
    c.n_slots = uint32_t(fit);
    c.every_expert = fit >= n_experts_total;
    c.budget_bytes = fit * slot_bytes;
    c.explain =
        fmt::format("half of ({} {} - {} host copy of the resident weights - {} margin)", format_bytes(ram.free_bytes),
                    ram.name, format_bytes(host_resident_bytes), format_bytes(margin));
    return c;
}

}  // namespace moe
