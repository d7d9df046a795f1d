// Top-n selection of router logits for speculative gating (see speculative_gating.h).
#include "prefetch/speculative_gating.h"

#include <algorithm>

namespace moe {

int top_experts(std::span<const float> logits, int n, std::span<int> out) {
    n = std::clamp(n, 0, int(std::min(logits.size(), out.size())));
    // n is a handful (top_k), the expert count at most a few hundred: a selection by repeated scan allocates
    // nothing and its tie rule is obvious. An expert is taken when it beats every expert not yet taken; strict
    // '>' keeps the lower id on ties.
    for (int r = 0; r < n; ++r) {
        int best = -1;
        for (int e = 0; e < int(logits.size()); ++e) {
            bool taken = false;
            for (int q = 0; q < r && !taken; ++q) taken = out[size_t(q)] == e;
            if (taken) continue;
            if (best < 0 || logits[size_t(e)] > logits[size_t(best)]) best = e;
        }
        out[size_t(r)] = best;
    }
    return n;
}

}  // namespace moe
