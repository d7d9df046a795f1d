// Synthetic routing traces with the structure measured on real MoE models, each property a knob:
// skewed per-layer popularity (Zipf over a per-layer random permutation of expert ids), temporal reuse
// (a layer keeps experts it used for the previous token), correlation between consecutive layers (a fixed
// random map from layer l's choice to a preferred expert at l+1), and per-sequence drift (each new sequence
// reshuffles part of every layer's popularity order, as a new prompt/domain does). Weights are router-like:
// a softmax of sorted random logits over the selected experts. Deterministic for a seed.
#pragma once

#include <cstdint>
#include <string>

#include "cache/trace.h"

namespace moe {

struct synth_params {
    uint32_t n_layers = 32;
    uint32_t n_experts = 8;
    uint32_t top_k = 2;
    uint64_t n_tokens = 1000;  // total tokens over all sequences
    uint32_t n_seqs = 1;       // tokens are split evenly over this many sequences
    uint64_t seed = 1;
    double skew = 1.0;        // Zipf exponent of per-layer popularity (0 = uniform)
    double reuse = 0.3;       // probability that a slot keeps the expert this layer used for the previous token
    double layer_corr = 0.3;  // probability that a slot follows the mapped choice of the previous layer
    double drift = 0.0;       // fraction of each layer's popularity order reshuffled at each new sequence
};

// Documented limits of the generator (README "Limits"), besides the trace reader's limits on the shape
// (cache/trace.h): the whole trace is built in memory, about 100 bytes per row plus 8 per access.
inline constexpr uint64_t k_synth_max_rows = uint64_t(1) << 21;      // n_tokens * n_layers
inline constexpr uint64_t k_synth_max_accesses = uint64_t(1) << 24;  // n_tokens * n_layers * top_k

// Throws moe::error for impossible shapes (top_k > n_experts, zeros, probabilities outside [0,1]) and sizes
// beyond the limits above, before anything is allocated.
void check_synth_params(const synth_params& p);
// check_synth_params, then the trace.
routing_trace generate_trace(const synth_params& p);
// "synthetic-zipf-s1-r0.3-c0.3" style name recording the knobs (no spaces, fits the trace header).
std::string synth_model_name(const synth_params& p);

}  // namespace moe
