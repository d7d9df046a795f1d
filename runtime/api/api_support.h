// What every exported function of the C API shares (moe_runtime.cpp: the offloading layer; moe_engine.cpp: the
// full runtime): the thread-local last-error message, the api_error that carries a status, guard() that turns
// every exception into a status so nothing C++ crosses the boundary, and the versioned-struct helpers.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <string_view>
#include <utility>

#include "cache/cache_stats.h"
#include "common/error.h"
#include "moe_runtime.h"
#include "prefetch/prefetcher.h"
#include "prefetch/reader_factory.h"
#include "runtime/offloader.h"

namespace moe_api {

// The message moe_last_error() returns (one per thread).
std::string& last_error_text();

// An error carrying the status it maps to (moe::error from below maps by call site, see guard()).
struct api_error : std::exception {
    moe_status status;
    std::string message;
    api_error(moe_status s, std::string m) : status(s), message(std::move(m)) {}
    const char* what() const noexcept override { return message.c_str(); }
};

template <typename... Args>
[[noreturn]] void api_fail(moe_status s, fmt::format_string<Args...> f, Args&&... args) {
    throw api_error(s, fmt::format(f, std::forward<Args>(args)...));
}

// The status of a configuration the offloader refused.
inline moe_status status_of(moe::config_fault f) {
    switch (f) {
        case moe::config_fault::BUDGET:
            return MOE_ERR_BUDGET;
        case moe::config_fault::UNKNOWN_NAME:
            return MOE_ERR_UNKNOWN_NAME;
        case moe::config_fault::UNSUPPORTED:
            return MOE_ERR_UNSUPPORTED;
        case moe::config_fault::INVALID:
            break;
    }
    return MOE_ERR_INVALID_ARGUMENT;
}

// options->reader as the readers' own enum.
inline moe::reader_kind reader_of(int32_t k) {
    switch (k) {
        case MOE_READER_AUTO:
            return moe::reader_kind::AUTO;
        case MOE_READER_URING_DIRECT:
            return moe::reader_kind::URING_DIRECT;
        case MOE_READER_URING_BUFFERED:
            return moe::reader_kind::URING_BUFFERED;
        case MOE_READER_PREAD:
            return moe::reader_kind::PREAD;
        case MOE_READER_PREAD_DIRECT:
            return moe::reader_kind::PREAD_DIRECT;
        default:
            api_fail(MOE_ERR_INVALID_ARGUMENT, "options->reader is {}; expected a moe_reader_kind in [0, 4]", k);
    }
}

inline moe_status set_error(moe_status s, std::string_view msg) {
    try {
        last_error_text().assign(msg);
    } catch (...) {
        // Out of memory while recording the message: keep the status, lose the text.
    }
    return s;
}

// Runs `body`; moe::error (bad input reported by the layers below) maps to `input_status`, the caller's best
// description of what input was wrong at that call site.
template <typename F>
moe_status guard(const char* fn, moe_status input_status, F&& body) noexcept {
    try {
        body();
        return MOE_OK;
    } catch (const api_error& e) {
        return set_error(e.status, fmt::format("{}: {}", fn, e.message));
    } catch (const moe::config_error& e) {
        return set_error(status_of(e.fault), fmt::format("{}: {}", fn, e.what()));
    } catch (const moe::error& e) {
        return set_error(input_status, fmt::format("{}: {}", fn, e.what()));
    } catch (const std::bad_alloc&) {
        return set_error(MOE_ERR_OUT_OF_MEMORY, fmt::format("{}: out of memory", fn));
    } catch (const std::exception& e) {
        return set_error(MOE_ERR_INTERNAL, fmt::format("{}: internal error: {}", fn, e.what()));
    } catch (...) {
        return set_error(MOE_ERR_INTERNAL, fmt::format("{}: internal error (unknown exception)", fn));
    }
}

template <typename T>
void need(const T* p, const char* what) {
    if (!p) api_fail(MOE_ERR_INVALID_ARGUMENT, "{} is NULL", what);
}

// Versioned structs: the caller's struct_size says which fields it has; unknown tails keep our defaults.
template <typename T>
void check_size(const T* s, const char* what) {
    need(s, what);
    if (s->struct_size == 0 || s->struct_size > (1u << 16))
        api_fail(MOE_ERR_INVALID_ARGUMENT, "{}->struct_size is {}; set it to sizeof({}) ({} in this library)", what,
                 s->struct_size, what, sizeof(T));
}

// Copies the fields `src` has (struct_size bytes) over `dst`, which holds defaults.
template <typename T>
void read_versioned(T& dst, const T* src) {
    const size_t n = std::min<size_t>(src->struct_size, sizeof(T));
    std::memcpy(static_cast<void*>(&dst), src, n);
    dst.struct_size = sizeof(T);
}

// Writes the fields the caller's struct has room for.
template <typename T>
void write_versioned(T* dst, const T& src) {
    const uint32_t caller = dst->struct_size;
    const size_t n = std::min<size_t>(caller, sizeof(T));
    std::memcpy(static_cast<void*>(dst), &src, n);
    dst->struct_size = caller;
}

// One level's (or layer's) cache figures and the prefetcher's (over the same layers) in the C struct.
inline void fill_stats(moe_stats& out, const moe::layer_stats& s, uint64_t rows, const moe::prefetcher_layer_stats& p) {
    out = moe_stats{};
    out.struct_size = sizeof(moe_stats);
    out.hits = s.hits;
    out.prefetch_hits = s.prefetch_hits;
    out.misses = s.misses;
    out.joins = s.joins;
    out.evictions = s.evictions;
    out.loads = s.loads;
    out.prefetch_loads = s.prefetch_loads;
    out.failed_loads = s.failed_loads;
    out.bytes_loaded = s.bytes_loaded;
    out.wait_ns = s.wait_ns;
    out.routed_rows = rows;
    out.predicted = p.guesses;
    out.prefetch_joins = s.prefetch_joins;
    out.cancelled_loads = s.cancelled_loads;
    out.prefetch_unused_evictions = s.prefetch_unused_evictions;
    out.prefetch_wasted_bytes = s.prefetch_unused_bytes;
    out.prefetch_wasted = s.prefetch_wasted();
    out.prefetch_recall = s.prefetch_recall();
    out.prefetch_precision = s.prefetch_precision();
    out.needed = p.needed;
    out.predicted_needed = p.predicted_needed;
    out.prediction_recall = p.prediction_recall();
    out.prefetch_issued = p.issued;
    out.prefetch_already = p.already;
    out.prefetch_skipped = p.skipped;
    out.prefetch_cancelled = p.cancelled;
}

}  // namespace moe_api
