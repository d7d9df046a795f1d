// Resident weights: every tensor that is not a routed expert (embeddings, attention, norms, routers, shared experts,
// output head), read once at start-up from a GGUF or safetensors checkpoint into backend memory (device memory for
// CUDA, RAM for the CPU) and kept there in the type the file stores them in: the backend's matrix products read
// quantized and half-precision matrices as they are, so a Q8_0 file takes a quarter of the memory F32 would.
// Vectors (norms, biases) are widened to F32: they are tiny, and the element-wise kernels take F32. A matrix whose
// type the backend has no kernel for is widened to F32 too. Names differ per format (blk.N.attn_q vs
// model.layers.N.self_attn.q_proj); after loading, the forward pass sees one shape. Routed experts are NOT here:
// they are only ever reached through the expert cache.
//
// What each tensor takes is decided before anything is read (plan_resident_weights), from the tensor table and
// the backend's kernels, and the loader places exactly that plan: the capacity planner (`moe inspect`, `moe run`'s
// budget) and the loaded model report the same bytes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/model_desc.h"
#include "runtime/model_file.h"
#include "runtime/tensor_types.h"

namespace moe {

class backend;

// A matrix in backend memory: n_rows rows of n_cols elements of `type` (ggml ne0 = n_cols, ne1 = n_rows).
struct weight_matrix {
    tensor_type type = tensor_type::F32;
    const void* data = nullptr;
    int64_t n_cols = 0, n_rows = 0;
    explicit operator bool() const { return data != nullptr; }
};

// One decoder layer's resident tensors; pointers are null and matrices empty where the architecture has none.
struct layer_tensors {
    const float* attn_norm = nullptr;  // (n_embd)
    weight_matrix wq;                  // (n_head * hd_k, n_embd) rows as the file stores them (GGUF llama: permuted)
    weight_matrix wk;                  // (n_head_kv * hd_k, n_embd)
    weight_matrix wv;                  // (n_head_kv * hd_v, n_embd)
    weight_matrix wo;                  // (n_embd, n_head * hd_v)
    // RMSNorm weights of q and k: per head (hd_k elements, qwen3moe) or over the whole projection (olmoe)
    const float *q_norm = nullptr, *k_norm = nullptr;
    int64_t q_norm_n = 0;  // elements of q_norm: hd_k (per head) or n_head * hd_k (whole projection)
    const float *bq = nullptr, *bk = nullptr, *bv = nullptr;  // q/k/v biases (qwen2moe)
    const float* ffn_norm = nullptr;                          // (n_embd)
    // Shared expert (qwen2moe): always applied, scaled by sigmoid(sh_gate_inp . x).
    weight_matrix sh_gate_inp;  // (1, n_embd)
    weight_matrix sh_gate;      // (n_ff_shexp, n_embd)
    weight_matrix sh_up;        // (n_ff_shexp, n_embd)
    weight_matrix sh_down;      // (n_embd, n_ff_shexp)
    weight_matrix router;       // (n_experts, n_embd)
    int moe_layer = -1;         // index over MoE layers (the expert cache's layer), -1 when dense
};

// One resident tensor as it will be placed.
struct resident_tensor {
    const tensor_desc* src = nullptr;       // in the model file's tensor table
    std::string role;                       // "query projection", ... (messages)
    int layer = -1;                         // decoder layer, -1 for the model-wide tensors
    int64_t ne0 = 0, ne1 = 0;               // ggml shape; ne1 == 0 for a vector
    tensor_type placed = tensor_type::F32;  // the type in backend memory
    uint64_t placed_bytes = 0;              // its bytes there (before alignment)
};

// Backend memory is handed out in blocks of this alignment (what backend::alloc guarantees).
constexpr uint64_t k_resident_align = 256;

struct resident_plan {
    std::vector<resident_tensor> tensors;
    bool tied_output = false;  // no output tensor: the head reuses the token embedding (no second copy)
    uint64_t bytes = 0;        // backend memory for all of them, each tensor aligned to k_resident_align
};

// Which matrix types the placing backend's products take (backend::supports).
using type_support = std::function<bool(tensor_type)>;

// Finds every resident tensor the forward pass uses and checks its shape and type. Throws moe::error when the
// architecture cannot run yet, a tensor is missing, has the wrong shape (naming the tensor, expected and found) or
// a type that cannot be decoded.
resident_plan plan_resident_weights(const model_file& file, const model_desc& desc, const type_support& supports);

// Progress of loading: bytes of resident tensors read so far, of `total_bytes`; called after each tensor and once
// more with done == total at the end.
using load_progress_fn = std::function<void(uint64_t done_bytes, uint64_t total_bytes)>;

class resident_weights {
public:
    // Reads the plan's tensors from the file into one block of backend memory. `be` must outlive this object.
    // Throws moe::error for everything plan_resident_weights refuses and when a tensor's bytes cannot be read.
    resident_weights(const model_file& file, const model_desc& desc, backend& be,
                     const load_progress_fn& progress = {});
    ~resident_weights();
    resident_weights(const resident_weights&) = delete;
    resident_weights& operator=(const resident_weights&) = delete;

    weight_matrix tok_embd;              // (n_vocab, n_embd)
    const float* output_norm = nullptr;  // (n_embd)
    weight_matrix output;                // (n_vocab, n_embd); the token embedding itself when the model ties them
    std::vector<layer_tensors> layers;   // (n_layers)
    float rope_freq_base = 10000.0f;     // resolved (transformers 5 keeps it under rope_parameters)

    // Backend memory held (== the plan's bytes).
    uint64_t bytes() const { return _bytes; }
    const resident_plan& plan() const { return _plan; }

private:
    backend& _be;
    resident_plan _plan;
    void* _block = nullptr;  // backend memory of every tensor
    uint64_t _bytes = 0;
};

// Whether the forward pass implements this architecture (llama/Mixtral, qwen3moe, olmoe, qwen2moe for now).
bool forward_supported(arch a);
// Throws moe::error naming the model and the supported architectures when the forward pass cannot run it.
void check_forward_supported(const model_desc& desc, const std::string& source);

}  // namespace moe
