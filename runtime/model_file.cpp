// open_model_file: picks the reader from the path (directory, extension, or the file's magic), and the metadata
// accessors of model_file, which accept any integer/float width (writers differ, docs/model-formats.md §1.2).
#include "runtime/model_file.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "common/error.h"
#include "common/file_kind.h"
#include "runtime/gguf.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

bool ends_with(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

const char* value_kind(const meta_value& v) {
    switch (v.value.index()) {
        case 0:
        case 1:
            return "an integer";
        case 2:
            return "a float";
        case 3:
            return "a bool";
        case 4:
            return "a string";
        default:
            return "an array";
    }
}

// Whether `p` exists; a failure other than "no such file" (no permission, a symlink loop) is reported as it is.
bool exists_or_fail(const fs::path& p) {
    std::error_code ec;
    const bool there = fs::exists(p, ec);
    if (ec) fail("{}: cannot open: {}", p.string(), ec.message());
    return there;
}

model_file open_directory(const fs::path& dir) {
    if (exists_or_fail(dir / "model.safetensors.index.json"))
        return read_safetensors((dir / "model.safetensors.index.json").string());
    if (exists_or_fail(dir / "model.safetensors")) return read_safetensors((dir / "model.safetensors").string());

    std::vector<std::string> ggufs, sts;
    std::error_code ec;
    fs::directory_iterator it(dir, ec);
    if (ec) fail("{}: cannot list the directory: {}", dir.string(), ec.message());
    for (const auto& e : it) {
        std::error_code type_ec;
        if (!e.is_regular_file(type_ec)) continue;
        std::string p = e.path().string();
        if (ends_with(p, ".gguf")) ggufs.push_back(p);
        if (ends_with(p, ".safetensors")) sts.push_back(p);
    }
    std::sort(ggufs.begin(), ggufs.end());
    if (ggufs.size() == 1) return read_gguf(ggufs[0]);
    if (ggufs.size() > 1) {
        // One split set is fine (open it from its first shard); several models are ambiguous.
        auto first = parse_gguf_split_name(ggufs[0]);
        bool one_set = first && std::all_of(ggufs.begin(), ggufs.end(), [&](const std::string& g) {
                           auto s = parse_gguf_split_name(g);
                           return s && s->prefix == first->prefix && s->count == first->count;
                       });
        if (one_set) return read_gguf(ggufs[0]);
        fail("{}: expected one model in the directory, found {} GGUF files ({}, {}, ...): name the file", dir.string(),
             ggufs.size(), ggufs[0], ggufs[1]);
    }
    if (sts.size() == 1) return read_safetensors(sts[0]);
    fail("{}: expected model.safetensors.index.json, model.safetensors or a single *.gguf in the directory, found {}",
         dir.string(), sts.empty() ? "none" : fmt::format("{} .safetensors files without an index", sts.size()));
}

}  // namespace

model_file open_model_file(const std::string& path) {
    std::error_code ec;
    auto st = fs::status(path, ec);
    // The system's reason, as it is: a symlink loop or a name too long is not a missing file.
    if (st.type() == fs::file_type::not_found) fail("{}: cannot open model: no such file or directory", path);
    if (ec) fail("{}: cannot open model: {}", path, ec.message());
    if (fs::is_directory(st)) return open_directory(path);
    if (!fs::is_regular_file(st)) {
        // Refused before anything opens it: opening a FIFO for reading would wait for a writer.
        struct stat sb {};
        fail("{}: cannot open model: expected a regular file or a directory, found {}", path,
             ::stat(path.c_str(), &sb) == 0 ? describe_file_type(sb.st_mode) : "a special file");
    }
    if (ends_with(path, ".gguf")) return read_gguf(path);
    if (ends_with(path, ".safetensors") || ends_with(path, ".index.json")) return read_safetensors(path);

    // Unknown extension: sniff. GGUF starts with its magic; safetensors with an 8-byte length then '{'.
    input_file f(path);
    uint8_t head[9] = {};
    uint64_t n = std::min<uint64_t>(f.size(), sizeof head);
    f.read_exact(0, head, n);
    if (n >= 4 && std::memcmp(head, "GGUF", 4) == 0) return read_gguf(path);
    if (n == 9 && head[8] == '{') return read_safetensors(path);
    fail(
        "{}: at byte 0: magic: expected a GGUF file (\"GGUF\") or a safetensors file (8-byte length, then '{{'), "
        "found neither",
        path);
}

const meta_value* model_file::meta(const std::string& key) const {
    auto it = metadata.find(key);
    return it == metadata.end() ? nullptr : &it->second;
}

std::optional<int64_t> model_file::meta_int(const std::string& key) const {
    const meta_value* v = meta(key);
    if (!v) return std::nullopt;
    if (auto* s = std::get_if<int64_t>(&v->value)) return *s;
    if (auto* u = std::get_if<uint64_t>(&v->value)) {
        if (*u > uint64_t(INT64_MAX))
            fail("{}: {}: expected an integer below 2^63, found {}", paths.empty() ? "" : paths[0], key, *u);
        return int64_t(*u);
    }
    fail("{}: {}: expected an integer, found {}", paths.empty() ? "" : paths[0], key, value_kind(*v));
}

std::optional<double> model_file::meta_float(const std::string& key) const {
    const meta_value* v = meta(key);
    if (!v) return std::nullopt;
    if (auto* d = std::get_if<double>(&v->value)) return *d;
    if (auto* s = std::get_if<int64_t>(&v->value)) return double(*s);
    if (auto* u = std::get_if<uint64_t>(&v->value)) return double(*u);
    fail("{}: {}: expected a number, found {}", paths.empty() ? "" : paths[0], key, value_kind(*v));
}

std::optional<std::string> model_file::meta_string(const std::string& key) const {
    const meta_value* v = meta(key);
    if (!v) return std::nullopt;
    if (auto* s = std::get_if<std::string>(&v->value)) return *s;
    fail("{}: {}: expected a string, found {}", paths.empty() ? "" : paths[0], key, value_kind(*v));
}

std::optional<bool> model_file::meta_bool(const std::string& key) const {
    const meta_value* v = meta(key);
    if (!v) return std::nullopt;
    if (auto* b = std::get_if<bool>(&v->value)) return *b;
    // Some writers store flags as integers 0/1.
    if (auto* s = std::get_if<int64_t>(&v->value); s && (*s == 0 || *s == 1)) return *s == 1;
    if (auto* u = std::get_if<uint64_t>(&v->value); u && *u <= 1) return *u == 1;
    fail("{}: {}: expected a bool, found {}", paths.empty() ? "" : paths[0], key, value_kind(*v));
}

}  // namespace moe
