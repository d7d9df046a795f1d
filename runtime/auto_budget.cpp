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

uint64_t elements(const tensor_desc& t) {
    uint64_t n = 1;
    for (int i = 0; i < t.n_dims; ++i) n *= uint64_t(t.ne[i]);
    return n;
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

memory_need estimate_memory_need(const model_file& file, const model_desc& d, int n_ctx, int n_batch, bool cuda) {
    std::set<std::string> expert_tensors;
    for (const expert_entry& e : d.layout.experts)
        for (const expert_range& r : e.ranges) expert_tensors.insert(r.tensor);
    memory_need n;
    for (const tensor_desc& t : file.tensors)
        if (!expert_tensors.count(t.name)) n.resident_bytes += elements(t) * sizeof(float);
    // Tied embeddings: the loader keeps a second F32 copy as the output projection.
    if (!file.find("output.weight") && !file.find("lm_head.weight"))
        for (const char* name : {"token_embd.weight", "model.embed_tokens.weight"})
            if (const tensor_desc* t = file.find(name)) n.resident_bytes += elements(*t) * sizeof(float);

    const uint64_t L = uint64_t(d.n_layers), C = uint64_t(std::max(1, n_ctx)), Hkv = uint64_t(d.n_head_kv);
    n.kv_bytes = L * C * Hkv * uint64_t(d.head_dim_k + d.head_dim_v) * sizeof(float);
    const uint64_t B = uint64_t(std::max(1, n_batch)), D = uint64_t(d.n_embd), K = uint64_t(d.n_experts_used);
    const uint64_t F = uint64_t(std::max(d.n_ff_exp, d.n_ff_shexp)), H = uint64_t(d.n_head);
    n.workspace_bytes = (B * D * (2 + K) + H * (uint64_t(d.head_dim_k + d.head_dim_v) + C) + 2 * uint64_t(d.n_experts) +
                         2 * F + 2 * uint64_t(d.n_vocab) + D) *
                        sizeof(float);
    // Routing of a batch (ids, weights, their device copies, output pointers), pins, per-expert marks, and the
    // speculative router logits of a few layers ahead.
    const uint64_t E = uint64_t(d.n_experts);
    n.workspace_bytes +=
        B * K * (4 * sizeof(float) + sizeof(void*)) + K * 64 + E * (1 + sizeof(int)) + 8 * E * sizeof(float);
    if (cuda) n.workspace_bytes += 64ull << 20;  // backend_cuda_config: matmul + cuBLAS workspaces
    return n;
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
