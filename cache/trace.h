// Routing traces (moe-trace v1, format in README.md "Routing traces"): which experts each (token, MoE layer)
// selected, in router rank order, with optional routing weights. Read with strict validation (line number and
// reason), written back byte-for-byte in the same format.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace moe {

// Documented limits of the trace reader (README "Limits"). A header beyond them is refused before anything is
// sized from it: the simulator and the policies keep per-expert arrays of n_layers * n_experts entries.
inline constexpr uint32_t k_trace_max_layers = 4096;
inline constexpr uint32_t k_trace_max_experts = 65536;
inline constexpr uint32_t k_trace_max_top_k = 1024;
inline constexpr uint64_t k_trace_max_expert_ids = uint64_t(1) << 22;  // n_layers * n_experts
inline constexpr size_t k_trace_max_line_bytes = size_t(1) << 16;      // one line, its end excluded

// Throws moe::error when a shape exceeds the limits above (or is zero, or top_k > n_experts); the message starts
// with `where` ("trace.csv:1: header").
void check_trace_shape(uint32_t n_layers, uint32_t n_experts, uint32_t top_k, const std::string& where);

struct trace_row {
    uint32_t seq = 0;               // request / sequence id
    uint32_t token = 0;             // position in that sequence
    uint32_t layer = 0;             // MoE layer, [0, n_layers)
    std::vector<uint32_t> experts;  // 1..top_k distinct ids in [0, n_experts), router rank order
    std::vector<float> weights;     // empty, or one routing weight per expert in the same order
};

struct routing_trace {
    std::string model;  // header model=<name>, no spaces
    uint32_t n_layers = 0;
    uint32_t n_experts = 0;
    uint32_t top_k = 0;
    std::vector<trace_row> rows;  // file order

    uint64_t n_accesses() const;  // sum of row sizes
    uint64_t n_tokens() const;    // distinct (seq, token) pairs
};

// Parses a trace; `name` is used in error messages ("trace.csv:17: expert id 9 out of range [0, 8)").
// Accepted: blank lines anywhere after the header, CRLF line ends, rows with 1..top_k experts (an engine may
// drop experts, e.g. capacity-limited routing; it may never select more than top_k). Refused: a shape beyond
// the limits above, a line longer than k_trace_max_line_bytes.
routing_trace parse_trace(std::istream& in, const std::string& name);
// Reads a trace file: a regular file (a FIFO or a device such as /dev/zero is refused before it is read).
routing_trace read_trace(const std::string& path);
void write_trace(std::ostream& out, const routing_trace& t);
// The pieces of write_trace, for writers that stream rows as they happen: the two header lines (t's rows are
// ignored), and one row as a line (into `line`, replacing what it held; newline included).
std::string trace_header(const routing_trace& t);
void format_trace_row(std::string& line, const trace_row& r);
void write_trace(const std::string& path, const routing_trace& t);

}  // namespace moe
