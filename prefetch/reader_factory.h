// Picks the reader at start-up (seastar's try_create_uring idea): io_uring with O_DIRECT when the kernel and the
// file system allow it, else io_uring on the page cache, else a pread thread pool; each fallback warns once.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "prefetch/file_source.h"

namespace moe {

enum class reader_kind {
    AUTO,            // the best that works for this file (see probe_io)
    URING_DIRECT,    // io_uring + O_DIRECT (bypasses the page cache: what a model larger than RAM wants)
    URING_BUFFERED,  // io_uring through the page cache (O_DIRECT refused, e.g. tmpfs on older kernels)
    PREAD,           // pread on a thread pool, page cache
    PREAD_DIRECT,    // pread on a thread pool, O_DIRECT with the same bounce/alignment handling
};

std::string_view reader_kind_name(reader_kind k);
// "auto", "uring", "uring-buffered", "pread", "pread-direct"; throws moe::error naming `what` otherwise.
reader_kind parse_reader_kind(std::string_view text, std::string_view what);

struct io_probe {
    bool uring = false;        // a ring could be set up and a NOP went round
    std::string uring_error;   // why not
    bool direct = false;       // the file opens with O_DIRECT and an aligned 4 KiB read works
    std::string direct_error;  // why not
};
// Probes io_uring (once per process, cached) and O_DIRECT for this file.
io_probe probe_io(const std::string& path);

// Opens `path` with the requested reader; AUTO falls back (warning once per kind of fallback). Throws
// moe::error when the file cannot be opened at all, or when an explicit kind is not available here.
std::unique_ptr<file_source> open_file_source(const std::string& path, reader_kind kind = reader_kind::AUTO,
                                              const reader_config& cfg = {});

}  // namespace moe
