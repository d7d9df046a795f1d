// libFuzzer target: the moe-trace v1 reader on arbitrary bytes must either succeed or throw moe::error; any
// crash, sanitizer report, hang or huge allocation (-rss_limit_mb) is a bug. What it accepts must respect the
// header's shape and the documented limits, and must write back and read again to the same rows.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "cache/trace.h"
#include "common/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    moe::routing_trace t;
    try {
        std::istringstream in(text);
        t = moe::parse_trace(in, "fuzz.trace");
    } catch (const moe::error&) {
        return 0;
    }
    if (t.n_layers == 0 || t.n_layers > moe::k_trace_max_layers || t.n_experts == 0 ||
        t.n_experts > moe::k_trace_max_experts || t.top_k == 0 || t.top_k > t.n_experts ||
        uint64_t(t.n_layers) * t.n_experts > moe::k_trace_max_expert_ids)
        __builtin_trap();
    for (const auto& r : t.rows) {
        if (r.layer >= t.n_layers || r.experts.empty() || r.experts.size() > t.top_k) __builtin_trap();
        if (!r.weights.empty() && r.weights.size() != r.experts.size()) __builtin_trap();
        for (uint32_t e : r.experts)
            if (e >= t.n_experts) __builtin_trap();
    }
    // Round trip: what was accepted writes back (when its model name is writable) and reads to the same rows.
    if (t.model.find_first_of(" \t\r\n") != std::string::npos) return 0;
    std::ostringstream out;
    moe::write_trace(out, t);
    std::istringstream again(out.str());
    const moe::routing_trace u = moe::parse_trace(again, "fuzz-roundtrip.trace");
    if (u.rows.size() != t.rows.size()) __builtin_trap();
    for (size_t i = 0; i < t.rows.size(); ++i)
        if (u.rows[i].experts != t.rows[i].experts || u.rows[i].layer != t.rows[i].layer) __builtin_trap();
    return 0;
}
