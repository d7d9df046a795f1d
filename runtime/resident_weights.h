// The resident weights where the backend computes on them. For a backend whose memory is host memory (the CPU
// backend) the pointers are the loaded vectors' own data: no copy, no extra bytes. Otherwise (CUDA) every tensor
// is uploaded once, at start-up, into backend memory owned here; the host copy in model_weights stays (the
// forward pass reads shapes from it) and is counted by model_weights::bytes(), the device copy by
// backend_bytes().
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/backend_buffer.h"
#include "runtime/model_weights.h"

namespace moe {

// Pointers into backend memory, one per tensor of layer_weights; nullptr where the vector is empty.
struct layer_tensors {
    const float *attn_norm = nullptr, *wq = nullptr, *wk = nullptr, *wv = nullptr, *wo = nullptr;
    const float *q_norm = nullptr, *k_norm = nullptr, *bq = nullptr, *bk = nullptr, *bv = nullptr;
    const float* ffn_norm = nullptr;
    const float *sh_gate_inp = nullptr, *sh_gate = nullptr, *sh_up = nullptr, *sh_down = nullptr;
    const float* router = nullptr;
};

class resident_weights {
public:
    // `w` and `be` must outlive this object.
    resident_weights(const model_weights& w, backend& be);

    const float* tok_embd = nullptr;     // (n_vocab, n_embd)
    const float* output_norm = nullptr;  // (n_embd)
    const float* output = nullptr;       // (n_vocab, n_embd)
    std::vector<layer_tensors> layers;   // (n_layers)

    // Bytes uploaded into backend memory (0 when the backend computes on host memory).
    uint64_t backend_bytes() const { return _bytes; }

private:
    const float* place(const std::vector<float>& v);

    backend& _be;
    std::vector<backend_array<float>> _buffers;  // one per uploaded tensor
    uint64_t _bytes = 0;
};

}  // namespace moe
