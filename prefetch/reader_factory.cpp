// Start-up probing and reader selection (see reader_factory.h). MOE_NO_URING=1 / MOE_NO_DIRECT=1 in the
// environment make the probe report io_uring / O_DIRECT as unavailable: how tests and users force a fallback
// on machines where everything works (tmpfs accepts O_DIRECT since Linux 6.6).
#include "prefetch/reader_factory.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "prefetch/pread_reader.h"
#include "prefetch/read_plan.h"
#include "prefetch/uring_reader.h"

namespace moe {

namespace {
bool env_set(const char* name) {
    const char* v = std::getenv(name);
    return v && *v && std::strcmp(v, "0") != 0;
}
}  // namespace

std::string_view reader_kind_name(reader_kind k) {
    switch (k) {
        case reader_kind::AUTO:
            return "auto";
        case reader_kind::URING_DIRECT:
            return "uring";
        case reader_kind::URING_BUFFERED:
            return "uring-buffered";
        case reader_kind::PREAD:
            return "pread";
        case reader_kind::PREAD_DIRECT:
            return "pread-direct";
    }
    return "?";
}

reader_kind parse_reader_kind(std::string_view text, std::string_view what) {
    for (reader_kind k : {reader_kind::AUTO, reader_kind::URING_DIRECT, reader_kind::URING_BUFFERED, reader_kind::PREAD,
                          reader_kind::PREAD_DIRECT})
        if (text == reader_kind_name(k)) return k;
    fail("{}: expected one of auto, uring, uring-buffered, pread, pread-direct, found '{}'", what, text);
}

io_probe probe_io(const std::string& path) {
    io_probe p;
    static const std::pair<bool, std::string> uring = [] {
        std::string why;
        bool ok = uring_reader::probe(why);
        return std::make_pair(ok, why);
    }();
    p.uring = uring.first;
    p.uring_error = uring.second;
    if (env_set("MOE_NO_URING")) {
        p.uring = false;
        p.uring_error = "disabled by MOE_NO_URING";
    }
    if (env_set("MOE_NO_DIRECT")) {
        p.direct_error = "disabled by MOE_NO_DIRECT";
        return p;
    }
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    if (fd < 0) {
        p.direct_error = fmt::format("open with O_DIRECT: {}", std::strerror(errno));
        return p;
    }
    // Some file systems accept the flag and refuse the read: try one aligned block.
    void* buf = std::aligned_alloc(direct_align, direct_align);
    if (!buf) {
        ::close(fd);
        p.direct_error = "out of memory for the aligned test read";
        return p;
    }
    ssize_t r = ::pread(fd, buf, direct_align, 0);
    if (r < 0)
        p.direct_error = fmt::format("aligned O_DIRECT read: {}", std::strerror(errno));
    else
        p.direct = true;
    std::free(buf);
    ::close(fd);
    return p;
}

std::unique_ptr<file_source> open_file_source(const std::string& path, reader_kind kind, const reader_config& cfg) {
    if (kind == reader_kind::PREAD) return std::make_unique<pread_reader>(path, false, cfg);
    if (kind == reader_kind::PREAD_DIRECT) return std::make_unique<pread_reader>(path, true, cfg);
    // Fail on a missing file with the plain open error, not a probe message.
    if (::access(path.c_str(), R_OK) != 0) fail("cannot open {} for reading: {}", path, std::strerror(errno));
    io_probe p = probe_io(path);
    if (kind == reader_kind::URING_DIRECT || kind == reader_kind::URING_BUFFERED) {
        if (!p.uring) fail("{}: io_uring reader requested but io_uring is not available: {}", path, p.uring_error);
        if (kind == reader_kind::URING_DIRECT && !p.direct)
            fail("{}: O_DIRECT reader requested but the file refuses O_DIRECT ({})", path, p.direct_error);
        return std::make_unique<uring_reader>(path, kind == reader_kind::URING_DIRECT, cfg);
    }
    if (p.uring && p.direct) return std::make_unique<uring_reader>(path, true, cfg);
    if (!p.direct)
        warn_once("reader-no-direct", fmt::format("{}: O_DIRECT is not available ({}); expert reads go through the "
                                                  "page cache",
                                                  path, p.direct_error));
    if (p.uring) return std::make_unique<uring_reader>(path, false, cfg);
    warn_once("reader-no-uring",
              fmt::format("io_uring is not available ({}); using the pread thread pool", p.uring_error));
    return std::make_unique<pread_reader>(path, p.direct, cfg);
}

}  // namespace moe
