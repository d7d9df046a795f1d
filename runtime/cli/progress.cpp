// Load progress on stderr (see progress.h).
#include "runtime/cli/progress.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <memory>

#include "common/units.h"

namespace moe::cli {

std::string progress_bar(uint64_t done, uint64_t total, int width) {
    const double frac = total ? double(std::min(done, total)) / double(total) : 1.0;
    const int filled = int(frac * width);
    return fmt::format("[{}{}] {:3d}%  {} / {}", std::string(size_t(filled), '#'),
                       std::string(size_t(width - filled), '-'), int(frac * 100.0), format_bytes(done),
                       format_bytes(total));
}

load_progress_fn load_progress_reporter(std::string what, bool tty, FILE* out) {
    struct state {
        std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
        int last_percent = -1;
        bool finished = false;
    };
    auto st = std::make_shared<state>();
    return [st, what = std::move(what), tty, out](uint64_t done, uint64_t total) {
        if (st->finished) return;
        const int percent = total ? int(100 * std::min(done, total) / total) : 100;
        // Redraw only when the percentage moves: a model has thousands of tensors, a terminal needs 101 frames.
        if (tty && percent != st->last_percent)
            std::fprintf(out, "\r%s: loading resident weights %s", what.c_str(), progress_bar(done, total).c_str());
        st->last_percent = percent;
        if (done < total) return;
        st->finished = true;
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - st->t0).count();
        if (tty)
            std::fprintf(out, " in %.1f s\n", s);
        else
            std::fprintf(out, "%s: loaded resident weights: %s from the file in %.3f s\n", what.c_str(),
                         format_bytes(total).c_str(), s);
        std::fflush(out);
    };
}

}  // namespace moe::cli
