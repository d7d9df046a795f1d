// Output files checked up front, written beside their target and renamed into place (see output_file.h).
#include "runtime/cli/output_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "common/printable.h"

namespace moe::cli {

namespace {

// The absolute form of `path` with its directory resolved (the file itself may not exist yet).
std::string identity_of(const std::string& path) {
    const size_t slash = path.find_last_of('/');
    const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    char buf[PATH_MAX];
    if (!::realpath(dir.c_str(), buf)) return path;
    return std::string(buf) + "/" + name;
}

bool same_inode(const std::string& a, const std::string& b) {
    struct stat sa {
    }, sb{};
    return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

}  // namespace

output_file::output_file(std::string flag, std::string path, const std::vector<std::string>& inputs,
                         const std::vector<const output_file*>& others)
    : _flag(std::move(flag)), _path(std::move(path)) {
    const std::string shown = printable(_path);
    if (_path.empty()) fail_usage("{}: an empty file name", _flag);
    if (!_path.empty() && _path.back() == '/') fail_usage("{} {}: is a directory name, expected a file", _flag, shown);
    struct stat st {};
    if (::stat(_path.c_str(), &st) == 0) {
        if (S_ISDIR(st.st_mode)) fail_usage("{} {}: is a directory, expected a file", _flag, shown);
        if (!S_ISREG(st.st_mode))
            fail_usage(
                "{} {}: exists and is not a regular file (a device, FIFO or socket); results are written to "
                "a temporary file and renamed into place, which a device cannot take",
                _flag, shown);
    }
    for (const std::string& in : inputs)
        if (same_inode(_path, in))
            fail_usage("{} {}: is an input of this run ({}): writing it would destroy it", _flag, shown, printable(in));
    _identity = identity_of(_path);
    for (const output_file* o : others)
        if (o && (o->_identity == _identity || same_inode(_path, o->_path)))
            fail_usage("{} {}: is also the output of {}", _flag, shown, o->_flag);

    _tmp = _path + ".tmp-XXXXXX";
    const int fd = ::mkstemp(_tmp.data());
    if (fd < 0) fail_usage("{} {}: cannot create a file in its directory: {}", _flag, shown, std::strerror(errno));
    ::fchmod(fd, 0644);
    _f = ::fdopen(fd, "w");
    if (!_f) {
        const int err = errno;
        ::close(fd);
        ::unlink(_tmp.c_str());
        fail("{} {}: {}", _flag, shown, std::strerror(err));
    }
}

output_file::~output_file() {
    if (_f) std::fclose(_f);
    if (!_committed && !_tmp.empty()) ::unlink(_tmp.c_str());
}

void output_file::write(std::string_view bytes) {
    if (!_f) fail("{} {}: already closed", _flag, printable(_path));
    if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), _f) != bytes.size())
        fail("{} {}: write failed: {}", _flag, printable(_path), std::strerror(errno));
}

void output_file::commit() {
    if (!_f) fail("{} {}: already closed", _flag, printable(_path));
    const bool flushed = std::fflush(_f) == 0 && ::fsync(::fileno(_f)) == 0;
    const int err = errno;
    const bool closed = std::fclose(_f) == 0;
    _f = nullptr;
    if (!flushed || !closed) fail("{} {}: write failed: {}", _flag, printable(_path), std::strerror(err));
    if (::rename(_tmp.c_str(), _path.c_str()) != 0)
        fail("{} {}: cannot move the finished file into place: {}", _flag, printable(_path), std::strerror(errno));
    _committed = true;
}

}  // namespace moe::cli
