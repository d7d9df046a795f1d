// What a generation run did, gathered once from the model, the offloader and the session: the memory it holds
// against its budget, the summary `moe run` prints, and the statistics object `moe run --stats-json` writes
// (docs/stats-json.md). The CLI commands, the C API and a server use these rather than each building their own.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/auto_budget.h"
#include "runtime/model.h"
#include "runtime/offloader.h"
#include "runtime/session.h"

namespace moe {

// What a model, its offloader and sessions hold in the memory they compute in: the resident weights (in their
// stored types), the sessions' KV caches, the workspaces (the CUDA backend's fixed ones included) and the expert
// slots.
struct footprint {
    memory_need need;  // measured, in memory_need's fields
    uint32_t n_slots = 0;
    uint64_t slot_bytes = 0;
    uint64_t expert_bytes() const { return uint64_t(n_slots) * slot_bytes; }
    uint64_t total() const { return need.total() + expert_bytes(); }
};
footprint measure_footprint(const model& m, const offloader& off, std::span<const session* const> sessions);
footprint measure_footprint(const model& m, const offloader& off, const session& s);
// One forward pass of n_seq sequences (a server's): its n_seq KV caches and workspaces.
footprint measure_footprint(const model& m, const offloader& off, const forward_pass& fwd);
// After building for `plan`: throws moe::error, naming `source` and both breakdowns, when what was allocated exceeds
// the budget (the estimate it was planned with was low; a bug to report, never a budget silently exceeded).
void check_footprint(const footprint& real, const budget_plan& plan, std::string_view source);
// "resident R + KV cache K + workspace W + N expert slots of S (E) = T"
std::string format_footprint(const footprint& f);

// One summary line per link: "link       file->ram  1.50 MiB in 64 reads, 0.82 GB/s (busy 1.9 ms; ...)".
std::string links_summary(const std::vector<offloader::link>& links);
// [{name, bytes, transfers, seconds, gb_per_s, transfer_seconds, failed}]
nlohmann::ordered_json links_json(const std::vector<offloader::link>& links);

// What the caller of a generation knows that the runtime does not.
struct run_info {
    std::string model_path;
    std::vector<int> prompt_tokens;
    std::optional<std::string> prompt_text;    // what the tokenizer encoded (the templated chat with --chat)
    std::optional<std::string> chat_template;  // its style name, with --chat
    std::optional<std::string> text;           // the generated text, when there is a tokenizer (any bytes)
    budget_plan plan;                          // the compute-memory budget it ran under
    bool budget_auto = false;                  // sized from free memory
    std::string prefetch;                      // the prefetch mode as shown ("none (off: ...)" when turned off)
    double load_s = 0.0;
    int n_ctx = 0;
};

// The human summary (several lines, each labelled): load, prompt and decode speed, memory, cache, hit rates per
// layer, bytes loaded and waiting, the host tier, the links and the prefetcher.
std::string run_summary(const run_info& info, const generation& g, const model& m, const offloader& off,
                        const footprint& fp);
// The statistics object (docs/stats-json.md).
nlohmann::ordered_json run_stats_json(const run_info& info, const generation& g, const model& m, const offloader& off,
                                      const footprint& fp);

// Serialises j as JSON text. Strings that are not valid UTF-8 (a byte-level vocabulary can split a character across
// tokens, and a model may emit raw bytes) get U+FFFD in place of each invalid sequence, so the text is always valid
// JSON; token ids stay exact in their own fields.
std::string dump_json(const nlohmann::ordered_json& j, int indent = 1);

}  // namespace moe
