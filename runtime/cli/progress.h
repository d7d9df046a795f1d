// Progress of loading the resident weights, on stderr: on a terminal a bar redrawn in place; elsewhere (logs,
// pipes, CI) nothing while it runs and one line when done, so logs hold no carriage-return noise.
#pragma once

#include <cstdio>
#include <string>

#include "runtime/resident_weights.h"

namespace moe::cli {

// `what` names the command in the line ("moe run"). `tty`: draw the bar (pass isatty(fileno(out))).
load_progress_fn load_progress_reporter(std::string what, bool tty, FILE* out = stderr);

// One bar: "[#########-----------]  45%  1.20 GiB / 2.67 GiB" with `width` cells.
std::string progress_bar(uint64_t done, uint64_t total, int width = 30);

}  // namespace moe::cli
