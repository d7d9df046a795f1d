// Random-weight GGUF models with the exact shapes, metadata and tensor types of real MoE checkpoints, so that
// real-size benchmarks (expert streaming, cache hit rates, tokens/s) need no download (docs/model-gen.md).
// The weights are random but numerically sane: quantized blocks decode to values of magnitude ~0.02, like
// trained weights, norms are ~1.0 and routers ~N(0, 0.02), so a forward pass gives finite logits. The files
// carry no tokenizer: run them with token ids (moe run --prompt-ids).
//
// The bytes are a pure function of (seed, tensor, position): any range of any tensor can be produced on its own,
// so the threads filling a file never share state and the same seed gives the same file with any thread count.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/gguf_writer.h"
#include "runtime/tensor_types.h"

namespace moe {

// What one tensor holds; decides the value distribution.
enum class gen_fill {
    WEIGHT,  // a matrix: values ~0.02 in magnitude, centred on 0
    NORM,    // an RMSNorm scale: ~1.0
    ROUTER,  // an expert router: ~N(0, 0.02)
};

// The hyper-parameters and tensor types of one model shape.
struct gen_shape {
    std::string name;  // "qwen3-30b-a3b"
    std::string arch;  // GGUF general.architecture: "qwen3moe" or "llama"
    int n_layers = 0;
    int n_embd = 0;
    int n_ff = 0;      // <arch>.feed_forward_length (llama: the expert width; qwen3moe: the dense width)
    int n_ff_exp = 0;  // routed expert width
    int n_experts = 0;
    int n_experts_used = 0;
    int n_head = 0;
    int n_head_kv = 0;
    int head_dim = 0;
    int n_vocab = 0;
    int n_ctx = 0;
    float rope_theta = 10000.0f;
    float rms_eps = 1e-5f;
    bool qk_norm = false;                          // per-head q/k RMSNorm (qwen3moe)
    tensor_type gate_up_type = tensor_type::Q4_K;  // ffn_gate_exps, ffn_up_exps
    tensor_type down_type = tensor_type::Q4_K;     // ffn_down_exps
    tensor_type attn_type = tensor_type::Q4_K;     // attn_q, attn_k, attn_output
    tensor_type attn_v_type = tensor_type::Q4_K;
    tensor_type embd_type = tensor_type::Q4_K;    // token_embd
    tensor_type output_type = tensor_type::Q6_K;  // output
};

// The built-in shapes: qwen3-30b-a3b, mixtral-8x7b, qwen3-moe-small.
const std::vector<gen_shape>& gen_shapes();
std::optional<gen_shape> find_gen_shape(std::string_view name);

// Tensor types the generator can fill ("q4_k", "Q4_K", "mxfp4", "f16", ...), case-insensitive.
std::optional<tensor_type> parse_gen_type(std::string_view name);
std::string gen_type_names();  // "q4_0, q8_0, q4_k, q6_k, mxfp4, f16, bf16, f32"

struct gen_options {
    std::string shape;
    uint64_t seed = 1;
    int layers = 0;                           // 0: the shape's
    int vocab = 0;                            // 0: the shape's
    std::optional<tensor_type> experts_type;  // all three expert matrices; default: the shape's
};

// A model ready to be written: the GGUF header and, per tensor, what it holds.
struct gen_plan {
    gen_shape shape;  // with the overrides applied
    uint64_t seed = 1;
    gguf_builder gguf;
    std::vector<gen_fill> fills;  // one per gguf.tensors() entry
    uint64_t expert_bytes = 0;    // bytes of all routed expert tensors
};

// Applies the overrides and lays out the file; throws moe::usage_error for an unknown shape or type, an
// override out of range, or an expert type whose block does not divide the rows.
gen_plan plan_model(const gen_options& options);

// Bytes [begin, end) of tensor `index`'s data (thread-safe).
void gen_fill_tensor(const gen_plan& plan, size_t index, uint64_t begin, uint64_t end, uint8_t* dst);

// Writes the planned file to `path` with write_gguf_file (same refusals: existing file, too little space).
gguf_write_result generate_model(const gen_plan& plan, const std::string& path, const gguf_write_options& options);

}  // namespace moe
