// GGUF reader (docs/model-formats.md §1): v2/v3 little-endian files, single or split. The header is parsed through
// a bounded cursor over a byte source that is either an in-memory image (fuzzing) or a file read in growing
// chunks, so opening a multi-GB model reads only its header. Every count, length, dimension, offset and size
// is checked against what the file can hold before anything is allocated or trusted.
#include "runtime/gguf.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unordered_set>

#include "common/error.h"
#include "common/file_kind.h"
#include "common/printable.h"
#include "runtime/model_file.h"

namespace moe {

// ---------------------------------------------------------------------------------------------------------
// input_file

input_file::input_file(const std::string& path) : _path(path) {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer before the check below could
    // refuse it. It changes nothing for a regular file; it is cleared once the file is known to be one.
    _fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (_fd < 0) fail("{}: cannot open: {}", path, std::strerror(errno));
    struct stat st {};
    if (::fstat(_fd, &st) != 0) {
        int e = errno;
        ::close(_fd);
        fail("{}: cannot stat: {}", path, std::strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(_fd);
        fail("{}: cannot open: expected a regular file, found {}", path, describe_file_type(st.st_mode));
    }
    const int flags = ::fcntl(_fd, F_GETFL);
    if (flags < 0 || ::fcntl(_fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        int e = errno;
        ::close(_fd);
        fail("{}: cannot open: {}", path, std::strerror(e));
    }
    _size = uint64_t(st.st_size);
}

input_file::~input_file() {
    if (_fd >= 0) ::close(_fd);
}

void input_file::read_exact(uint64_t off, void* dst, uint64_t n) const {
    auto* p = static_cast<uint8_t*>(dst);
    while (n > 0) {
        size_t chunk = size_t(std::min<uint64_t>(n, 1ull << 30));
        ssize_t r = ::pread(_fd, p, chunk, off_t(off));
        if (r < 0) {
            if (errno == EINTR) continue;
            fail("{}: at byte {}: read failed: {}", _path, off, std::strerror(errno));
        }
        if (r == 0) fail("{}: at byte {}: unexpected end of file (did it shrink while being read?)", _path, off);
        p += r;
        off += uint64_t(r);
        n -= uint64_t(r);
    }
}

// ---------------------------------------------------------------------------------------------------------
// split names

std::optional<gguf_split_name> parse_gguf_split_name(const std::string& path) {
    // Matched by hand: "<prefix>-" 5 digits "-of-" 5 digits ".gguf" (std::regex is slow and trips GCC warnings).
    constexpr std::string_view tail = "-00000-of-00000.gguf";
    if (path.size() <= tail.size()) return std::nullopt;
    std::string_view t = std::string_view(path).substr(path.size() - tail.size());
    for (size_t i = 0; i < tail.size(); i++) {
        bool want_digit = tail[i] == '0';
        bool is_digit = t[i] >= '0' && t[i] <= '9';
        if (want_digit ? !is_digit : t[i] != tail[i]) return std::nullopt;
    }
    return gguf_split_name{path.substr(0, path.size() - tail.size()), std::stoi(std::string(t.substr(1, 5))),
                           std::stoi(std::string(t.substr(10, 5)))};
}

std::string gguf_split_path(const std::string& prefix, int shard, int count) {
    return fmt::format("{}-{:05d}-of-{:05d}.gguf", prefix, shard, count);
}

namespace {

// ---------------------------------------------------------------------------------------------------------
// byte source and cursor

// The bytes of a GGUF image: all of them (memory) or a prefix that grows on demand (file).
class byte_source {
public:
    byte_source(const uint8_t* data, size_t size) : _data(data), _size(size), _avail(size) {}
    explicit byte_source(const input_file& f) : _file(&f), _size(f.size()) {}

    uint64_t size() const { return _size; }

    // Pointer to [off, off + n); PRECOND: off + n <= size() (the cursor checks it first).
    const uint8_t* at(uint64_t off, uint64_t n) {
        uint64_t end = off + n;
        if (end > _avail) grow(end);
        return _data + off;
    }

private:
    void grow(uint64_t end) {
        if (end > k_gguf_max_header_bytes)
            fail("{}: at byte {}: header: expected at most {} bytes of metadata and tensor infos, found more",
                 _file->path(), _avail, k_gguf_max_header_bytes);
        // Double the buffer (at least 1 MiB) so a header of H bytes costs O(log H) reads and at most 2H bytes.
        uint64_t want = std::max<uint64_t>({end, _avail * 2, 1ull << 20});
        want = std::min(want, _size);
        _buf.resize(size_t(want));
        _file->read_exact(_avail, _buf.data() + _avail, want - _avail);
        _avail = want;
        _data = _buf.data();
    }

    const input_file* _file = nullptr;
    std::vector<uint8_t> _buf;
    const uint8_t* _data = nullptr;
    uint64_t _size = 0;
    uint64_t _avail = 0;
};

const char* gguf_type_name(uint32_t t) {
    static const char* names[] = {"UINT8", "INT8",   "UINT16", "INT16",  "UINT32", "INT32",  "FLOAT32",
                                  "BOOL",  "STRING", "ARRAY",  "UINT64", "INT64",  "FLOAT64"};
    return t < 13 ? names[t] : "invalid";
}

// Size of a fixed-size GGUF value type, 0 for STRING/ARRAY.
uint64_t gguf_scalar_size(uint32_t t) {
    switch (t) {
        case 0:
        case 1:
        case 7:
            return 1;
        case 2:
        case 3:
            return 2;
        case 4:
        case 5:
        case 6:
            return 4;
        case 10:
        case 11:
        case 12:
            return 8;
        default:
            return 0;
    }
}

class cursor {
public:
    cursor(byte_source& src, const std::string& name) : _src(src), _name(name) {}

    uint64_t pos() const { return _pos; }
    uint64_t remaining() const { return _src.size() - _pos; }
    const std::string& name() const { return _name; }

    [[noreturn]] void bad(uint64_t off, std::string_view field, std::string_view expected,
                          std::string_view found) const {
        fail("{}: at byte {}: {}: expected {}, found {}", _name, off, field, expected, found);
    }

    const uint8_t* take(uint64_t n, std::string_view field) {
        if (n > remaining())
            bad(_pos, field, fmt::format("{} more bytes", n), fmt::format("{} (file truncated)", remaining()));
        const uint8_t* p = _src.at(_pos, n);
        _pos += n;
        return p;
    }

    template <typename T>
    T read(std::string_view field) {
        T v;
        std::memcpy(&v, take(sizeof(T), field), sizeof(T));
        return v;
    }

    std::string read_string(std::string_view field, uint64_t max_len) {
        uint64_t at = _pos;
        auto len = read<uint64_t>(field);
        if (len > remaining())
            bad(at, field, fmt::format("a string length of at most {} (bytes left in file)", remaining()),
                fmt::format("{}", len));
        if (len > max_len)
            bad(at, field, fmt::format("a string length of at most {}", max_len), fmt::format("{}", len));
        const uint8_t* p = take(len, field);
        return std::string(reinterpret_cast<const char*>(p), size_t(len));
    }

private:
    byte_source& _src;
    const std::string& _name;
    uint64_t _pos = 0;
};

// ---------------------------------------------------------------------------------------------------------
// header parsing

meta_value read_scalar(cursor& c, uint32_t type, const std::string& field) {
    meta_value v;
    v.gguf_type = type;
    switch (type) {
        case 0:
            v.value = uint64_t(c.read<uint8_t>(field));
            break;
        case 1:
            v.value = int64_t(c.read<int8_t>(field));
            break;
        case 2:
            v.value = uint64_t(c.read<uint16_t>(field));
            break;
        case 3:
            v.value = int64_t(c.read<int16_t>(field));
            break;
        case 4:
            v.value = uint64_t(c.read<uint32_t>(field));
            break;
        case 5:
            v.value = int64_t(c.read<int32_t>(field));
            break;
        case 6:
            v.value = double(c.read<float>(field));
            break;
        case 7:
            v.value = c.read<uint8_t>(field) != 0;
            break;  // like gguf.cpp: any nonzero byte is true
        case 8:
            v.value = c.read_string(field, k_gguf_max_string_bytes);
            break;
        case 10:
            v.value = c.read<uint64_t>(field);
            break;
        case 11:
            v.value = c.read<int64_t>(field);
            break;
        case 12:
            v.value = c.read<double>(field);
            break;
        default:
            MOE_CHECK(false && "read_scalar: caller validated the type");
    }
    return v;
}

uint32_t read_value_type(cursor& c, const std::string& field) {
    uint64_t at = c.pos();
    auto t = c.read<uint32_t>(field);
    if (t > 12) c.bad(at, field, "a GGUF value type 0..12", fmt::format("{}", int32_t(t)));
    return t;
}

meta_value read_value(cursor& c, const std::string& field) {
    uint32_t type = read_value_type(c, field + " type");
    if (type != 9) return read_scalar(c, type, field);

    uint64_t et_at = c.pos();
    uint32_t et = read_value_type(c, field + " array element type");
    if (et == 9)
        c.bad(et_at, field + " array element type", "a scalar or string type", "ARRAY (nested arrays are refused)");
    uint64_t n_at = c.pos();
    auto n = c.read<uint64_t>(field + " array length");
    uint64_t min_elem = et == 8 ? 8 : gguf_scalar_size(et);
    if (n > c.remaining() / min_elem)
        c.bad(n_at, field + " array length",
              fmt::format("at most {} {} elements (bytes left in file / {})", c.remaining() / min_elem,
                          gguf_type_name(et), min_elem),
              fmt::format("{}", n));
    if (n > k_gguf_max_array_elems)
        c.bad(n_at, field + " array length", fmt::format("at most {} elements", k_gguf_max_array_elems),
              fmt::format("{}", n));

    auto arr = std::make_shared<meta_array>();
    arr->reserve(size_t(std::min<uint64_t>(n, 1u << 16)));  // grows with bytes actually read beyond that
    for (uint64_t i = 0; i < n; i++) arr->push_back(read_scalar(c, et, field));
    meta_value v;
    v.gguf_type = 9;
    v.elem_type = et;
    v.value = std::move(arr);
    return v;
}

// general.alignment: any integer type is accepted (warn if not UINT32 as the spec says), a nonzero power of two.
uint32_t read_alignment(const model_file& mf, const std::string& name) {
    auto it = mf.metadata.find("general.alignment");
    if (it == mf.metadata.end()) return 32;
    const meta_value& v = it->second;
    uint64_t a = 0;
    if (auto* u = std::get_if<uint64_t>(&v.value)) {
        a = *u;
    } else if (auto* s = std::get_if<int64_t>(&v.value)) {
        if (*s <= 0) fail("{}: general.alignment: expected a nonzero power of two, found {}", name, *s);
        a = uint64_t(*s);
    } else {
        fail("{}: general.alignment: expected an integer (UINT32), found type {}", name, gguf_type_name(v.gguf_type));
    }
    if (v.gguf_type != 4)
        warn_once("gguf-alignment-type:" + name,
                  fmt::format("{}: general.alignment has type {}, the spec says UINT32; accepted", name,
                              gguf_type_name(v.gguf_type)));
    if (a == 0 || (a & (a - 1)) != 0 || a > (1ull << 31))
        fail("{}: general.alignment: expected a nonzero power of two up to 2^31, found {}", name, a);
    return uint32_t(a);
}

model_file parse_gguf(byte_source& src, const std::string& name, int file_index) {
    cursor c(src, name);
    model_file mf;
    mf.format = model_format::GGUF;

    // -- fixed header
    if (c.remaining() < 4)
        c.bad(0, "magic", "\"GGUF\" (4 bytes)", fmt::format("a file of {} bytes (truncated)", c.remaining()));
    const uint8_t* m = c.take(4, "magic");
    if (std::memcmp(m, "GGUF", 4) != 0)
        c.bad(0, "magic", "\"GGUF\" (47 47 55 46)",
              fmt::format("{:02x} {:02x} {:02x} {:02x} (not a GGUF file)", m[0], m[1], m[2], m[3]));
    auto version = c.read<uint32_t>("version");
    if (version != 0 && (version & 0xFFFF) == 0)
        c.bad(4, "version", "2 or 3 in little-endian",
              fmt::format("{:#010x}: a byte-swapped (big-endian) file, which is not supported", version));
    if (version == 1) c.bad(4, "version", "2 or 3", "1 (GGUFv1 is no longer supported)");
    if (version != 2 && version != 3) c.bad(4, "version", "2 or 3", fmt::format("{}", version));
    mf.gguf_version = version;

    auto n_tensors = c.read<int64_t>("tensor_count");
    if (n_tensors < 0) c.bad(8, "tensor_count", "a non-negative count", fmt::format("{}", n_tensors));
    auto n_kv = c.read<int64_t>("metadata_kv_count");
    if (n_kv < 0) c.bad(16, "metadata_kv_count", "a non-negative count", fmt::format("{}", n_kv));
    // Each record has a minimum encoded size: refuse counts the rest of the file cannot hold.
    if (uint64_t(n_kv) > c.remaining() / k_gguf_min_kv_bytes)
        c.bad(16, "metadata_kv_count",
              fmt::format("at most {} (bytes left {} / {} bytes per key-value)", c.remaining() / k_gguf_min_kv_bytes,
                          c.remaining(), k_gguf_min_kv_bytes),
              fmt::format("{}", n_kv));
    if (uint64_t(n_tensors) > c.remaining() / k_gguf_min_tensor_info_bytes)
        c.bad(8, "tensor_count",
              fmt::format("at most {} (bytes left {} / {} bytes per tensor info)",
                          c.remaining() / k_gguf_min_tensor_info_bytes, c.remaining(), k_gguf_min_tensor_info_bytes),
              fmt::format("{}", n_tensors));

    if (uint64_t(n_kv) * k_gguf_min_kv_bytes + uint64_t(n_tensors) * k_gguf_min_tensor_info_bytes > c.remaining())
        c.bad(8, "tensor_count and metadata_kv_count",
              fmt::format("records of at most {} bytes in total (the bytes left)", c.remaining()),
              fmt::format("{} tensors and {} key-values", n_tensors, n_kv));

    // -- key/values
    for (int64_t i = 0; i < n_kv; i++) {
        uint64_t at = c.pos();
        std::string key = c.read_string(fmt::format("kv[{}] key", i), 65535);
        if (key.empty()) c.bad(at, fmt::format("kv[{}] key", i), "a non-empty key", "an empty string");
        meta_value v = read_value(c, fmt::format("kv[{}] '{}'", i, printable(key)));
        if (!mf.metadata.emplace(key, std::move(v)).second)
            c.bad(at, fmt::format("kv[{}] key", i), "unique keys", fmt::format("duplicate key '{}'", printable(key)));
    }
    mf.alignment = read_alignment(mf, name);

    // -- tensor infos
    std::unordered_set<std::string> names;
    std::vector<uint64_t> rel_offsets;
    std::vector<uint64_t> info_pos;
    for (int64_t i = 0; i < n_tensors; i++) {
        uint64_t at = c.pos();
        tensor_desc t;
        t.file = file_index;
        t.name = c.read_string(fmt::format("tensor[{}] name", i), 65535);
        // Names are quoted escaped: a NUL would cut the message short, a control byte would reach the terminal.
        std::string tf = fmt::format("tensor[{}] '{}'", i, printable(t.name));
        if (!names.insert(t.name).second)
            c.bad(at, tf + " name", "unique tensor names",
                  fmt::format("duplicate tensor name '{}'", printable(t.name)));
        uint64_t nd_at = c.pos();
        auto n_dims = c.read<uint32_t>(tf + " n_dims");
        if (n_dims > 4) c.bad(nd_at, tf + " n_dims", "at most 4 dimensions", fmt::format("{}", n_dims));
        t.n_dims = int(n_dims);
        for (uint32_t d = 0; d < n_dims; d++) {
            uint64_t ne_at = c.pos();
            t.ne[d] = c.read<int64_t>(fmt::format("{} ne[{}]", tf, d));
            if (t.ne[d] < 0)
                c.bad(ne_at, fmt::format("{} ne[{}]", tf, d), "a non-negative dimension (negative ne)",
                      fmt::format("{}", t.ne[d]));
        }
        uint64_t type_at = c.pos();
        auto type_id = c.read<uint32_t>(tf + " type");
        auto info = ggml_type_info(type_id);
        if (!info)
            c.bad(type_at, tf + " type", "a supported ggml type id",
                  fmt::format("{} (unknown, removed or unsupported type)", int32_t(type_id)));
        t.type = info->type;
        if (t.ne[0] % info->block_elems != 0)
            c.bad(nd_at, tf + " ne[0]",
                  fmt::format("a multiple of the {} block size {}", info->name, info->block_elems),
                  fmt::format("{}", t.ne[0]));
        auto bytes = tensor_nbytes(t.type, t.ne, t.n_dims);
        if (!bytes)
            c.bad(nd_at, tf + " shape", "a shape whose element and byte counts fit in 64 bits",
                  fmt::format("[{}, {}, {}, {}] (size overflows)", t.ne[0], t.ne[1], t.ne[2], t.ne[3]));
        t.bytes = *bytes;
        uint64_t off_at = c.pos();
        auto rel = c.read<uint64_t>(tf + " offset");
        if (rel % mf.alignment != 0)
            c.bad(off_at, tf + " offset", fmt::format("a multiple of the alignment {}", mf.alignment),
                  fmt::format("{} (misaligned)", rel));
        rel_offsets.push_back(rel);
        info_pos.push_back(off_at);
        mf.tensors.push_back(std::move(t));
    }

    // -- tensor data: data_start = end of tensor infos padded to the alignment (only when there are tensors)
    uint64_t data_start = c.pos();
    if (n_tensors > 0) {
        data_start = (data_start + mf.alignment - 1) / mf.alignment * mf.alignment;
        if (data_start > src.size())
            c.bad(c.pos(), "padding before tensor data",
                  fmt::format("a file of at least {} bytes (data starts at {})", data_start, data_start),
                  fmt::format("{} bytes (file truncated)", src.size()));
    }
    uint64_t data_size = src.size() - data_start;
    for (size_t i = 0; i < mf.tensors.size(); i++) {
        tensor_desc& t = mf.tensors[i];
        uint64_t rel = rel_offsets[i];
        if (rel > data_size || t.bytes > data_size - rel)
            c.bad(info_pos[i], fmt::format("tensor[{}] '{}' offset", i, printable(t.name)),
                  fmt::format("data inside the file: data_start {} + offset + {} bytes <= file size {}", data_start,
                              t.bytes, src.size()),
                  fmt::format("offset {} (tensor ends past the end of the file)", rel));
        t.offset = data_start + rel;
        mf.index.emplace(t.name, i);
    }
    return mf;
}

void finish_single(model_file& mf, const std::string& path, uint64_t size) {
    mf.paths = {path};
    mf.file_sizes = {size};
}

// Why stat() failed, as a message ends: "no such file" for a missing one, else the system's reason (a symlink
// loop, a name too long, no permission: never reported as missing).
std::string stat_failure(int err) {
    if (err == ENOENT) return "no such file";
    return fmt::format("a path that cannot be used: {}", std::strerror(err));
}

std::optional<int64_t> split_key(const model_file& mf, const std::string& key, const std::string& path) {
    const meta_value* v = mf.meta(key);
    if (!v) return std::nullopt;
    auto i = mf.meta_int(key);
    if (!i) fail("{}: {}: expected an integer, found type {}", path, key, gguf_type_name(v->gguf_type));
    return i;
}

model_file read_gguf_file(const std::string& path, int file_index) {
    input_file f(path);
    byte_source src(f);
    model_file mf = parse_gguf(src, path, file_index);
    finish_single(mf, path, f.size());
    return mf;
}

}  // namespace

model_file parse_gguf_buffer(const uint8_t* data, size_t size, const std::string& name) {
    byte_source src(data, size);
    model_file mf = parse_gguf(src, name, 0);
    finish_single(mf, name, size);
    return mf;
}

model_file read_gguf(const std::string& path) {
    auto split = parse_gguf_split_name(path);
    if (!split) return read_gguf_file(path, 0);
    if (split->count < 1 || split->shard < 1 || split->shard > split->count)
        fail("{}: split GGUF file name: expected shard 1..{} of {}, found shard {}", path, split->count, split->count,
             split->shard);

    // Any shard opens the whole set from shard 1, which holds the model metadata.
    std::string first = gguf_split_path(split->prefix, 1, split->count);
    struct stat st {};
    if (::stat(first.c_str(), &st) != 0)
        fail("{}: split GGUF: expected shard 1 of {} at {}, found {}", path, split->count, first, stat_failure(errno));
    model_file mf = read_gguf_file(first, 0);
    auto count = split_key(mf, "split.count", first);
    if (!count) {
        if (split->count == 1) return mf;  // a plain file that happens to carry the split naming
        fail("{}: split.count: expected {} (from the file name), found no such key", first, split->count);
    }
    if (*count != split->count)
        fail("{}: split.count: expected {} (from the file name), found {}", first, split->count, *count);
    auto total = split_key(mf, "split.tensors.count", first);
    if (!total) fail("{}: split.tensors.count: expected the total tensor count, found no such key", first);

    for (int s = 0; s < split->count; s++) {
        std::string shard_path = gguf_split_path(split->prefix, s + 1, split->count);
        if (s > 0 && ::stat(shard_path.c_str(), &st) != 0)
            fail("{}: split GGUF: expected shard {} of {} at {}, found {}", first, s + 1, split->count, shard_path,
                 stat_failure(errno));
        model_file shard = s == 0 ? model_file{} : read_gguf_file(shard_path, s);
        model_file& sh = s == 0 ? mf : shard;
        const std::string& sp = s == 0 ? first : sh.paths[0];
        auto no = split_key(sh, "split.no", sp);
        if (!no || *no != s)
            fail("{}: split.no: expected {} (0-based shard index), found {}", sp, s, no ? std::to_string(*no) : "none");
        auto cnt = split_key(sh, "split.count", sp);
        if (!cnt || *cnt != split->count)
            fail("{}: split.count: expected {}, found {}", sp, split->count, cnt ? std::to_string(*cnt) : "none");
        if (s == 0) continue;
        mf.paths.push_back(sh.paths[0]);
        mf.file_sizes.push_back(sh.file_sizes[0]);
        for (auto& t : sh.tensors) {
            if (mf.index.count(t.name))
                fail("{}: tensor '{}': expected tensor names unique across shards, found a duplicate of a tensor in {}",
                     sp, printable(t.name), mf.paths[size_t(mf.tensors[mf.index[t.name]].file)]);
            mf.index.emplace(t.name, mf.tensors.size());
            mf.tensors.push_back(std::move(t));
        }
    }
    if (int64_t(mf.tensors.size()) != *total)
        fail("{}: split.tensors.count: expected {} (the tensors found in all {} shards), found {}", first,
             mf.tensors.size(), split->count, *total);
    return mf;
}

}  // namespace moe
