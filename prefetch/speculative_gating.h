// Speculative gating: a later layer's router applied to the current hidden state. The residual stream changes
// little from one layer to the next, so router l+d on layer l's FFN input ranks layer l+d's experts much as
// router l+d will on its own input. The forward pass computes those logits with the backend (the same matvec as
// the real router); this file only turns logits into a ranked guess, with no knowledge of the model.
#pragma once

#include <span>

namespace moe {

// Writes the ids of the n highest logits, best first, ties to the lower id (the order backend::route uses), to
// out[0..n) and returns n (n is clamped to [0, logits.size()] and out.size()). Ranking by logit equals ranking
// by router probability for softmax and sigmoid gating: both are monotonic in the logit.
int top_experts(std::span<const float> logits, int n, std::span<int> out);

}  // namespace moe
