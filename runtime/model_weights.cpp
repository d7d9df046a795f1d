// Loading the resident weights (see model_weights.h). Each tensor is read with pread from its file and
// decoded with dequantize_row, so every type the dequantizer knows (F32, F16, BF16, the ggml block types) works.
#include "runtime/model_weights.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "common/error.h"
#include "runtime/dequant.h"

namespace moe {

bool forward_supported(arch a) {
    return a == arch::LLAMA || a == arch::QWEN3MOE || a == arch::OLMOE || a == arch::QWEN2MOE;
}

void check_forward_supported(const model_desc& desc, const std::string& source) {
    if (!forward_supported(desc.architecture))
        fail(
            "{}: the forward pass supports llama (Mixtral), qwen3moe, olmoe and qwen2moe; found architecture '{}' "
            "(such a model "
            "can "
            "be inspected and simulated, not run yet)",
            source, arch_name(desc.architecture));
    if (desc.rope_scale.type != rope_scaling_type::NONE)
        fail(
            "{}: RoPE scaling '{}' (factor {}) is not implemented in the forward pass yet; it changes the rotation "
            "at every position, so the model cannot be run without it (it can be inspected and simulated)",
            source, desc.rope_scale.name, desc.rope_scale.factor);
}

uint64_t model_weights::bytes() const {
    uint64_t n = tok_embd.size() + output_norm.size() + output.size();
    for (const auto& l : layers)
        n += l.attn_norm.size() + l.wq.size() + l.wk.size() + l.wv.size() + l.wo.size() + l.q_norm.size() +
             l.k_norm.size() + l.ffn_norm.size() + l.router.size();
    return n * sizeof(float);
}

namespace {

class weight_reader {
public:
    weight_reader(const model_file& f, const std::string& src, const load_progress_fn& progress = {},
                  uint64_t total_bytes = 0)
        : _f(f), _src(src), _progress(progress), _total(total_bytes) {}
    ~weight_reader() {
        for (int fd : _fds)
            if (fd >= 0) ::close(fd);
    }
    weight_reader(const weight_reader&) = delete;
    weight_reader& operator=(const weight_reader&) = delete;

    const tensor_desc* find(const std::string& name) const { return _f.find(name); }

    // Reads `name` as F32 and checks its ggml shape {ne0, ne1} (ne1 == 0: a 1-D tensor of ne0).
    std::vector<float> load(const std::string& name, int64_t ne0, int64_t ne1, const char* what) {
        const tensor_desc* t = _f.find(name);
        if (!t) fail("{}: missing tensor '{}' ({})", _src, name, what);
        return load(*t, ne0, ne1, what);
    }
    std::vector<float> load(const tensor_desc& t, int64_t ne0, int64_t ne1, const char* what) {
        const bool ok =
            ne1 == 0 ? (t.n_dims == 1 && t.ne[0] == ne0) : (t.n_dims == 2 && t.ne[0] == ne0 && t.ne[1] == ne1);
        if (!ok) {
            std::string found = "{";
            for (int i = 0; i < t.n_dims; ++i) found += (i ? ", " : "") + std::to_string(t.ne[i]);
            fail("{}: tensor '{}' ({}): expected ggml shape {}, found {}}}", _src, t.name, what,
                 ne1 == 0 ? fmt::format("{{{}}}", ne0) : fmt::format("{{{}, {}}}", ne0, ne1), found);
        }
        if (!dequant_supported(t.type))
            fail("{}: tensor '{}' ({}): type {} cannot be decoded (expected F32, F16, BF16 or a ggml block type)", _src,
                 t.name, what, type_name(t.type));
        const int64_t n = ne0 * (ne1 == 0 ? 1 : ne1);
        auto want = tensor_nbytes(t.type, t.ne, t.n_dims);
        MOE_CHECK(want && *want == t.bytes);  // the file readers validated this
        std::vector<uint8_t> raw(t.bytes);
        read_at(t.file, t.offset, raw.data(), t.bytes, t.name);
        _done += t.bytes;
        if (_progress) _progress(std::min(_done, _total), _total);
        std::vector<float> out(static_cast<size_t>(n));
        dequantize_row(t.type, raw.data(), out.data(), n);
        return out;
    }

private:
    void read_at(int file, uint64_t offset, uint8_t* dst, uint64_t bytes, const std::string& tensor) {
        MOE_CHECK(file >= 0 && size_t(file) < _f.paths.size());
        if (_fds.size() < _f.paths.size()) _fds.resize(_f.paths.size(), -1);
        int& fd = _fds[size_t(file)];
        const std::string& path = _f.paths[size_t(file)];
        if (fd < 0) {
            fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd < 0) fail("{}: cannot open for reading: {}", path, std::strerror(errno));
        }
        uint64_t done = 0;
        while (done < bytes) {
            ssize_t r = ::pread(fd, dst + done, bytes - done, off_t(offset + done));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0)
                fail("{}: reading tensor '{}' ({} bytes at offset {}) failed at offset {}: {}", path, tensor, bytes,
                     offset, offset + done, r < 0 ? std::strerror(errno) : "unexpected end of file");
            done += uint64_t(r);
        }
    }

    const model_file& _f;
    std::string _src;
    std::vector<int> _fds;
    load_progress_fn _progress;
    uint64_t _total = 0, _done = 0;
};

}  // namespace

model_weights load_model_weights(const model_file& file, const model_desc& d, const load_progress_fn& progress) {
    const std::string src = file.paths.empty() ? std::string("<model>") : file.paths[0];
    check_forward_supported(d, src);
    const bool gguf = file.format == model_format::GGUF;
    const bool qwen3 = d.architecture == arch::QWEN3MOE, olmoe = d.architecture == arch::OLMOE;
    const int64_t E = d.n_embd, V = d.n_vocab;
    if (V <= 0) fail("{}: vocabulary size unknown (no vocab_size and no token embedding shape)", src);
    weight_reader r(file, src, progress, d.resident_bytes);
    model_weights w;
    w.rope_freq_base = float(d.rope_freq_base);  // describe_model reads transformers 4 and 5 spellings

    w.tok_embd = r.load(gguf ? "token_embd.weight" : "model.embed_tokens.weight", E, V, "token embedding");
    w.output_norm = r.load(gguf ? "output_norm.weight" : "model.norm.weight", E, 0, "output norm");
    const char* out_name = gguf ? "output.weight" : "lm_head.weight";
    if (r.find(out_name))
        w.output = r.load(out_name, E, V, "output projection");
    else
        w.output = w.tok_embd;  // tied embeddings (llama.cpp falls back to token_embd the same way)

    const int64_t qd = int64_t(d.n_head) * d.head_dim_k, kd = int64_t(d.n_head_kv) * d.head_dim_k,
                  vd = int64_t(d.n_head_kv) * d.head_dim_v, od = int64_t(d.n_head) * d.head_dim_v;
    w.layers.resize(size_t(d.n_layers));
    for (int il = 0; il < d.n_layers; ++il) {
        layer_weights& L = w.layers[size_t(il)];
        const std::string b = gguf ? fmt::format("blk.{}.", il) : fmt::format("model.layers.{}.", il);
        auto nm = [&](const char* g, const char* h) { return b + (gguf ? g : h); };
        L.attn_norm = r.load(nm("attn_norm.weight", "input_layernorm.weight"), E, 0, "attention norm");
        L.wq = r.load(nm("attn_q.weight", "self_attn.q_proj.weight"), E, qd, "query projection");
        L.wk = r.load(nm("attn_k.weight", "self_attn.k_proj.weight"), E, kd, "key projection");
        L.wv = r.load(nm("attn_v.weight", "self_attn.v_proj.weight"), E, vd, "value projection");
        L.wo = r.load(nm("attn_output.weight", "self_attn.o_proj.weight"), od, E, "attention output");
        if (qwen3 || olmoe) {  // qwen3moe: per head {hd}; olmoe: over the whole projection (model-formats.md §3.3)
            L.q_norm =
                r.load(nm("attn_q_norm.weight", "self_attn.q_norm.weight"), qwen3 ? d.head_dim_k : qd, 0, "query norm");
            L.k_norm =
                r.load(nm("attn_k_norm.weight", "self_attn.k_norm.weight"), qwen3 ? d.head_dim_k : kd, 0, "key norm");
        }
        L.ffn_norm = r.load(nm("ffn_norm.weight", "post_attention_layernorm.weight"), E, 0, "FFN norm");
        // Optional q/k/v biases (qwen2moe has them; a file either has all three or none).
        if (r.find(nm("attn_q.bias", "self_attn.q_proj.bias"))) {
            L.bq = r.load(nm("attn_q.bias", "self_attn.q_proj.bias"), qd, 0, "query bias");
            L.bk = r.load(nm("attn_k.bias", "self_attn.k_proj.bias"), kd, 0, "key bias");
            L.bv = r.load(nm("attn_v.bias", "self_attn.v_proj.bias"), vd, 0, "value bias");
        }
        if (d.architecture == arch::QWEN2MOE && d.n_ff_shexp > 0) {
            const int64_t fs = d.n_ff_shexp;
            L.sh_gate =
                r.load(nm("ffn_gate_shexp.weight", "mlp.shared_expert.gate_proj.weight"), E, fs, "shared expert gate");
            L.sh_up = r.load(nm("ffn_up_shexp.weight", "mlp.shared_expert.up_proj.weight"), E, fs, "shared expert up");
            L.sh_down =
                r.load(nm("ffn_down_shexp.weight", "mlp.shared_expert.down_proj.weight"), fs, E, "shared expert down");
            // The scalar gate: {n_embd} in GGUF (llama.cpp), PyTorch [1, hidden] = ggml {n_embd, 1} in safetensors.
            const std::string gn = nm("ffn_gate_inp_shexp.weight", "mlp.shared_expert_gate.weight");
            const tensor_desc* g = r.find(gn);
            if (!g) fail("{}: missing tensor '{}' (shared expert gate)", src, gn);
            L.sh_gate_inp = r.load(*g, E, g->n_dims == 2 ? 1 : 0, "shared expert gate");
        }
    }
    for (int ml = 0; ml < d.layout.n_moe_layers; ++ml) {
        const int il = d.layout.moe_layers[size_t(ml)];
        layer_weights& L = w.layers[size_t(il)];
        L.moe_layer = ml;
        std::string name;
        if (gguf)
            name = fmt::format("blk.{}.ffn_gate_inp.weight", il);
        else
            name = fmt::format(
                "model.layers.{}.{}gate.weight", il,
                d.architecture == arch::LLAMA && !file.find(fmt::format("model.layers.{}.mlp.gate.weight", il))
                    ? "block_sparse_moe."
                    : "mlp.");
        L.router = r.load(name, E, d.n_experts, "router");
    }
    for (int il = 0; il < d.n_layers; ++il)
        if (w.layers[size_t(il)].moe_layer < 0)
            fail("{}: layer {} is a dense FFN layer: the forward pass needs every {} layer to be MoE", src, il,
                 arch_name(d.architecture));
    if (progress) progress(d.resident_bytes, d.resident_bytes);
    return w;
}

}  // namespace moe
