// moe-trace v1 reader and writer. The reader trusts nothing: every field is parsed with from_chars and
// checked against the header's shape, and the first problem is reported with its line number.
#include "cache/trace.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <istream>
#include <ostream>
#include <string_view>
#include <unordered_set>

#include "common/error.h"
#include "common/file_kind.h"
#include "common/printable.h"

namespace moe {

void check_trace_shape(uint32_t n_layers, uint32_t n_experts, uint32_t top_k, const std::string& where) {
    if (n_layers == 0 || n_experts == 0 || top_k == 0)
        fail("{} n_layers, n_experts and top_k must be positive (got {}, {}, {})", where, n_layers, n_experts, top_k);
    if (top_k > n_experts) fail("{} top_k={} exceeds n_experts={}", where, top_k, n_experts);
    if (n_layers > k_trace_max_layers)
        fail("{} n_layers={} is above the limit of {} layers", where, n_layers, k_trace_max_layers);
    if (n_experts > k_trace_max_experts)
        fail("{} n_experts={} is above the limit of {} experts per layer", where, n_experts, k_trace_max_experts);
    if (top_k > k_trace_max_top_k) fail("{} top_k={} is above the limit of {}", where, top_k, k_trace_max_top_k);
    if (uint64_t(n_layers) * n_experts > k_trace_max_expert_ids)
        fail("{} n_layers x n_experts = {} x {} = {} experts is above the limit of {} experts in all", where, n_layers,
             n_experts, uint64_t(n_layers) * n_experts, k_trace_max_expert_ids);
}

uint64_t routing_trace::n_accesses() const {
    uint64_t n = 0;
    for (const auto& r : rows) n += r.experts.size();
    return n;
}

uint64_t routing_trace::n_tokens() const {
    std::unordered_set<uint64_t> seen;
    uint64_t last = ~uint64_t(0);
    for (const auto& r : rows) {
        uint64_t key = (uint64_t(r.seq) << 32) | r.token;
        if (key != last) seen.insert(key);  // rows of one token are consecutive: skip the hash most of the time
        last = key;
    }
    return seen.size();
}

namespace {

constexpr std::string_view MAGIC = "# moe-trace v1";
constexpr std::string_view COLUMNS = "seq,token,layer,experts,weights";

// A piece of the file quoted in a message: escaped, and cut after 120 bytes (a line may be 64 KiB long).
std::string shown(std::string_view s) {
    constexpr size_t k_max = 120;
    return s.size() <= k_max ? printable(s) : printable(s.substr(0, k_max)) + "...";
}

// std::getline with a bound: the next line without its '\n' in `out`, false at the end of the input. A line
// longer than k_trace_max_line_bytes is refused as soon as the bound is passed, so a stream without line ends
// (/dev/zero, a binary file) costs at most that much memory.
bool read_line(std::istream& in, std::string& out, const std::string& name, uint64_t line_no) {
    out.clear();
    std::streambuf* sb = in.rdbuf();
    if (sb == nullptr || !in.good()) return false;
    try {
        for (;;) {
            const auto c = sb->sbumpc();
            if (std::char_traits<char>::eq_int_type(c, std::char_traits<char>::eof())) {
                in.setstate(std::ios::eofbit);
                return !out.empty();
            }
            if (c == '\n') return true;
            if (out.size() == k_trace_max_line_bytes)
                fail("{}:{}: line longer than the limit of {} bytes (not a moe-trace v1 file?)", name, line_no,
                     k_trace_max_line_bytes);
            out.push_back(std::char_traits<char>::to_char_type(c));
        }
    } catch (const error&) {
        throw;
    } catch (const std::exception&) {  // the file buffer reports read errors by throwing
        in.setstate(std::ios::badbit);
        return false;
    }
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
    return s;
}

template <typename T>
bool parse_num(std::string_view s, T& out) {
    if (s.empty()) return false;
    if constexpr (std::is_floating_point_v<T>) {
        if (s.front() == '+') s.remove_prefix(1);
    }
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size();
}

uint32_t parse_u32(std::string_view s, const std::string& where, std::string_view field) {
    uint32_t v = 0;
    if (!parse_num(trim(s), v)) fail("{}: {} '{}' is not a non-negative 32-bit integer", where, field, shown(s));
    return v;
}

std::vector<std::string_view> split(std::string_view s, char sep, bool skip_empty) {
    std::vector<std::string_view> out;
    size_t start = 0;
    while (true) {
        size_t p = s.find(sep, start);
        std::string_view part = s.substr(start, p == std::string_view::npos ? std::string_view::npos : p - start);
        if (!skip_empty || !part.empty()) out.push_back(part);
        if (p == std::string_view::npos) break;
        start = p + 1;
    }
    return out;
}

void parse_header(std::string_view line, const std::string& where, routing_trace& t) {
    if (line.substr(0, MAGIC.size()) != MAGIC || (line.size() > MAGIC.size() && line[MAGIC.size()] != ' '))
        fail("{}: expected header '{} model=<name> n_layers=<L> n_experts=<E> top_k=<K>', found '{}'", where, MAGIC,
             shown(line));
    bool have_model = false, have_l = false, have_e = false, have_k = false;
    for (std::string_view kv : split(line.substr(MAGIC.size()), ' ', true)) {
        size_t eq = kv.find('=');
        if (eq == std::string_view::npos) fail("{}: header field '{}' is not key=value", where, shown(kv));
        std::string_view key = kv.substr(0, eq), val = kv.substr(eq + 1);
        if (key == "model") {
            if (val.empty()) fail("{}: header model= is empty", where);
            t.model = std::string(val);
            have_model = true;
        } else if (key == "n_layers") {
            t.n_layers = parse_u32(val, where, "header n_layers");
            have_l = true;
        } else if (key == "n_experts") {
            t.n_experts = parse_u32(val, where, "header n_experts");
            have_e = true;
        } else if (key == "top_k") {
            t.top_k = parse_u32(val, where, "header top_k");
            have_k = true;
        }
        // Unknown keys are allowed: later versions of a writer may add fields a v1 reader can ignore.
    }
    if (!have_model || !have_l || !have_e || !have_k)
        fail("{}: header lacks {}", where,
             !have_model ? "model="
             : !have_l   ? "n_layers="
             : !have_e   ? "n_experts="
                         : "top_k=");
    check_trace_shape(t.n_layers, t.n_experts, t.top_k, where + ": header");
}

void parse_row(std::string_view line, const std::string& where, const routing_trace& t, trace_row& r) {
    auto fields = split(line, ',', false);
    if (fields.size() != 5)
        fail("{}: expected 5 fields (seq,token,layer,experts,weights), found {}", where, fields.size());
    r.seq = parse_u32(fields[0], where, "seq");
    r.token = parse_u32(fields[1], where, "token");
    r.layer = parse_u32(fields[2], where, "layer");
    if (r.layer >= t.n_layers) fail("{}: layer {} out of range [0, {})", where, r.layer, t.n_layers);
    r.experts.clear();
    r.weights.clear();
    for (std::string_view e : split(trim(fields[3]), ' ', true)) {
        uint32_t id = parse_u32(e, where, "expert id");
        if (id >= t.n_experts) fail("{}: expert id {} out of range [0, {})", where, id, t.n_experts);
        if (std::find(r.experts.begin(), r.experts.end(), id) != r.experts.end())
            fail("{}: expert id {} appears twice in the row", where, id);
        r.experts.push_back(id);
    }
    if (r.experts.empty()) fail("{}: row selects no experts (expected 1..{})", where, t.top_k);
    if (r.experts.size() > t.top_k)
        fail("{}: row selects {} experts, more than top_k={}", where, r.experts.size(), t.top_k);
    std::string_view w = trim(fields[4]);
    if (!w.empty()) {
        for (std::string_view s : split(w, ' ', true)) {
            float v = 0;
            if (!parse_num(s, v) || !std::isfinite(v)) fail("{}: weight '{}' is not a finite number", where, shown(s));
            r.weights.push_back(v);
        }
        if (r.weights.size() != r.experts.size())
            fail("{}: {} weights for {} experts (expected the same count, or an empty field)", where, r.weights.size(),
                 r.experts.size());
    }
}

}  // namespace

routing_trace parse_trace(std::istream& in, const std::string& name) {
    routing_trace t;
    std::string buf;
    uint64_t line_no = 0;
    int stage = 0;  // 0: header, 1: column line, 2: rows
    while (read_line(in, buf, name, line_no + 1)) {
        ++line_no;
        std::string_view line = trim(buf);
        std::string where = fmt::format("{}:{}", name, line_no);
        if (stage == 0) {
            parse_header(line, where, t);
            stage = 1;
            continue;
        }
        if (line.empty()) continue;
        if (stage == 1) {
            std::string cols;
            for (char c : line)
                if (c != ' ') cols += c;
            if (cols != COLUMNS) fail("{}: expected column line '{}', found '{}'", where, COLUMNS, shown(line));
            stage = 2;
            continue;
        }
        trace_row r;
        parse_row(line, where, t, r);
        t.rows.push_back(std::move(r));
    }
    if (in.bad()) fail("{}: read error after line {}", name, line_no);
    if (stage == 0) fail("{}: empty file, expected header '{} ...'", name, MAGIC);
    if (stage == 1) fail("{}: missing column line '{}' after the header", name, COLUMNS);
    return t;
}

routing_trace read_trace(const std::string& path) {
    // Checked before opening: opening a FIFO for reading waits for a writer, and a device never ends.
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) fail("{}: cannot open trace file: {}", path, std::strerror(errno));
    if (!S_ISREG(st.st_mode))
        fail("{}: cannot read trace file: expected a regular file, found {}", path, describe_file_type(st.st_mode));
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("{}: cannot open trace file: {}", path, std::strerror(errno));
    return parse_trace(in, path);
}

std::string trace_header(const routing_trace& t) {
    if (t.model.empty() || t.model.find_first_of(" \t\r\n") != std::string::npos)
        fail("trace model name '{}' must be non-empty without spaces", t.model);
    return fmt::format("{} model={} n_layers={} n_experts={} top_k={}\n{}\n", MAGIC, t.model, t.n_layers, t.n_experts,
                       t.top_k, COLUMNS);
}

void format_trace_row(std::string& line, const trace_row& r) {
    line = fmt::format("{},{},{},", r.seq, r.token, r.layer);
    for (size_t i = 0; i < r.experts.size(); ++i)
        fmt::format_to(std::back_inserter(line), "{}{}", i ? " " : "", r.experts[i]);
    line += ',';
    // {} prints the shortest representation that reads back to the same float, so round trips are exact.
    for (size_t i = 0; i < r.weights.size(); ++i)
        fmt::format_to(std::back_inserter(line), "{}{}", i ? " " : "", r.weights[i]);
    line += '\n';
}

void write_trace(std::ostream& out, const routing_trace& t) {
    out << trace_header(t);
    std::string line;
    for (const auto& r : t.rows) {
        format_trace_row(line, r);
        out << line;
    }
}

void write_trace(const std::string& path, const routing_trace& t) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) fail("{}: cannot create trace file", path);
    write_trace(out, t);
    out.flush();
    if (!out) fail("{}: write failed", path);
}

}  // namespace moe
