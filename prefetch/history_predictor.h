// The history predictor: learns, online and from routing decisions alone, which experts follow which, and
// predicts a layer's experts from that. It needs no hidden state, so an engine that only reports its router's
// choices (the C API's moe_route) can use it as well as the forward pass.
//
// Two kinds of co-activation are counted, both from rows (token, MoE layer, selected experts):
//  - across layers, same token:  C_layer[l][i][j] = times expert j was selected at layer l for a token that
//    selected i at layer l-1;  N_layer[l][i] = times i was selected at layer l-1 by a token whose row at l was seen;
//  - across tokens, same layer:  C_token[l][i][j] = times j was selected at layer l by token t+1 when token t
//    selected i there;  N_token[l][i] = times i was selected at l by a token whose successor's row at l was seen.
// The score of expert j at layer l for a token, given the experts `above` it chose at l-1 and the experts
// `before` the previous token chose at l, is
//     mean over i in above of C_layer[l][i][j] / N_layer[l][i]  +  mean over i in before of C_token[l][i][j] /
//     N_token[l][i]
// (each term an estimate of P(j | i); an unseen i contributes 0). The prediction is the n best experts with a
// positive score, ties to the lower id, so it is deterministic.
//
// Rows of one token arrive in layer order and rows of one layer in position order; a batch may send all its
// tokens' rows of layer l before those of layer l+1 (the forward pass does). A window of recent rows per layer
// (at least the largest batch) pairs each row with the same token's row one layer up and the previous token's
// row at the same layer. A position at layer 0 that is not after the last one seen there starts a new sequence
// (the rows of the old one are forgotten; the counts are kept).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace moe {

struct history_config {
    uint32_t n_layers = 0;  // MoE layers
    uint32_t n_experts = 0;
    uint32_t top_k = 0;    // experts per row (rows with fewer are fine; more are cut to top_k)
    uint32_t window = 32;  // rows remembered per layer: at least the most tokens one batch routes
};

class history_predictor {
public:
    // Allocates every table here (n_layers x n_experts^2 counters of each kind). Throws moe::error on a zero size.
    explicit history_predictor(const history_config& cfg);

    // The token at position `pos` selected `ids` at MoE `layer`.
    void observe(uint32_t pos, uint32_t layer, std::span<const int> ids);
    // The experts token `pos` selected at `layer`, if that row is still in the window (else empty).
    std::span<const int> row(uint32_t pos, uint32_t layer) const;

    // score[j] for every expert of `layer` (see the top of this file); `above` must be empty at layer 0.
    void score(uint32_t layer, std::span<const int> above, std::span<const int> before, std::span<float> out) const;
    // Up to n experts with the highest positive score, best first, ties to the lower id; returns how many.
    // `scratch` holds n_experts floats.
    int predict(uint32_t layer, std::span<const int> above, std::span<const int> before, int n, std::span<int> out,
                std::span<float> scratch) const;

    // Counters, for tests and reports.
    uint32_t layer_count(uint32_t layer, uint32_t from, uint32_t to) const;  // C_layer[layer][from][to]
    uint32_t layer_seen(uint32_t layer, uint32_t from) const;                // N_layer[layer][from]
    uint32_t token_count(uint32_t layer, uint32_t from, uint32_t to) const;  // C_token[layer][from][to]
    uint32_t token_seen(uint32_t layer, uint32_t from) const;                // N_token[layer][from]
    const history_config& config() const { return _cfg; }

private:
    static constexpr uint32_t k_no_pos = ~0u;
    size_t slot(uint32_t pos, uint32_t layer) const { return size_t(layer) * _cfg.window + pos % _cfg.window; }
    void count(std::vector<uint32_t>& c, std::vector<uint32_t>& n, uint32_t layer, std::span<const int> from,
               std::span<const int> to);

    history_config _cfg;
    std::vector<uint32_t> _c_layer,
        _n_layer;  // (n_layers, n_experts, n_experts), (n_layers, n_experts); layer 0 unused
    std::vector<uint32_t> _c_token, _n_token;  // (n_layers, n_experts, n_experts), (n_layers, n_experts)
    std::vector<int> _rows;                    // (n_layers, window, top_k) recent rows
    std::vector<uint32_t> _row_pos;            // (n_layers, window) position of each row, k_no_pos when empty
    std::vector<uint8_t> _row_len;             // (n_layers, window) experts in each row
    uint32_t _last_pos0 = k_no_pos;            // last position seen at layer 0
};

}  // namespace moe
