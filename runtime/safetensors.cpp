// safetensors reader (docs/model-formats.md §5.1): one file, or a sharded checkpoint described by
// model.safetensors.index.json, plus the config.json beside the weights. Only the JSON header of each file is
// read; every dtype, shape and data offset is checked against the file before it is trusted.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>
#include <unordered_set>

#include "common/error.h"
#include "common/printable.h"
#include "runtime/gguf.h"
#include "runtime/model_file.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string json_kind(const json& j) {
    if (j.is_number_float()) return fmt::format("the number {}", j.dump());
    if (j.is_number()) return fmt::format("the integer {}", j.dump());
    std::string d = j.dump();
    if (d.size() > 60) d = d.substr(0, 57) + "...";
    return fmt::format("{} {}", j.type_name(), d);
}

// nlohmann's dump() and parts of its DOM recurse once per nesting level, so a header of "[[[[..." would
// overflow the stack: refuse deep nesting before parsing. Safetensors headers need depth 3, configs a few more.
constexpr int k_max_json_depth = 64;

void check_json_depth(const char* begin, const char* end, const std::string& name, std::string_view what) {
    int depth = 0;
    bool in_string = false, escaped = false;
    for (const char* p = begin; p < end; p++) {
        char ch = *p;
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (ch == '\\')
                escaped = true;
            else if (ch == '"')
                in_string = false;
        } else if (ch == '"') {
            in_string = true;
        } else if (ch == '{' || ch == '[') {
            if (++depth > k_max_json_depth)
                fail("{}: {}: at byte {} of the JSON: expected nesting at most {} deep, found deeper", name, what,
                     p - begin, k_max_json_depth);
        } else if (ch == '}' || ch == ']') {
            depth--;
        }
    }
}

// Parses a JSON object, refusing duplicate top-level keys (nlohmann would silently keep the last one).
json parse_json_object(const char* begin, const char* end, const std::string& name, std::string_view what) {
    check_json_depth(begin, end, name, what);
    std::string duplicate;
    json j;
    try {
        // Collect top-level keys with a SAX-like callback so duplicates can be refused.
        std::unordered_set<std::string> keys;
        j = json::parse(
            begin, end,
            [&](int depth, json::parse_event_t ev, json& parsed) {
                if (ev == json::parse_event_t::key && depth == 1 && duplicate.empty() && parsed.is_string()) {
                    if (!keys.insert(parsed.get<std::string>()).second) duplicate = parsed.get<std::string>();
                }
                return true;
            },
            true);
    } catch (const json::exception& e) {
        fail("{}: {}: expected valid JSON, found a parse error: {}", name, what, e.what());
    }
    if (!duplicate.empty())
        fail("{}: {}: expected unique keys, found duplicate key '{}'", name, what, printable(duplicate));
    if (!j.is_object()) fail("{}: {}: expected a JSON object, found {}", name, what, json_kind(j));
    return j;
}

struct st_entry {
    tensor_desc desc;
    uint64_t begin = 0, end = 0;  // relative to the data start
};

uint64_t json_u64(const json& v, const std::string& name, const std::string& field, std::string_view what) {
    if (v.is_number_unsigned()) return v.get<uint64_t>();
    if (v.is_number_integer()) {
        auto s = v.get<int64_t>();
        if (s >= 0) return uint64_t(s);
        fail("{}: header: {}: expected a non-negative {}, found {} (negative)", name, field, what, s);
    }
    fail("{}: header: {}: expected a non-negative integer {}, found {}", name, field, what, json_kind(v));
}

// Validates one safetensors header (its JSON text already cut out) against a data area of data_size bytes,
// and appends the tensors in file order (by offset) with absolute offsets.
void parse_header(const char* text, uint64_t n, uint64_t data_size, const std::string& name, int file_index,
                  std::vector<tensor_desc>& out) {
    if (n == 0 || text[0] != '{')
        fail("{}: at byte 8: header: expected a JSON object starting with '{{', found {}", name,
             n == 0 ? std::string("an empty header") : fmt::format("byte {:#04x}", uint8_t(text[0])));
    json h = parse_json_object(text, text + n, name, "header (at byte 8)");
    uint64_t data_start = 8 + n;

    std::vector<st_entry> entries;
    for (auto& [key, v] : h.items()) {
        if (key == "__metadata__") {
            if (!v.is_object())
                fail("{}: header: __metadata__: expected an object of strings, found {}", name, json_kind(v));
            for (auto& [mk, mv] : v.items())
                if (!mv.is_string())
                    fail("{}: header: __metadata__.{}: expected a string value, found {}", name, printable(mk),
                         json_kind(mv));
            continue;
        }
        // Names are quoted escaped: a NUL would cut the message short, a control byte would reach the terminal.
        std::string tf = fmt::format("tensor '{}'", printable(key));
        if (!v.is_object()) fail("{}: header: {}: expected an object, found {}", name, tf, json_kind(v));
        st_entry e;
        e.desc.name = key;
        e.desc.file = file_index;

        auto dt = v.find("dtype");
        if (dt == v.end() || !dt->is_string())
            fail("{}: header: {}: dtype: expected a dtype string, found {}", name, tf,
                 dt == v.end() ? "no dtype" : json_kind(*dt));
        auto info = safetensors_dtype_info(dt->get<std::string>());
        if (!info)
            fail(
                "{}: header: {}: dtype: expected a supported dtype (F32, F16, BF16, I64, ...), found unknown dtype "
                "'{}'",
                name, tf, printable(dt->get<std::string>()));
        e.desc.type = info->type;

        auto sh = v.find("shape");
        if (sh == v.end() || !sh->is_array())
            fail("{}: header: {}: shape: expected an array of dimensions, found {}", name, tf,
                 sh == v.end() ? "no shape" : json_kind(*sh));
        if (sh->size() > 4)
            fail("{}: header: {}: shape: expected at most 4 dimensions, found {} ({})", name, tf, sh->size(),
                 sh->dump());
        e.desc.n_dims = int(sh->size());
        for (size_t d = 0; d < sh->size(); d++) {
            uint64_t dim = json_u64((*sh)[d], name, fmt::format("{}: shape[{}]", tf, d), "dimension");
            if (dim > uint64_t(INT64_MAX))
                fail("{}: header: {}: shape[{}]: expected a dimension below 2^63, found {}", name, tf, d, dim);
            // safetensors shapes are row-major (last dim contiguous); ggml order puts the contiguous dim first.
            e.desc.ne[sh->size() - 1 - d] = int64_t(dim);
        }
        auto bytes = tensor_nbytes(e.desc.type, e.desc.ne, e.desc.n_dims);
        if (!bytes)
            fail("{}: header: {}: shape: expected a size that fits in 64 bits, found {} (overflow)", name, tf,
                 sh->dump());
        e.desc.bytes = *bytes;

        auto off = v.find("data_offsets");
        if (off == v.end() || !off->is_array() || off->size() != 2)
            fail("{}: header: {}: data_offsets: expected [begin, end], found {}", name, tf,
                 off == v.end() ? "no data_offsets" : json_kind(*off));
        e.begin = json_u64((*off)[0], name, tf + ": data_offsets[0]", "offset");
        e.end = json_u64((*off)[1], name, tf + ": data_offsets[1]", "offset");
        if (e.end < e.begin)
            fail("{}: header: {}: data_offsets: expected begin <= end, found [{}, {}]", name, tf, e.begin, e.end);
        if (e.end - e.begin != e.desc.bytes)
            fail(
                "{}: header: {}: data_offsets: expected end - begin = {} bytes ({} of shape {}), found {} "
                "(shape/offset mismatch)",
                name, tf, e.desc.bytes, info->name, sh->dump(), e.end - e.begin);
        if (e.end > data_size)
            fail(
                "{}: header: {}: data_offsets: expected end <= {} (data bytes after the header), found [{}, {}] "
                "(out of bounds of the file)",
                name, tf, data_size, e.begin, e.end);
        e.desc.offset = data_start + e.begin;
        entries.push_back(std::move(e));
    }

    std::sort(entries.begin(), entries.end(), [](const st_entry& a, const st_entry& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    const st_entry* prev = nullptr;
    for (const auto& e : entries) {
        if (e.begin == e.end) continue;  // empty tensors occupy no bytes
        if (prev && e.begin < prev->end)
            fail(
                "{}: header: tensor '{}': data_offsets: expected no overlap with tensor '{}' [{}, {}], found [{}, {}] "
                "(overlapping tensors)",
                name, printable(e.desc.name), printable(prev->desc.name), prev->begin, prev->end, e.begin, e.end);
        prev = &e;
    }
    for (auto& e : entries) out.push_back(std::move(e.desc));
}

// The 8-byte little-endian header length N, checked against the image size.
uint64_t header_length(const uint8_t* first8, uint64_t size, const std::string& name) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | first8[i];
    if (n > k_safetensors_max_header_bytes)
        fail("{}: at byte 0: header length: expected at most {} bytes, found {} (header length too big)", name,
             k_safetensors_max_header_bytes, n);
    if (n > size - 8)
        fail(
            "{}: at byte 0: header length: expected at most {} (file size - 8), found {} (header length too big "
            "for the file)",
            name, size - 8, n);
    return n;
}

void index_tensors(model_file& mf) {
    for (size_t i = 0; i < mf.tensors.size(); i++) mf.index.emplace(mf.tensors[i].name, i);
}

// Reads one .safetensors file's header, appending its tensors with file index `file_index`.
uint64_t read_one(const std::string& path, int file_index, std::vector<tensor_desc>& out) {
    input_file f(path);
    if (f.size() < 8)
        fail("{}: at byte 0: header length: expected 8 bytes, found a file of {} bytes (truncated)", path, f.size());
    uint8_t first8[8];
    f.read_exact(0, first8, 8);
    uint64_t n = header_length(first8, f.size(), path);
    std::string text(size_t(n), '\0');
    f.read_exact(8, text.data(), n);
    parse_header(text.data(), n, f.size() - 8 - n, path, file_index, out);
    return f.size();
}

json load_json_file(const std::string& path, std::string_view what) {
    input_file f(path);
    if (f.size() > (256ull << 20))
        fail("{}: {}: expected at most 256 MiB of JSON, found {} bytes", path, what, f.size());
    std::string text(size_t(f.size()), '\0');
    f.read_exact(0, text.data(), f.size());
    return parse_json_object(text.data(), text.data() + text.size(), path, what);
}

// config.json beside the weights, or null (the model-description layer reports it missing).
json load_config(const fs::path& dir) {
    fs::path p = dir / "config.json";
    std::error_code ec;
    const bool there = fs::exists(p, ec);
    if (ec) fail("{}: cannot open: {}", p.string(), ec.message());  // e.g. no permission: not "missing"
    if (!there) return nullptr;
    return load_json_file(p.string(), "config.json");
}

// A shard named by the index must lie in the index's directory: a relative path without ".." components (and
// without a NUL, which would cut the name short when it is opened). Symbolic links inside the directory are
// followed as they are: the Hugging Face cache links every file of a snapshot to a blob outside it.
void check_shard_name(const std::string& f, const std::string& index_path, const std::string& tensor) {
    const fs::path p(f);
    bool escapes = f.empty() || p.is_absolute() || p.has_root_name() || p.has_root_directory() ||
                   f.find('\0') != std::string::npos;
    for (const fs::path& part : p)
        if (part == "..") escapes = true;
    if (escapes)
        fail(
            "{}: weight_map['{}']: expected a shard file name inside the model's directory (relative, without '..'), "
            "found '{}'",
            index_path, printable(tensor), printable(f));
}

model_file read_sharded(const std::string& index_path) {
    json idx = load_json_file(index_path, "index");
    auto wm = idx.find("weight_map");
    if (wm == idx.end() || !wm->is_object())
        fail("{}: weight_map: expected an object {{tensor: shard file}}, found {}", index_path,
             wm == idx.end() ? "no weight_map" : json_kind(*wm));
    fs::path dir = fs::path(index_path).parent_path();

    std::set<std::string> shard_names;  // sorted: model-00001-of-0000N first
    for (auto& [tensor, file] : wm->items()) {
        if (!file.is_string())
            fail("{}: weight_map['{}']: expected a shard file name, found {}", index_path, printable(tensor),
                 json_kind(file));
        std::string f = file.get<std::string>();
        check_shard_name(f, index_path, tensor);
        shard_names.insert(f);
    }
    if (shard_names.empty()) fail("{}: weight_map: expected at least one tensor, found an empty map", index_path);

    model_file mf;
    mf.format = model_format::SAFETENSORS;
    int file_index = 0;
    for (const auto& s : shard_names) {
        std::string sp = (dir / s).string();
        std::error_code ec;
        const bool there = fs::exists(sp, ec);
        if (ec) fail("{}: weight_map: shard file '{}' cannot be opened: {}", index_path, printable(sp), ec.message());
        if (!there)
            fail("{}: weight_map: expected shard file '{}' to exist, found no such file (missing shard)", index_path,
                 printable(sp));
        std::vector<tensor_desc> ts;
        mf.file_sizes.push_back(read_one(sp, file_index, ts));
        mf.paths.push_back(sp);
        for (auto& t : ts) {
            if (auto prev = mf.index.find(t.name); prev != mf.index.end())
                fail("{}: tensor '{}': expected each tensor in one shard, found it also in {}", sp, printable(t.name),
                     mf.paths[size_t(mf.tensors[prev->second].file)]);
            auto mapped = wm->find(t.name);
            if (mapped == wm->end())
                warn_once("st-unmapped:" + sp, fmt::format("{}: tensor '{}' is not listed in {}; using it anyway", sp,
                                                           printable(t.name), index_path));
            else if (mapped->get<std::string>() != s)
                fail("{}: tensor '{}': expected in shard '{}' per weight_map, found in '{}'", index_path,
                     printable(t.name), printable(mapped->get<std::string>()), printable(s));
            mf.index.emplace(t.name, mf.tensors.size());
            mf.tensors.push_back(std::move(t));
        }
        file_index++;
    }
    for (auto& [tensor, file] : wm->items())
        if (!mf.index.count(tensor))
            fail(
                "{}: weight_map['{}']: expected the tensor in shard '{}', found no such tensor in that shard "
                "(tensor missing in shard)",
                index_path, printable(tensor), printable(file.get<std::string>()));
    mf.config = load_config(dir);
    return mf;
}

}  // namespace

model_file parse_safetensors_buffer(const uint8_t* data, size_t size, const std::string& name) {
    if (size < 8) fail("{}: at byte 0: header length: expected 8 bytes, found {} bytes (truncated)", name, size);
    uint64_t n = header_length(data, size, name);
    model_file mf;
    mf.format = model_format::SAFETENSORS;
    parse_header(reinterpret_cast<const char*>(data + 8), n, size - 8 - n, name, 0, mf.tensors);
    mf.paths = {name};
    mf.file_sizes = {size};
    index_tensors(mf);
    return mf;
}

model_file read_safetensors(const std::string& path) {
    std::string_view p = path;
    if (p.size() >= 11 && p.substr(p.size() - 11) == ".index.json") return read_sharded(path);
    model_file mf;
    mf.format = model_format::SAFETENSORS;
    mf.file_sizes.push_back(read_one(path, 0, mf.tensors));
    mf.paths.push_back(path);
    index_tensors(mf);
    mf.config = load_config(fs::path(path).parent_path());
    return mf;
}

}  // namespace moe
