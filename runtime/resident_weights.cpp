// The resident weights (see resident_weights.h): which tensors, in which type, and reading them into backend memory.
#include "runtime/resident_weights.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "common/error.h"
#include "runtime/backend.h"
#include "runtime/dequant.h"

namespace moe {

bool forward_supported(arch a) {
    return a == arch::LLAMA || a == arch::QWEN3MOE || a == arch::OLMOE || a == arch::QWEN2MOE;
}

void check_forward_supported(const model_desc& desc, const std::string& source) {
    if (!forward_supported(desc.architecture))
        fail(
            "{}: the forward pass supports llama (Mixtral), qwen3moe, olmoe and qwen2moe; found architecture '{}' "
            "(such a model can be inspected and simulated, not run yet)",
            source, arch_name(desc.architecture));
    if (desc.rope_scale.type != rope_scaling_type::NONE)
        fail(
            "{}: RoPE scaling '{}' (factor {}) is not implemented in the forward pass yet; it changes the rotation "
            "at every position, so the model cannot be run without it (it can be inspected and simulated)",
            source, desc.rope_scale.name, desc.rope_scale.factor);
}

namespace {

uint64_t align_up(uint64_t n) {
    return (n + k_resident_align - 1) / k_resident_align * k_resident_align;
}

// Collects the resident tensors in a fixed order, checking each one's shape and type.
class tensor_list {
public:
    tensor_list(const model_file& f, const std::string& src, const type_support& supports)
        : _f(f), _src(src), _supports(supports) {}

    const tensor_desc* find(const std::string& name) const { return _f.find(name); }

    // Adds `name` with ggml shape {ne0, ne1} (ne1 == 0: a vector of ne0); returns its index in the list.
    size_t add(const std::string& name, int64_t ne0, int64_t ne1, const char* role, int layer) {
        const tensor_desc* t = _f.find(name);
        if (!t) fail("{}: missing tensor '{}' ({})", _src, name, role);
        return add(*t, ne0, ne1, role, layer);
    }
    size_t add(const tensor_desc& t, int64_t ne0, int64_t ne1, const char* role, int layer) {
        // A vector may be stored as {n, 1} (safetensors [1, n]); a matrix is always 2-D.
        const bool as_vector = ne1 == 0;
        const bool ok = as_vector
                            ? (t.n_dims == 1 && t.ne[0] == ne0) || (t.n_dims == 2 && t.ne[0] == ne0 && t.ne[1] == 1)
                            : (t.n_dims == 2 && t.ne[0] == ne0 && t.ne[1] == ne1);
        if (!ok) {
            std::string found = "{";
            for (int i = 0; i < t.n_dims; ++i) found += (i ? ", " : "") + std::to_string(t.ne[i]);
            fail("{}: tensor '{}' ({}): expected ggml shape {}, found {}}}", _src, t.name, role,
                 as_vector ? fmt::format("{{{}}}", ne0) : fmt::format("{{{}, {}}}", ne0, ne1), found);
        }
        if (!dequant_supported(t.type))
            fail("{}: tensor '{}' ({}): type {} cannot be decoded (expected F32, F16, BF16 or a ggml block type)", _src,
                 t.name, role, type_name(t.type));
        resident_tensor r;
        r.src = &t;
        r.role = role;
        r.layer = layer;
        r.ne0 = ne0;
        r.ne1 = ne1;
        const int64_t rows = as_vector ? 1 : ne1;
        // Matrices stay as stored where the backend multiplies that type (rows must be whole blocks); the rest is
        // widened to F32.
        const bool keep = !as_vector && t.type != tensor_type::F32 && _supports && _supports(t.type) &&
                          ne0 % type_info(t.type).block_elems == 0;
        r.placed = keep ? t.type : tensor_type::F32;
        r.placed_bytes = keep ? t.bytes : uint64_t(ne0) * uint64_t(rows) * sizeof(float);
        _plan.tensors.push_back(std::move(r));
        return _plan.tensors.size() - 1;
    }

    resident_plan take() {
        _plan.bytes = 0;
        for (const resident_tensor& t : _plan.tensors) _plan.bytes += align_up(t.placed_bytes);
        return std::move(_plan);
    }
    resident_plan& plan() { return _plan; }

private:
    const model_file& _f;
    std::string _src;
    type_support _supports;
    resident_plan _plan;
};

// The names of the two formats for one tensor of layer il.
struct layer_names {
    bool gguf;
    std::string prefix;
    std::string operator()(const char* gguf_name, const char* hf_name) const {
        return prefix + (gguf ? gguf_name : hf_name);
    }
};

// Index of each tensor in the plan, per role, so the loader can hand out pointers. -1 where absent.
struct layer_slots {
    long attn_norm = -1, wq = -1, wk = -1, wv = -1, wo = -1, q_norm = -1, k_norm = -1, bq = -1, bk = -1, bv = -1;
    long ffn_norm = -1, sh_gate_inp = -1, sh_gate = -1, sh_up = -1, sh_down = -1, router = -1;
    int moe_layer = -1;
};
struct model_slots {
    long tok_embd = -1, output_norm = -1, output = -1;
    std::vector<layer_slots> layers;
};

resident_plan build_plan(const model_file& file, const model_desc& d, const type_support& supports,
                         model_slots* slots_out) {
    const std::string src = file.paths.empty() ? std::string("<model>") : file.paths[0];
    check_forward_supported(d, src);
    const bool gguf = file.format == model_format::GGUF;
    const bool qwen3 = d.architecture == arch::QWEN3MOE, olmoe = d.architecture == arch::OLMOE;
    const int64_t E = d.n_embd, V = d.n_vocab;
    if (V <= 0) fail("{}: vocabulary size unknown (no vocab_size and no token embedding shape)", src);
    tensor_list r(file, src, supports);
    model_slots s;

    s.tok_embd = long(r.add(gguf ? "token_embd.weight" : "model.embed_tokens.weight", E, V, "token embedding", -1));
    s.output_norm = long(r.add(gguf ? "output_norm.weight" : "model.norm.weight", E, 0, "output norm", -1));
    const char* out_name = gguf ? "output.weight" : "lm_head.weight";
    if (r.find(out_name))
        s.output = long(r.add(out_name, E, V, "output projection", -1));
    else
        r.plan().tied_output = true;  // tied embeddings (llama.cpp falls back to token_embd the same way)

    const int64_t qd = int64_t(d.n_head) * d.head_dim_k, kd = int64_t(d.n_head_kv) * d.head_dim_k,
                  vd = int64_t(d.n_head_kv) * d.head_dim_v, od = int64_t(d.n_head) * d.head_dim_v;
    s.layers.resize(size_t(d.n_layers));
    for (int il = 0; il < d.n_layers; ++il) {
        layer_slots& L = s.layers[size_t(il)];
        const layer_names nm{gguf, gguf ? fmt::format("blk.{}.", il) : fmt::format("model.layers.{}.", il)};
        L.attn_norm = long(r.add(nm("attn_norm.weight", "input_layernorm.weight"), E, 0, "attention norm", il));
        L.wq = long(r.add(nm("attn_q.weight", "self_attn.q_proj.weight"), E, qd, "query projection", il));
        L.wk = long(r.add(nm("attn_k.weight", "self_attn.k_proj.weight"), E, kd, "key projection", il));
        L.wv = long(r.add(nm("attn_v.weight", "self_attn.v_proj.weight"), E, vd, "value projection", il));
        L.wo = long(r.add(nm("attn_output.weight", "self_attn.o_proj.weight"), od, E, "attention output", il));
        if (qwen3 || olmoe) {  // qwen3moe: RMSNorm per head ({hd}); olmoe: over the whole q / k projection
            L.q_norm = long(r.add(nm("attn_q_norm.weight", "self_attn.q_norm.weight"), qwen3 ? d.head_dim_k : qd, 0,
                                  "query norm", il));
            L.k_norm = long(r.add(nm("attn_k_norm.weight", "self_attn.k_norm.weight"), qwen3 ? d.head_dim_k : kd, 0,
                                  "key norm", il));
        }
        L.ffn_norm = long(r.add(nm("ffn_norm.weight", "post_attention_layernorm.weight"), E, 0, "FFN norm", il));
        // Optional q/k/v biases (qwen2moe has them; a file either has all three or none).
        if (r.find(nm("attn_q.bias", "self_attn.q_proj.bias"))) {
            L.bq = long(r.add(nm("attn_q.bias", "self_attn.q_proj.bias"), qd, 0, "query bias", il));
            L.bk = long(r.add(nm("attn_k.bias", "self_attn.k_proj.bias"), kd, 0, "key bias", il));
            L.bv = long(r.add(nm("attn_v.bias", "self_attn.v_proj.bias"), vd, 0, "value bias", il));
        }
        if (d.architecture == arch::QWEN2MOE && d.n_ff_shexp > 0) {
            const int64_t fs = d.n_ff_shexp;
            L.sh_gate = long(r.add(nm("ffn_gate_shexp.weight", "mlp.shared_expert.gate_proj.weight"), E, fs,
                                   "shared expert gate", il));
            L.sh_up = long(
                r.add(nm("ffn_up_shexp.weight", "mlp.shared_expert.up_proj.weight"), E, fs, "shared expert up", il));
            L.sh_down = long(r.add(nm("ffn_down_shexp.weight", "mlp.shared_expert.down_proj.weight"), fs, E,
                                   "shared expert down", il));
            // The scalar gate: {n_embd} in GGUF (llama.cpp), PyTorch [1, hidden] = ggml {n_embd, 1} in safetensors;
            // either way a one-row matrix for the products.
            const std::string gn = nm("ffn_gate_inp_shexp.weight", "mlp.shared_expert_gate.weight");
            const tensor_desc* g = r.find(gn);
            if (!g) fail("{}: missing tensor '{}' (shared expert gate)", src, gn);
            L.sh_gate_inp = long(r.add(*g, E, g->n_dims == 2 ? 1 : 0, "shared expert gate", il));
        }
    }
    for (int ml = 0; ml < d.layout.n_moe_layers; ++ml) {
        const int il = d.layout.moe_layers[size_t(ml)];
        layer_slots& L = s.layers[size_t(il)];
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
        L.router = long(r.add(name, E, d.n_experts, "router", il));
    }
    for (int il = 0; il < d.n_layers; ++il)
        if (s.layers[size_t(il)].moe_layer < 0)
            fail("{}: layer {} is a dense FFN layer: the forward pass needs every {} layer to be MoE", src, il,
                 arch_name(d.architecture));
    if (slots_out) *slots_out = std::move(s);
    return r.take();
}

// Reads whole tensors with pread, one descriptor per file of the model.
class tensor_reader {
public:
    explicit tensor_reader(const model_file& f) : _f(f), _fds(f.paths.size(), -1) {}
    ~tensor_reader() {
        for (int fd : _fds)
            if (fd >= 0) ::close(fd);
    }
    tensor_reader(const tensor_reader&) = delete;
    tensor_reader& operator=(const tensor_reader&) = delete;

    void read(const tensor_desc& t, uint8_t* dst) {
        MOE_CHECK(t.file >= 0 && size_t(t.file) < _f.paths.size());
        int& fd = _fds[size_t(t.file)];
        const std::string& path = _f.paths[size_t(t.file)];
        if (fd < 0) {
            fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd < 0) fail("{}: cannot open for reading: {}", path, std::strerror(errno));
        }
        uint64_t done = 0;
        while (done < t.bytes) {
            const ssize_t n = ::pread(fd, dst + done, t.bytes - done, off_t(t.offset + done));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0)
                fail("{}: reading tensor '{}' ({} bytes at offset {}) failed at offset {}: {}", path, t.name, t.bytes,
                     t.offset, t.offset + done, n < 0 ? std::strerror(errno) : "unexpected end of file");
            done += uint64_t(n);
        }
    }

private:
    const model_file& _f;
    std::vector<int> _fds;
};

}  // namespace

resident_plan plan_resident_weights(const model_file& file, const model_desc& desc, const type_support& supports) {
    return build_plan(file, desc, supports, nullptr);
}

resident_weights::resident_weights(const model_file& file, const model_desc& d, backend& be,
                                   const load_progress_fn& progress)
    : _be(be) {
    model_slots slots;
    _plan = build_plan(
        file, d, [&be](tensor_type t) { return be.supports(t); }, &slots);
    rope_freq_base = float(d.rope_freq_base);
    _block = be.alloc(_plan.bytes);
    _bytes = _plan.bytes;

    // Each tensor is read into host memory as stored, widened if the plan says so, then uploaded (on the CPU the
    // "upload" is a memcpy into the block, which keeps one code path).
    std::vector<void*> where(_plan.tensors.size(), nullptr);
    uint64_t total_file = 0, done_file = 0;
    for (const resident_tensor& t : _plan.tensors) total_file += t.src->bytes;
    tensor_reader reader(file);
    std::vector<uint8_t> raw;
    std::vector<float> wide;
    uint64_t offset = 0;
    try {
        for (size_t i = 0; i < _plan.tensors.size(); ++i) {
            const resident_tensor& t = _plan.tensors[i];
            raw.resize(t.src->bytes);
            reader.read(*t.src, raw.data());
            uint8_t* dst = static_cast<uint8_t*>(_block) + offset;
            if (t.placed == t.src->type) {
                be.upload(dst, raw.data(), t.placed_bytes);
            } else {
                const int64_t n = t.ne0 * std::max<int64_t>(t.ne1, 1);
                wide.resize(size_t(n));
                dequantize_row(t.src->type, raw.data(), wide.data(), n);
                be.upload(dst, wide.data(), t.placed_bytes);
            }
            where[i] = dst;
            offset += align_up(t.placed_bytes);
            done_file += t.src->bytes;
            if (progress) progress(done_file, total_file);
        }
    } catch (...) {
        be.free(_block);
        throw;
    }
    MOE_CHECK(offset == _bytes);
    if (progress) progress(total_file, total_file);

    const auto vec = [&](long i) { return i < 0 ? nullptr : static_cast<const float*>(where[size_t(i)]); };
    const auto mat = [&](long i) {
        weight_matrix m;
        if (i < 0) return m;
        const resident_tensor& t = _plan.tensors[size_t(i)];
        m.type = t.placed;
        m.data = where[size_t(i)];
        m.n_cols = t.ne0;
        m.n_rows = std::max<int64_t>(t.ne1, 1);
        return m;
    };
    tok_embd = mat(slots.tok_embd);
    output_norm = vec(slots.output_norm);
    output = _plan.tied_output ? tok_embd : mat(slots.output);
    layers.resize(slots.layers.size());
    for (size_t il = 0; il < slots.layers.size(); ++il) {
        const layer_slots& s = slots.layers[il];
        layer_tensors& L = layers[il];
        L.attn_norm = vec(s.attn_norm);
        L.wq = mat(s.wq), L.wk = mat(s.wk), L.wv = mat(s.wv), L.wo = mat(s.wo);
        L.q_norm = vec(s.q_norm), L.k_norm = vec(s.k_norm);
        L.q_norm_n = s.q_norm < 0 ? 0 : _plan.tensors[size_t(s.q_norm)].ne0;
        L.bq = vec(s.bq), L.bk = vec(s.bk), L.bv = vec(s.bv);
        L.ffn_norm = vec(s.ffn_norm);
        L.sh_gate_inp = mat(s.sh_gate_inp), L.sh_gate = mat(s.sh_gate), L.sh_up = mat(s.sh_up);
        L.sh_down = mat(s.sh_down);
        L.router = mat(s.router);
        L.moe_layer = s.moe_layer;
    }
}

resident_weights::~resident_weights() {
    _be.free(_block);
}

}  // namespace moe
