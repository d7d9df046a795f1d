// Resident weights: everything that is not a routed expert (embeddings, attention, norms, routers, output),
// read once at start-up from a GGUF or a safetensors checkpoint and kept dequantized to F32 in RAM. Names differ
// per format (blk.N.attn_q vs model.layers.N.self_attn.q_proj); after loading, the forward pass sees one shape.
// Routed experts are NOT here: they are only ever reached through the expert cache.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "runtime/model_desc.h"
#include "runtime/model_file.h"

namespace moe {

struct layer_weights {
    std::vector<float> attn_norm;   // (n_embd)
    std::vector<float> wq;          // (n_head * hd_k, n_embd)   rows as the file stores them (GGUF llama: permuted)
    std::vector<float> wk;          // (n_head_kv * hd_k, n_embd)
    std::vector<float> wv;          // (n_head_kv * hd_v, n_embd)
    std::vector<float> wo;          // (n_embd, n_head * hd_v)
    std::vector<float> q_norm;      // (hd_k) per-head RMSNorm (qwen3moe), (n_head * hd_k) whole-projection (olmoe),
    std::vector<float> k_norm;      // (hd_k) / (n_head_kv * hd_k); empty when the arch has none
    std::vector<float> bq, bk, bv;  // (n_head * hd_k), (n_head_kv * hd_k), (n_head_kv * hd_v); empty without biases
    std::vector<float> ffn_norm;    // (n_embd)
    // Shared expert (qwen2moe): always applied, scaled by sigmoid(sh_gate_inp . x). Empty when the arch has none.
    std::vector<float> sh_gate_inp;  // (n_embd)
    std::vector<float> sh_gate;      // (n_ff_shexp, n_embd)
    std::vector<float> sh_up;        // (n_ff_shexp, n_embd)
    std::vector<float> sh_down;      // (n_embd, n_ff_shexp)
    std::vector<float> router;       // (n_experts, n_embd); empty for a dense layer
    int moe_layer = -1;              // index over MoE layers (the expert cache's layer), -1 when dense
};

struct model_weights {
    std::vector<float> tok_embd;     // (n_vocab, n_embd)
    std::vector<float> output_norm;  // (n_embd)
    std::vector<float> output;       // (n_vocab, n_embd); a copy of tok_embd when the model ties them
    std::vector<layer_weights> layers;
    float rope_freq_base = 10000.0f;  // resolved (HF v5 config keeps it under rope_parameters)
    uint64_t bytes() const;           // F32 bytes held
};

// Throws moe::error when the architecture has no forward pass here yet (naming it and the supported ones),
// when a tensor is missing, has the wrong shape (naming the tensor, expected and found) or a type we cannot
// decode, or when its bytes cannot be read.
// Progress of load_model_weights (a progress bar): bytes of resident tensors read so far, of `total_bytes`
// (model_desc::resident_bytes); called after each tensor and once more with done == total at the end.
using load_progress_fn = std::function<void(uint64_t done_bytes, uint64_t total_bytes)>;
model_weights load_model_weights(const model_file& file, const model_desc& desc, const load_progress_fn& progress = {});

// Whether the forward pass implements this architecture (llama/Mixtral, qwen3moe, olmoe, qwen2moe for now).
bool forward_supported(arch a);
// Throws moe::error naming the model and the supported architectures when !forward_supported(desc.architecture).
void check_forward_supported(const model_desc& desc, const std::string& source);

}  // namespace moe
