// GGUF writer (see gguf_writer.h). The file is one byte stream, header then data, cut into chunks of
// chunk_bytes: a thread pool fills chunk i while earlier chunks are being written by pwrite, each from its own
// buffer. With O_DIRECT every write starts at a multiple of the chunk size and is a multiple of 4 KiB long (the
// last one is padded with zeros and the file truncated back to its size afterwards).
#include "runtime/gguf_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <thread>

#include "common/error.h"
#include "common/units.h"
#include "runtime/thread_pool.h"

namespace moe {
namespace {

// GGUF metadata value type ids (docs/model-formats.md §1.1).
constexpr uint32_t k_vt_u32 = 4, k_vt_f32 = 6, k_vt_bool = 7, k_vt_string = 8, k_vt_u64 = 10;
constexpr uint64_t k_direct_align = 4096;

template <typename T>
void put(std::vector<uint8_t>& out, T v) {
    uint8_t tmp[sizeof(T)];
    std::memcpy(tmp, &v, sizeof(T));
    out.insert(out.end(), tmp, tmp + sizeof(T));
}

void put_string(std::vector<uint8_t>& out, const std::string& s) {
    put<uint64_t>(out, s.size());
    out.insert(out.end(), s.begin(), s.end());
}

uint64_t align_up(uint64_t n, uint64_t a) {
    return (n + a - 1) / a * a;
}

std::string parent_dir(const std::string& path) {
    const size_t slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    return slash == 0 ? "/" : path.substr(0, slash);
}

void pwrite_all(int fd, const uint8_t* p, uint64_t n, uint64_t off, const std::string& path) {
    while (n > 0) {
        const ssize_t w = ::pwrite(fd, p, size_t(std::min<uint64_t>(n, 1ull << 30)), off_t(off));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            fail("{}: write of {} bytes at offset {} failed: {}", path, n, off,
                 w < 0 ? std::strerror(errno) : "no progress");
        p += w, n -= uint64_t(w), off += uint64_t(w);
    }
}

struct aligned_free {
    void operator()(uint8_t* p) const { std::free(p); }
};
using aligned_buffer = std::unique_ptr<uint8_t, aligned_free>;

}  // namespace

gguf_builder::gguf_builder(uint32_t alignment) : _alignment(alignment) {
    MOE_CHECK(alignment > 0 && (alignment & (alignment - 1)) == 0);
    add_u32("general.alignment", alignment);
}

void gguf_builder::add_kv(const std::string& key, uint32_t type, const void* payload, size_t n) {
    put_string(_kv_bytes, key);
    put<uint32_t>(_kv_bytes, type);
    const auto* p = static_cast<const uint8_t*>(payload);
    _kv_bytes.insert(_kv_bytes.end(), p, p + n);
    _n_kv++;
}

gguf_builder& gguf_builder::add_u32(const std::string& key, uint32_t v) {
    add_kv(key, k_vt_u32, &v, sizeof v);
    return *this;
}
gguf_builder& gguf_builder::add_u64(const std::string& key, uint64_t v) {
    add_kv(key, k_vt_u64, &v, sizeof v);
    return *this;
}
gguf_builder& gguf_builder::add_f32(const std::string& key, float v) {
    add_kv(key, k_vt_f32, &v, sizeof v);
    return *this;
}
gguf_builder& gguf_builder::add_bool(const std::string& key, bool v) {
    const uint8_t b = v ? 1 : 0;
    add_kv(key, k_vt_bool, &b, 1);
    return *this;
}
gguf_builder& gguf_builder::add_string(const std::string& key, const std::string& v) {
    std::vector<uint8_t> s;
    put_string(s, v);
    add_kv(key, k_vt_string, s.data(), s.size());
    return *this;
}

size_t gguf_builder::add_tensor(const std::string& name, tensor_type type, std::vector<int64_t> ne) {
    if (ne.empty() || ne.size() > 4) fail("tensor '{}': expected 1 to 4 dimensions, found {}", name, ne.size());
    const auto bytes = tensor_nbytes(type, ne.data(), int(ne.size()));
    if (!bytes)
        fail("tensor '{}': shape with ne[0] = {} does not fit type {} (blocks of {}) or overflows", name, ne[0],
             type_name(type), type_info(type).block_elems);
    gguf_tensor_spec t{name, type, std::move(ne), *bytes, align_up(data_bytes(), _alignment)};
    _tensors.push_back(std::move(t));
    return _tensors.size() - 1;
}

std::vector<uint8_t> gguf_builder::header() const {
    std::vector<uint8_t> out = {'G', 'G', 'U', 'F'};
    put<uint32_t>(out, 3);
    put<int64_t>(out, int64_t(_tensors.size()));
    put<int64_t>(out, int64_t(_n_kv));
    out.insert(out.end(), _kv_bytes.begin(), _kv_bytes.end());
    for (const auto& t : _tensors) {
        put_string(out, t.name);
        put<uint32_t>(out, uint32_t(t.ne.size()));
        for (int64_t v : t.ne) put<int64_t>(out, v);
        put<uint32_t>(out, static_cast<uint32_t>(t.type));
        put<uint64_t>(out, t.rel_offset);
    }
    out.resize(size_t(align_up(out.size(), _alignment)), 0);
    return out;
}

uint64_t gguf_builder::header_bytes() const {
    uint64_t n = 4 + 4 + 8 + 8 + _kv_bytes.size();
    for (const auto& t : _tensors) n += 8 + t.name.size() + 4 + 8 * t.ne.size() + 4 + 8;
    return align_up(n, _alignment);
}

uint64_t gguf_builder::data_bytes() const {
    return _tensors.empty() ? 0 : _tensors.back().rel_offset + _tensors.back().bytes;
}

gguf_write_result write_gguf_file(const std::string& path, const gguf_builder& b, const gguf_fill_fn& fill,
                                  const gguf_write_options& opt) {
    MOE_CHECK(opt.chunk_bytes > 0 && opt.chunk_bytes % k_direct_align == 0 && opt.buffers >= 1);
    const std::vector<uint8_t> header = b.header();
    const uint64_t data_start = header.size();
    const uint64_t total = data_start + b.data_bytes();
    const std::vector<gguf_tensor_spec>& tensors = b.tensors();

    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
        if (S_ISDIR(st.st_mode)) fail("{}: is a directory", path);
        if (!opt.overwrite) fail("{}: already exists; not overwritten", path);
    }
    const std::string dir = parent_dir(path);
    struct statvfs vfs {};
    if (::statvfs(dir.c_str(), &vfs) != 0)
        fail("{}: cannot check the free space of {}: {}", path, dir, std::strerror(errno));
    const uint64_t free_bytes = uint64_t(vfs.f_bavail) * uint64_t(vfs.f_frsize);
    if (free_bytes < total)
        fail("{}: needs {} ({} bytes) but the file system holding {} has only {} free", path, format_bytes(total),
             total, dir, format_bytes(free_bytes));

    const std::string tmp = path + ".tmp";
    const auto t0 = std::chrono::steady_clock::now();
    bool direct = opt.direct;
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | (direct ? O_DIRECT : 0), 0644);
    if (fd >= 0 && direct) {
        // Some file systems open with O_DIRECT and then refuse the writes: probe with one aligned block.
        void* probe = std::aligned_alloc(k_direct_align, k_direct_align);
        bool ok = false;
        if (probe) {
            std::memset(probe, 0, k_direct_align);
            ok = ::pwrite(fd, probe, k_direct_align, 0) == ssize_t(k_direct_align);
            std::free(probe);
        }
        if (!ok) {
            ::close(fd);
            fd = -1;
            errno = EINVAL;
        }
    }
    if (fd < 0 && direct && errno == EINVAL) {  // tmpfs and some others refuse O_DIRECT
        direct = false;
        fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    }
    if (fd < 0) fail("{}: cannot create: {}", tmp, std::strerror(errno));

    gguf_write_result res;
    res.bytes = total;
    res.direct = direct;
    res.threads = opt.threads > 0 ? opt.threads : int(std::max(1u, std::thread::hardware_concurrency()));
    try {
        // Reserve the blocks now: a full disk fails here, before minutes of writing, and the file is contiguous.
        // fallocate, not posix_fallocate: where the file system cannot reserve, the latter would write every block.
        const int fa = ::fallocate(fd, 0, 0, off_t(align_up(total, k_direct_align))) == 0 ? 0 : errno;
        if (fa == ENOSPC) fail("{}: not enough free space for {} ({} bytes)", tmp, format_bytes(total), total);
        if (fa != 0 && fa != EOPNOTSUPP && fa != EINVAL && fa != ENOSYS)
            fail("{}: cannot reserve {} bytes: {}", tmp, total, std::strerror(fa));

        // Bytes [off, off + n) of the whole stream into dst: header bytes, tensor bytes, zero padding between.
        auto fill_stream = [&](uint64_t off, uint64_t n, uint8_t* dst) {
            const uint64_t end = off + n;
            if (off < data_start) {
                const uint64_t h = std::min(end, data_start) - off;
                std::memcpy(dst, header.data() + off, size_t(h));
                off += h, dst += h;
            }
            // The first tensor that ends after `off - data_start`.
            auto it =
                std::upper_bound(tensors.begin(), tensors.end(), off - data_start,
                                 [](uint64_t r, const gguf_tensor_spec& t) { return r < t.rel_offset + t.bytes; });
            while (off < end) {
                const uint64_t rel = off - data_start;
                if (it == tensors.end()) {
                    std::memset(dst, 0, size_t(end - off));
                    break;
                }
                if (rel < it->rel_offset) {  // padding before the tensor
                    const uint64_t z = std::min(end - off, it->rel_offset - rel);
                    std::memset(dst, 0, size_t(z));
                    off += z, dst += z;
                    continue;
                }
                const uint64_t from = rel - it->rel_offset;
                const uint64_t to = std::min(it->bytes, from + (end - off));
                fill(size_t(it - tensors.begin()), from, to, dst);
                off += to - from, dst += to - from;
                ++it;
            }
        };

        const uint64_t chunk = opt.chunk_bytes;
        const uint64_t n_chunks = (total + chunk - 1) / chunk;
        std::vector<aligned_buffer> bufs;
        const int n_bufs = int(std::min<uint64_t>(uint64_t(opt.buffers), std::max<uint64_t>(n_chunks, 1)));
        for (int i = 0; i < n_bufs; i++) {
            auto* p = static_cast<uint8_t*>(std::aligned_alloc(k_direct_align, size_t(chunk)));
            if (!p) fail("{}: cannot allocate a write buffer of {}", tmp, format_bytes(chunk));
            bufs.emplace_back(p);
        }
        thread_pool pool(res.threads);
        // Declared after the buffers: destroyed (waited for) first, so no write outlives its buffer.
        std::vector<std::future<void>> writes(static_cast<size_t>(n_bufs));
        constexpr uint64_t k_piece = 1ull << 20;  // the unit the threads share a chunk in
        uint64_t written = 0;
        for (uint64_t c = 0; c < n_chunks; c++) {
            if (opt.cancel && opt.cancel->load()) fail("{}: interrupted; removed", tmp);
            const size_t bi = size_t(c % uint64_t(n_bufs));
            if (writes[bi].valid()) writes[bi].get();  // the write that used this buffer last; rethrows its error
            uint8_t* buf = bufs[bi].get();
            const uint64_t off = c * chunk;
            const uint64_t len = std::min(chunk, total - off);
            auto work = [&](int64_t begin, int64_t end, int) {
                for (int64_t p = begin; p < end; p++) {
                    const uint64_t a = uint64_t(p) * k_piece, e = std::min(len, a + k_piece);
                    fill_stream(off + a, e - a, buf + a);
                }
            };
            pool.parallel_for(int64_t((len + k_piece - 1) / k_piece), work);
            uint64_t wlen = len;
            if (direct && wlen % k_direct_align) {
                const uint64_t padded = align_up(wlen, k_direct_align);
                std::memset(buf + wlen, 0, size_t(padded - wlen));
                wlen = padded;
            }
            writes[bi] =
                std::async(std::launch::async, [fd, buf, wlen, off, &tmp] { pwrite_all(fd, buf, wlen, off, tmp); });
            written += len;
            if (opt.progress) opt.progress(written, total);
        }
        for (auto& w : writes)
            if (w.valid()) w.get();
        if (::ftruncate(fd, off_t(total)) != 0)
            fail("{}: cannot set the size to {}: {}", tmp, total, std::strerror(errno));
        if (::fsync(fd) != 0) fail("{}: fsync failed: {}", tmp, std::strerror(errno));
        if (::close(fd) != 0) {
            fd = -1;
            fail("{}: close failed: {}", tmp, std::strerror(errno));
        }
        fd = -1;
        if (::rename(tmp.c_str(), path.c_str()) != 0)
            fail("{}: cannot rename to {}: {}", tmp, path, std::strerror(errno));
    } catch (...) {
        if (fd >= 0) ::close(fd);
        ::unlink(tmp.c_str());
        throw;
    }
    // Make the rename itself durable.
    if (int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
        (void)::fsync(dfd);
        ::close(dfd);
    }
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return res;
}

}  // namespace moe
