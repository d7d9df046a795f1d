// GET /metrics of `moe serve`: the scheduler's and the expert cache's figures in the Prometheus text exposition
// format (version 0.0.4): counters end in _total, ratios are gauges in [0, 1], seconds and bytes in base units.
// docs/serve.md lists every series.
#pragma once

#include <string>

#include "runtime/model.h"
#include "runtime/offloader.h"
#include "runtime/serve/scheduler.h"

namespace moe::serve {

std::string prometheus_metrics(const scheduler_metrics& s, const offloader& off);

}  // namespace moe::serve
