// Helpers shared by `moe run` and `moe bench run`: timing, the --backend flag, what a built engine holds in the
// memory it computes in (checked against the budget it was planned for), and the per-link transfer figures.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "prefetch/link_meter.h"
#include "runtime/auto_budget.h"
#include "runtime/engine.h"

namespace moe::cli {

using clock_type = std::chrono::steady_clock;

inline double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}
// n per second; 0 for no time.
inline double rate(uint64_t n, double s) {
    return s > 0.0 ? double(n) / s : 0.0;
}

// "1,17,42" -> {"1", "17", "42"} (an empty text gives no items).
std::vector<std::string> split_commas(const std::string& text);
// The whole of `item` as an int; nullopt for anything else ("", "4x", "1e3", out of range).
std::optional<int> parse_int(const std::string& item);

// --backend cpu|cuda|auto.
backend_kind parse_backend(std::string_view name);
// Whether an engine built with `kind` computes on the GPU (AUTO: when the CUDA backend is usable).
bool computes_on_cuda(backend_kind kind);

// What a built engine holds in the memory it computes in: the resident weights there (the device copy with
// CUDA, the loaded F32 weights on the CPU), the KV cache, the workspaces (the CUDA backend's fixed ones
// included) and the expert slots.
struct footprint {
    memory_need need;  // measured, in memory_need's fields
    uint32_t n_slots = 0;
    uint64_t slot_bytes = 0;
    uint64_t expert_bytes() const { return uint64_t(n_slots) * slot_bytes; }
    uint64_t total() const { return need.total() + expert_bytes(); }
};
footprint measure_footprint(const engine& eng);
// After building an engine for `plan`: throws moe::error, naming `source` and both breakdowns, when what the
// engine allocated exceeds the budget (the estimate it was planned with was low; a bug to report, never a budget
// silently exceeded).
void check_footprint(const footprint& real, const budget_plan& plan, std::string_view source);
// "resident R + KV cache K + workspace W + N expert slots of S (E) = T"
std::string format_footprint(const footprint& f);

// One link of the expert path and what moved over it (prefetch/link_meter.h defines the busy time).
struct link_row {
    std::string name;  // file->ram, ram->vram, host->ram, staging->ram
    std::string unit;  // "reads" or "copies"
    link_stats stats;
};
// The links of an engine: the streamer's reads, its copies on the staged path, the host tier's copies.
std::vector<link_row> engine_links(const engine& eng);
// One summary line per link: "link       file->ram  1.50 MiB in 64 reads, 0.82 GB/s (busy 1.9 ms; ...)".
std::string links_summary(const std::vector<link_row>& links);
// [{name, bytes, transfers, seconds, gb_per_s, transfer_seconds, failed}]
nlohmann::ordered_json links_json(const std::vector<link_row>& links);

}  // namespace moe::cli
