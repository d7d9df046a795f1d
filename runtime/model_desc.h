// The model description: architecture and hyper-parameters (from GGUF metadata or config.json, checked
// against tensor shapes) and the expert layout: for every (MoE layer, expert) the byte ranges of its weights
// in the model files. The layout is what the expert cache and the streamer consume.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/model_file.h"

namespace moe {

enum class arch { LLAMA, QWEN2MOE, QWEN3MOE, OLMOE, DEEPSEEK2, GPT_OSS };
enum class rope_style { NORM, NEOX };  // NORM: adjacent pairs; NEOX: halves (docs/model-formats.md §3.3)
enum class gating_func { SOFTMAX, SIGMOID, SOFTMAX_WEIGHT };  // SOFTMAX_WEIGHT: softmax over the selected (gpt-oss)
enum class rope_scaling_type { NONE, LINEAR, YARN, OTHER };   // OTHER: recognised as present, not implemented

// RoPE frequency scaling for contexts longer than the model was trained on (docs/model-formats.md §3.3). NONE for
// the shipped Mixtral, Qwen and OLMoE checkpoints; YaRN for gpt-oss and DeepSeek-V2. It changes the rotation at
// every position (not only past orig_ctx), so a reader that ignored it would compute a different model.
struct rope_scaling {
    rope_scaling_type type = rope_scaling_type::NONE;
    double factor = 1.0;      // context extension factor; the interpolated frequency is theta / factor
    int orig_ctx = 0;         // YaRN: the original training context (GGUF original_context_length)
    double beta_fast = 32.0;  // YaRN ramp bounds, in rotations over orig_ctx
    double beta_slow = 1.0;
    // DeepSeek-V2: mscale_all_dim (HF), stored in GGUF as yarn_log_multiplier = 0.1 * mscale_all_dim. 0: unused.
    double mscale_all_dim = 0.0;
    std::string name = "none";  // as the file spells it ("yarn", "longrope", "llama3", ...)
};

std::string_view arch_name(arch a);  // GGUF spelling: "llama", "qwen3moe", "gpt-oss", ...

// Which part of an expert a byte range holds. *_SCALES: the separate E8M0 scale bytes of an HF gpt-oss MXFP4
// checkpoint, whose GATE_UP/DOWN ranges then hold only the 4-bit blocks (type U8).
enum class expert_part {
    GATE,
    UP,
    DOWN,
    GATE_UP,
    GATE_BIAS,
    UP_BIAS,
    DOWN_BIAS,
    GATE_UP_BIAS,
    GATE_UP_SCALES,
    DOWN_SCALES  // appended: HF gpt-oss MXFP4 scales
};
std::string_view expert_part_name(expert_part p);

struct expert_range {
    expert_part part;
    std::string tensor;  // full tensor name it is a slice of
    tensor_type type;
    int file = 0;         // index into model_file::paths
    uint64_t offset = 0;  // absolute byte offset in that file
    uint64_t bytes = 0;
};

struct expert_entry {
    int layer = 0;      // transformer block index (blk.N / model.layers.N)
    int moe_layer = 0;  // index over MoE layers only (the cache and the trace use this)
    int expert = 0;
    std::vector<expert_range> ranges;  // gate, up, down (or gate_up, down), then biases
    uint64_t bytes = 0;                // sum of ranges
};

struct expert_layout {
    int n_moe_layers = 0;
    int n_experts = 0;
    std::vector<int> moe_layers;        // block index of each MoE layer
    std::vector<expert_entry> experts;  // moe_layer-major: experts[moe_layer * n_experts + expert]
    uint64_t max_expert_bytes = 0;      // largest single expert (slot size)
    uint64_t total_bytes = 0;           // all routed experts

    const expert_entry& at(int moe_layer, int expert) const { return experts[size_t(moe_layer) * n_experts + expert]; }
};

struct model_desc {
    arch architecture = arch::LLAMA;
    std::string name;  // general.name or the config's model_type
    int n_layers = 0;  // transformer blocks
    int n_embd = 0;
    int n_vocab = 0;
    int n_head = 0;
    int n_head_kv = 0;
    int head_dim_k = 0;  // key head dim (attention.key_length or n_embd / n_head)
    int head_dim_v = 0;
    int n_ff = 0;      // dense FFN width (0 when every layer is MoE and there is no dense width)
    int n_ff_exp = 0;  // routed expert width (from tensor shapes)
    int n_experts = 0;
    int n_experts_used = 0;    // top-k
    int n_shared_experts = 0;  // DeepSeek: count; Qwen2-MoE: 1
    int n_ff_shexp = 0;        // shared expert width
    int n_leading_dense = 0;   // DeepSeek first_k_dense_replace
    rope_style rope = rope_style::NORM;
    int n_rot = 0;
    double rope_freq_base = 10000.0;
    rope_scaling rope_scale;
    double rms_eps = 1e-5;
    int n_ctx_train = 0;  // positions the model was trained for (context_length / max_position_embeddings);
                          // 0 when the file does not say
    gating_func gating = gating_func::SOFTMAX;
    bool norm_topk = false;  // renormalise the selected weights
    double weights_scale = 1.0;
    uint64_t resident_bytes = 0;  // every tensor that is not part of a routed expert
    expert_layout layout;
};

// Recognises the architecture and builds the description and layout; throws moe::error when the file is
// not a supported MoE model or its tensors contradict its metadata (naming the tensor and both values).
model_desc describe_model(const model_file& file);

}  // namespace moe
