// describe_model: recognises the MoE architecture of a GGUF (general.architecture + <arch>.* keys) or a Hugging
// Face safetensors checkpoint (config.json model_type + HF tensor names), reads the hyper-parameters, checks them
// against the tensor shapes, and builds the expert layout: the byte ranges of every routed expert's weights.
//
// Layout rules (docs/model-formats.md §3.1, §5.2):
//  - GGUF merged experts blk.N.ffn_{gate,up,down}_exps {ne0, ne1, E}: expert e is the contiguous slice
//    [offset + e*nb2, +nb2) with nb2 = bytes / E, because ne2 is the outermost dimension. Fused ffn_gate_up_exps
//    is one range. Expert biases {ne0, E} (gpt-oss) give row e.
//  - Legacy split-expert GGUF (pre llama.cpp #6387): blk.N.ffn_{gate,up,down}.E.weight, one tensor per expert.
//  - HF per-expert checkpoints: each expert's matrices are their own tensors. transformers-v5 style fused
//    3-D mlp.experts.{gate_up_proj,down_proj} with E leading are sliced like GGUF.
//  - Shared experts, dense FFN layers, routers and everything else are resident, never routed.
#include "runtime/model_desc.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <set>
#include <string>

#include "common/error.h"
#include "common/printable.h"

namespace moe {

std::string_view arch_name(arch a) {
    switch (a) {
        case arch::LLAMA:
            return "llama";
        case arch::QWEN2MOE:
            return "qwen2moe";
        case arch::QWEN3MOE:
            return "qwen3moe";
        case arch::OLMOE:
            return "olmoe";
        case arch::DEEPSEEK2:
            return "deepseek2";
        case arch::GPT_OSS:
            return "gpt-oss";
    }
    return "?";
}

std::string_view expert_part_name(expert_part p) {
    switch (p) {
        case expert_part::GATE:
            return "gate";
        case expert_part::UP:
            return "up";
        case expert_part::DOWN:
            return "down";
        case expert_part::GATE_UP:
            return "gate_up";
        case expert_part::GATE_BIAS:
            return "gate_bias";
        case expert_part::UP_BIAS:
            return "up_bias";
        case expert_part::DOWN_BIAS:
            return "down_bias";
        case expert_part::GATE_UP_BIAS:
            return "gate_up_bias";
        case expert_part::GATE_UP_SCALES:
            return "gate_up_scales";
        case expert_part::DOWN_SCALES:
            return "down_scales";
    }
    return "?";
}

namespace {

std::string shape_str(const tensor_desc& t) {
    std::string s = "{";
    for (int i = 0; i < t.n_dims; ++i) s += (i ? ", " : "") + std::to_string(t.ne[i]);
    return s + "}";
}

// The routed-expert part of a layer: one tensor per part, either merged over experts (sliced) or per expert.
struct part_source {
    expert_part part;
    const tensor_desc* t;
};

// Appends the range of expert e of a merged tensor whose outermost dimension (ne[n_dims-1]) is the expert.
void add_slice(expert_entry& ee, expert_part part, const tensor_desc& t, int e, int n_experts) {
    MOE_CHECK(t.bytes % uint64_t(n_experts) == 0);  // guaranteed once ne[last] == n_experts was checked
    uint64_t stride = t.bytes / uint64_t(n_experts);
    ee.ranges.push_back({part, t.name, t.type, t.file, t.offset + uint64_t(e) * stride, stride});
}

void add_whole(expert_entry& ee, expert_part part, const tensor_desc& t) {
    ee.ranges.push_back({part, t.name, t.type, t.file, t.offset, t.bytes});
}

class describer {
public:
    explicit describer(const model_file& f) : _f(f), _src(f.paths.empty() ? std::string("<model>") : f.paths[0]) {}

    model_desc run() {
        if (_f.format == model_format::GGUF)
            describe_gguf();
        else
            describe_hf();
        finish();
        return std::move(_d);
    }

private:
    const model_file& _f;
    std::string _src;
    model_desc _d;
    std::string _pfx;  // GGUF metadata prefix "<arch>."

    // ---- tensors ------------------------------------------------------------------------------------------
    const tensor_desc& need(const std::string& name, const char* why) const {
        const tensor_desc* t = _f.find(name);
        if (!t) fail("{}: missing tensor '{}' ({})", _src, name, why);
        return *t;
    }
    void expect_shape(const tensor_desc& t, std::initializer_list<int64_t> ne, const char* what) const {
        bool ok = t.n_dims == int(ne.size());
        int i = 0;
        for (int64_t v : ne) ok = ok && t.ne[i++] == v;
        if (!ok) {
            std::string want = "{";
            i = 0;
            for (int64_t v : ne) want += (i++ ? ", " : "") + std::to_string(v);
            fail("{}: tensor '{}': shape {}: expected {} ({}), found {}", _src, t.name, shape_str(t), want + "}", what,
                 shape_str(t));
        }
    }
    // Expert width from a tensor, cross-checked against the width seen so far (all layers must agree).
    void take_width(int64_t w, const tensor_desc& t, const char* dim) {
        if (w <= 0) fail("{}: tensor '{}': {} = {} is not a valid expert width", _src, t.name, dim, w);
        if (_d.n_ff_exp == 0) {
            _d.n_ff_exp = int(w);
            _width_from = t.name;
        } else if (_d.n_ff_exp != w) {
            fail("{}: expert width mismatch: tensor '{}' has {} = {} but '{}' has {}", _src, t.name, dim, w,
                 _width_from, _d.n_ff_exp);
        }
    }
    std::string _width_from;

    std::vector<expert_entry> new_entries(int layer, int moe_layer) const {
        std::vector<expert_entry> v(static_cast<size_t>(_d.n_experts));
        for (int e = 0; e < _d.n_experts; ++e)
            v[size_t(e)].layer = layer, v[size_t(e)].moe_layer = moe_layer, v[size_t(e)].expert = e;
        return v;
    }

    // ---- GGUF metadata ------------------------------------------------------------------------------------
    // Integer that may be stored as an array of per-layer values (head counts, FFN widths): takes the first
    // element so uniform models work; a model whose layers differ is refused by the shape checks instead.
    std::optional<int64_t> gguf_int(const std::string& key) const {
        const meta_value* v = _f.meta(key);
        if (!v) return std::nullopt;
        if (auto* arr = std::get_if<std::shared_ptr<meta_array>>(&v->value)) {
            if (!*arr || (*arr)->empty())
                fail("{}: metadata '{}': expected an integer, found an empty array", _src, key);
            const meta_value& e0 = (**arr)[0];
            if (auto* s = std::get_if<int64_t>(&e0.value)) return *s;
            if (auto* u = std::get_if<uint64_t>(&e0.value)) return int64_t(*u);
            fail("{}: metadata '{}': expected an integer or an array of integers", _src, key);
        }
        return _f.meta_int(key);
    }
    int64_t gguf_req(const std::string& key, const char* why) const {
        auto v = gguf_int(key);
        if (!v) fail("{}: missing metadata key '{}' ({})", _src, key, why);
        return *v;
    }

    void describe_gguf() {
        auto a = _f.meta_string("general.architecture");
        if (!a) fail("{}: missing metadata key 'general.architecture' (needed to tell the model type)", _src);
        static const std::pair<const char*, arch> k_archs[] = {
            {"llama", arch::LLAMA}, {"qwen2moe", arch::QWEN2MOE},   {"qwen3moe", arch::QWEN3MOE},
            {"olmoe", arch::OLMOE}, {"deepseek2", arch::DEEPSEEK2}, {"gpt-oss", arch::GPT_OSS}};
        bool found = false;
        for (auto& [n, v] : k_archs)
            if (*a == n) _d.architecture = v, found = true;
        if (!found)
            fail(
                "{}: general.architecture: expected one of llama (Mixtral), qwen2moe, qwen3moe, olmoe, deepseek2, "
                "gpt-oss; found '{}'",
                _src, printable(*a));
        _pfx = *a + ".";
        _d.name = _f.meta_string("general.name").value_or(*a);

        _d.n_layers = int(gguf_req(_pfx + "block_count", "number of transformer blocks"));
        _d.n_embd = int(gguf_req(_pfx + "embedding_length", "model width"));
        auto n_exp = gguf_int(_pfx + "expert_count");
        if (!n_exp || *n_exp == 0)
            fail("{}: not a Mixture-of-Experts model: metadata key '{}expert_count' is {} (architecture '{}')", _src,
                 printable(_pfx), n_exp ? "0" : "missing", printable(*a));
        _d.n_experts = int(*n_exp);
        _d.n_experts_used = int(gguf_req(_pfx + "expert_used_count", "top-k experts per token"));
        _d.n_head = int(gguf_req(_pfx + "attention.head_count", "attention heads"));
        _d.n_head_kv = int(gguf_int(_pfx + "attention.head_count_kv").value_or(_d.n_head));
        int hd = _d.n_head > 0 ? _d.n_embd / _d.n_head : 0;
        // DeepSeek MLA GGUFs store key_length = kv_lora + rope (the compressed cache row); the per-head q/k width
        // is key_length_mla (docs/model-formats.md §3.2), which is what a reader of head_dim_k wants.
        _d.head_dim_k = int(
            gguf_int(_pfx + "attention.key_length_mla").value_or(gguf_int(_pfx + "attention.key_length").value_or(hd)));
        _d.head_dim_v = int(gguf_int(_pfx + "attention.value_length_mla")
                                .value_or(gguf_int(_pfx + "attention.value_length").value_or(hd)));
        _d.n_ff = int(gguf_int(_pfx + "feed_forward_length").value_or(0));
        _d.n_rot = int(gguf_int(_pfx + "rope.dimension_count").value_or(_d.head_dim_k));
        _d.rope_freq_base = _f.meta_float(_pfx + "rope.freq_base").value_or(10000.0);
        gguf_rope_scaling();
        _d.rms_eps = _f.meta_float(_pfx + "attention.layer_norm_rms_epsilon").value_or(1e-5);
        _d.n_ctx_train = int(std::clamp<int64_t>(gguf_int(_pfx + "context_length").value_or(0), 0, INT32_MAX));
        if (auto v = gguf_int(_pfx + "vocab_size"))
            _d.n_vocab = int(*v);
        else if (const tensor_desc* te = _f.find("token_embd.weight"); te && te->n_dims == 2)
            _d.n_vocab = int(te->ne[1]);
        else if (const meta_value* tok = _f.meta("tokenizer.ggml.tokens"))
            if (auto* arr = std::get_if<std::shared_ptr<meta_array>>(&tok->value); arr && *arr)
                _d.n_vocab = int((*arr)->size());

        // Routing and RoPE per architecture (docs/model-formats.md §3.3, §4).
        switch (_d.architecture) {
            case arch::LLAMA:
                _d.rope = rope_style::NORM, _d.norm_topk = true;
                break;
            case arch::QWEN2MOE:
                _d.rope = rope_style::NEOX, _d.norm_topk = false;
                break;
            case arch::QWEN3MOE:
                _d.rope = rope_style::NEOX, _d.norm_topk = true;
                break;
            case arch::OLMOE:
                _d.rope = rope_style::NEOX, _d.norm_topk = false;
                break;
            case arch::GPT_OSS:
                _d.rope = rope_style::NEOX, _d.norm_topk = false, _d.gating = gating_func::SOFTMAX_WEIGHT;
                break;
            case arch::DEEPSEEK2: {
                _d.rope = rope_style::NORM;
                _d.norm_topk = _f.meta_bool(_pfx + "expert_weights_norm").value_or(false);
                int64_t g = gguf_int(_pfx + "expert_gating_func").value_or(1);
                if (g == 1)
                    _d.gating = gating_func::SOFTMAX;
                else if (g == 2)
                    _d.gating = gating_func::SIGMOID;
                else
                    fail("{}: metadata '{}expert_gating_func': expected 1 (softmax) or 2 (sigmoid), found {}", _src,
                         _pfx, g);
                _d.n_leading_dense = int(gguf_int(_pfx + "leading_dense_block_count").value_or(0));
                _d.n_shared_experts = int(gguf_req(_pfx + "expert_shared_count", "DeepSeek shared experts"));
                break;
            }
        }
        if (auto s = _f.meta_float(_pfx + "expert_weights_scale"); s && *s != 0.0) _d.weights_scale = *s;
        check_counts();

        for (int il = 0; il < _d.n_layers; ++il) gguf_layer(il);
        gguf_cross_check();
    }

    void gguf_layer(int il) {
        std::string b = fmt::format("blk.{}.", il);
        const tensor_desc* router = _f.find(b + "ffn_gate_inp.weight");
        const tensor_desc* down = _f.find(b + "ffn_down_exps.weight");
        const tensor_desc* legacy_down = _f.find(b + "ffn_down.0.weight");
        if (!router) {
            if (down || legacy_down)
                fail("{}: layer {} has expert tensors but no router: missing tensor '{}ffn_gate_inp.weight'", _src, il,
                     b);
            bool leading = _d.architecture == arch::DEEPSEEK2 && il < _d.n_leading_dense;
            if (!leading && !_f.find(b + "ffn_down.weight"))
                fail("{}: layer {}: missing tensor '{}ffn_gate_inp.weight' (router; every {} layer is MoE)", _src, il,
                     b, arch_name(_d.architecture));
            return;  // a dense FFN layer: all resident
        }
        if (_d.architecture == arch::DEEPSEEK2 && il < _d.n_leading_dense)
            fail(
                "{}: layer {} has a router '{}ffn_gate_inp.weight' but {}leading_dense_block_count = {} says it is "
                "dense",
                _src, il, b, _pfx, _d.n_leading_dense);
        const int E = _d.n_experts, d = _d.n_embd;
        expect_shape(*router, {d, E}, "{n_embd, n_expert}");

        int moe_layer = _d.layout.n_moe_layers++;
        _d.layout.moe_layers.push_back(il);
        std::vector<expert_entry> entries = new_entries(il, moe_layer);

        if (down) {
            const tensor_desc* gate_up = _f.find(b + "ffn_gate_up_exps.weight");
            const tensor_desc* gate = _f.find(b + "ffn_gate_exps.weight");
            const tensor_desc* up = _f.find(b + "ffn_up_exps.weight");
            std::vector<part_source> parts;
            if (gate_up && !gate && !up) {
                take_width(gate_up->n_dims == 3 ? gate_up->ne[1] / 2 : 0, *gate_up, "ne[1]/2");
                expect_shape(*gate_up, {d, 2 * int64_t(_d.n_ff_exp), E}, "{n_embd, 2*n_ff_exp, n_expert}");
                parts.push_back({expert_part::GATE_UP, gate_up});
            } else {
                if (!gate) need(b + "ffn_gate_exps.weight", "expert gate projection");
                if (!up) need(b + "ffn_up_exps.weight", "expert up projection");
                take_width(gate->n_dims >= 2 ? gate->ne[1] : 0, *gate, "ne[1]");
                expect_shape(*gate, {d, _d.n_ff_exp, E}, "{n_embd, n_ff_exp, n_expert}");
                expect_shape(*up, {d, _d.n_ff_exp, E}, "{n_embd, n_ff_exp, n_expert}");
                parts.push_back({expert_part::GATE, gate});
                parts.push_back({expert_part::UP, up});
            }
            expect_shape(*down, {_d.n_ff_exp, d, E}, "{n_ff_exp, n_embd, n_expert}");
            parts.push_back({expert_part::DOWN, down});
            // Expert biases (gpt-oss): one row per expert.
            struct bias_def {
                const char* name;
                expert_part part;
                int64_t width;
            };
            const bias_def biases[] = {{"ffn_gate_exps.bias", expert_part::GATE_BIAS, _d.n_ff_exp},
                                       {"ffn_up_exps.bias", expert_part::UP_BIAS, _d.n_ff_exp},
                                       {"ffn_gate_up_exps.bias", expert_part::GATE_UP_BIAS, 2 * int64_t(_d.n_ff_exp)},
                                       {"ffn_down_exps.bias", expert_part::DOWN_BIAS, d}};
            for (const auto& bd : biases) {
                if (const tensor_desc* t = _f.find(b + bd.name)) {
                    expect_shape(*t, {bd.width, E}, "{width, n_expert}");
                    parts.push_back({bd.part, t});
                }
            }
            for (int e = 0; e < E; ++e)
                for (const auto& p : parts) add_slice(entries[e], p.part, *p.t, e, E);
        } else if (legacy_down) {
            for (int e = 0; e < E; ++e) {
                const tensor_desc& g = need(fmt::format("{}ffn_gate.{}.weight", b, e), "legacy per-expert gate");
                const tensor_desc& u = need(fmt::format("{}ffn_up.{}.weight", b, e), "legacy per-expert up");
                const tensor_desc& dn = need(fmt::format("{}ffn_down.{}.weight", b, e), "legacy per-expert down");
                take_width(g.n_dims == 2 ? g.ne[1] : 0, g, "ne[1]");
                expect_shape(g, {d, _d.n_ff_exp}, "{n_embd, n_ff}");
                expect_shape(u, {d, _d.n_ff_exp}, "{n_embd, n_ff}");
                expect_shape(dn, {_d.n_ff_exp, d}, "{n_ff, n_embd}");
                add_whole(entries[e], expert_part::GATE, g);
                add_whole(entries[e], expert_part::UP, u);
                add_whole(entries[e], expert_part::DOWN, dn);
            }
            if (_f.find(fmt::format("{}ffn_gate.{}.weight", b, E)))
                fail("{}: tensor '{}ffn_gate.{}.weight' names an expert beyond {}expert_count = {}", _src, b, E, _pfx,
                     E);
        } else {
            fail(
                "{}: layer {} has a router but no experts: missing tensor '{}ffn_down_exps.weight' (or legacy "
                "'{}ffn_down.0.weight')",
                _src, il, b, b);
        }
        for (auto& ee : entries) _d.layout.experts.push_back(std::move(ee));

        // Shared expert (Qwen2-MoE: one, with a scalar gate; DeepSeek: n_shared fused into one wider MLP).
        if (const tensor_desc* sh = _f.find(b + "ffn_gate_shexp.weight")) {
            if (sh->n_dims != 2 || sh->ne[0] != d) expect_shape(*sh, {d, sh->ne[1]}, "{n_embd, n_ff_shexp}");
            if (_d.n_ff_shexp == 0)
                _d.n_ff_shexp = int(sh->ne[1]);
            else if (_d.n_ff_shexp != sh->ne[1])
                fail("{}: shared expert width mismatch: '{}' has ne[1] = {}, earlier layers have {}", _src, sh->name,
                     sh->ne[1], _d.n_ff_shexp);
            if (_d.architecture == arch::QWEN2MOE) _d.n_shared_experts = 1;
        }
    }

    void gguf_cross_check() {
        if (_d.layout.n_moe_layers == 0) fail("{}: not a Mixture-of-Experts model: no layer has a router", _src);
        // Where the expert width lives in the metadata differs per arch (docs/model-formats.md §3.2).
        std::string key;
        switch (_d.architecture) {
            case arch::LLAMA:
            case arch::OLMOE:
                key = _pfx + "feed_forward_length";
                break;
            default:
                key = _pfx + "expert_feed_forward_length";
                break;
        }
        if (auto w = gguf_int(key); w && *w != _d.n_ff_exp)
            fail("{}: expert width mismatch: tensor '{}' gives {} but metadata '{}' = {}", _src, _width_from,
                 _d.n_ff_exp, key, *w);
        if (_d.architecture == arch::DEEPSEEK2) {
            if (_d.n_shared_experts > 0 && _d.n_ff_shexp != 0 && _d.n_ff_shexp != _d.n_ff_exp * _d.n_shared_experts)
                fail(
                    "{}: shared expert width mismatch: ffn_gate_shexp has {} columns, expected n_ff_exp * "
                    "{}expert_shared_count = {} * {}",
                    _src, _d.n_ff_shexp, _pfx, _d.n_ff_exp, _d.n_shared_experts);
        }
        if (_d.architecture == arch::QWEN2MOE && _d.n_ff_shexp != 0)
            if (auto w = gguf_int(_pfx + "expert_shared_feed_forward_length"); w && *w != _d.n_ff_shexp)
                fail(
                    "{}: shared expert width mismatch: ffn_gate_shexp has {} columns but metadata "
                    "'{}expert_shared_feed_forward_length' = {}",
                    _src, _d.n_ff_shexp, _pfx, *w);
        if (_d.n_leading_dense > 0 && _d.layout.n_moe_layers != _d.n_layers - _d.n_leading_dense)
            fail("{}: {} MoE layers found but {}block_count - leading_dense_block_count = {} - {}", _src,
                 _d.layout.n_moe_layers, _pfx, _d.n_layers, _d.n_leading_dense);
    }

    // ---- Hugging Face safetensors + config.json -----------------------------------------------------------
    const nlohmann::json& cfg() const { return _f.config; }
    std::optional<int64_t> cfg_int(const char* key) const {
        auto it = cfg().find(key);
        if (it == cfg().end() || it->is_null()) return std::nullopt;
        if (!it->is_number_integer())
            fail("{}: config.json: key '{}': expected an integer, found {}", _src, key, it->dump());
        return it->get<int64_t>();
    }
    int64_t cfg_req(const char* key) const {
        auto v = cfg_int(key);
        if (!v) fail("{}: config.json: missing key '{}'", _src, key);
        return *v;
    }
    std::optional<double> cfg_float(const char* key) const {
        auto it = cfg().find(key);
        if (it == cfg().end() || it->is_null()) return std::nullopt;
        if (!it->is_number()) fail("{}: config.json: key '{}': expected a number, found {}", _src, key, it->dump());
        return it->get<double>();
    }
    std::optional<bool> cfg_bool(const char* key) const {
        auto it = cfg().find(key);
        if (it == cfg().end() || it->is_null()) return std::nullopt;
        if (!it->is_boolean()) fail("{}: config.json: key '{}': expected true/false, found {}", _src, key, it->dump());
        return it->get<bool>();
    }

    void describe_hf() {
        if (!cfg().is_object())
            fail(
                "{}: no config.json beside the safetensors weights: cannot tell the architecture (expected a Hugging "
                "Face model directory)",
                _src);
        auto mt_it = cfg().find("model_type");
        if (mt_it == cfg().end() || !mt_it->is_string()) fail("{}: config.json: missing string key 'model_type'", _src);
        std::string mt = mt_it->get<std::string>();
        _d.name = mt;
        bool mixtral = false;
        if (mt == "mixtral")
            _d.architecture = arch::LLAMA, mixtral = true;
        else if (mt == "qwen2_moe")
            _d.architecture = arch::QWEN2MOE;
        else if (mt == "qwen3_moe")
            _d.architecture = arch::QWEN3MOE;
        else if (mt == "olmoe")
            _d.architecture = arch::OLMOE;
        else if (mt == "deepseek_v2" || mt == "deepseek_v3")
            _d.architecture = arch::DEEPSEEK2;
        else if (mt == "gpt_oss")
            _d.architecture = arch::GPT_OSS;
        else
            fail(
                "{}: config.json model_type: expected one of mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2, "
                "deepseek_v3, gpt_oss; found '{}'",
                _src, printable(mt));

        _d.n_layers = int(cfg_req("num_hidden_layers"));
        _d.n_embd = int(cfg_req("hidden_size"));
        _d.n_head = int(cfg_req("num_attention_heads"));
        _d.n_head_kv = int(cfg_int("num_key_value_heads").value_or(_d.n_head));
        _d.n_ctx_train = int(std::clamp<int64_t>(cfg_int("max_position_embeddings").value_or(0), 0, INT32_MAX));
        _d.n_vocab = int(cfg_int("vocab_size").value_or(0));
        auto n_exp = cfg_int("num_local_experts");
        if (!n_exp) n_exp = cfg_int("num_experts");
        if (!n_exp) n_exp = cfg_int("n_routed_experts");
        if (!n_exp)
            fail(
                "{}: config.json: missing key 'num_local_experts' / 'num_experts' / 'n_routed_experts' (routed "
                "expert count)",
                _src);
        _d.n_experts = int(*n_exp);
        _d.n_experts_used = int(cfg_req("num_experts_per_tok"));
        int hd = _d.n_head > 0 ? _d.n_embd / _d.n_head : 0;
        _d.head_dim_k = _d.head_dim_v = int(cfg_int("head_dim").value_or(hd));
        _d.n_rot = _d.head_dim_k;
        hf_rope();
        _d.rms_eps = cfg_float("rms_norm_eps").value_or(1e-6);
        _d.n_ff = int(cfg_int("intermediate_size").value_or(0));
        // HF Mixtral keeps raw q/k weights, so it rotates halves (NEOX); only GGUF conversion permutes to NORM.
        _d.rope = rope_style::NEOX;
        switch (_d.architecture) {
            case arch::LLAMA:
                _d.norm_topk = true;
                break;
            case arch::QWEN2MOE:
            case arch::QWEN3MOE:
            case arch::OLMOE:
                _d.norm_topk = cfg_bool("norm_topk_prob").value_or(false);
                break;
            case arch::DEEPSEEK2: {
                _d.rope = rope_style::NORM;  // DeepSeek's own RoPE rotates interleaved pairs
                _d.norm_topk = cfg_bool("norm_topk_prob").value_or(false);
                _d.weights_scale = cfg_float("routed_scaling_factor").value_or(1.0);
                if (_d.weights_scale == 0.0) _d.weights_scale = 1.0;
                std::string sf = cfg().value("scoring_func", std::string("softmax"));
                if (sf == "sigmoid")
                    _d.gating = gating_func::SIGMOID;
                else if (sf != "softmax")
                    fail("{}: config.json scoring_func: expected softmax or sigmoid, found '{}'", _src, printable(sf));
                _d.n_leading_dense = int(cfg_int("first_k_dense_replace").value_or(0));
                _d.n_shared_experts = int(cfg_int("n_shared_experts").value_or(0));
                _d.head_dim_k = int(cfg_int("qk_nope_head_dim").value_or(0) + cfg_int("qk_rope_head_dim").value_or(0));
                _d.head_dim_v = int(cfg_int("v_head_dim").value_or(_d.head_dim_k));
                _d.n_rot = int(cfg_int("qk_rope_head_dim").value_or(_d.head_dim_k));
                break;
            }
            case arch::GPT_OSS:
                _d.gating = gating_func::SOFTMAX_WEIGHT;
                break;
        }
        check_counts();
        for (int il = 0; il < _d.n_layers; ++il) hf_layer(il, mixtral);
        if (_d.layout.n_moe_layers == 0) fail("{}: not a Mixture-of-Experts model: no layer has a router", _src);

        const char* wkey = (mixtral || _d.architecture == arch::OLMOE) ? "intermediate_size" : "moe_intermediate_size";
        if (_d.architecture == arch::GPT_OSS) wkey = "intermediate_size";
        if (auto w = cfg_int(wkey); w && *w != _d.n_ff_exp)
            fail("{}: expert width mismatch: tensor '{}' gives {} but config.json '{}' = {}", _src, _width_from,
                 _d.n_ff_exp, wkey, *w);
        if (_d.architecture == arch::QWEN2MOE && _d.n_ff_shexp != 0)
            if (auto w = cfg_int("shared_expert_intermediate_size"); w && *w != _d.n_ff_shexp)
                fail(
                    "{}: shared expert width mismatch: shared_expert.gate_proj has {} rows but config.json "
                    "'shared_expert_intermediate_size' = {}",
                    _src, _d.n_ff_shexp, *w);
        if (_d.architecture == arch::DEEPSEEK2 && _d.n_ff_shexp != 0 &&
            _d.n_ff_shexp != _d.n_ff_exp * _d.n_shared_experts)
            fail(
                "{}: shared expert width mismatch: shared_experts.gate_proj has {} rows, expected "
                "moe_intermediate_size * n_shared_experts = {} * {}",
                _src, _d.n_ff_shexp, _d.n_ff_exp, _d.n_shared_experts);
    }

    void hf_layer(int il, bool mixtral) {
        std::string b = fmt::format("model.layers.{}.", il);
        std::string moe = b + (mixtral ? "block_sparse_moe." : "mlp.");
        const int E = _d.n_experts, d = _d.n_embd;
        if (_d.architecture == arch::GPT_OSS) return gpt_oss_hf_layer(il, moe);
        const tensor_desc* router = _f.find(moe + "gate.weight");
        const tensor_desc* fused_down = _f.find(moe + "experts.down_proj");
        std::string e0 = moe + (mixtral ? "experts.0.w2.weight" : "experts.0.down_proj.weight");
        if (!router) {
            if (_f.find(e0) || fused_down)
                fail("{}: layer {} has expert tensors but no router: missing tensor '{}gate.weight'", _src, il, moe);
            if (!_f.find(b + "mlp.down_proj.weight"))
                fail("{}: layer {}: missing tensor '{}gate.weight' (router) and no dense MLP '{}mlp.down_proj.weight'",
                     _src, il, moe, b);
            return;
        }
        expect_shape(*router, {d, E}, "PyTorch [n_experts, hidden_size]");
        int moe_layer = _d.layout.n_moe_layers++;
        _d.layout.moe_layers.push_back(il);
        std::vector<expert_entry> entries = new_entries(il, moe_layer);

        if (fused_down) {
            // transformers-v5 re-saves: gate_up_proj [E, 2f, d], down_proj [E, d, f]; E leading = contiguous.
            const tensor_desc& gu = need(moe + "experts.gate_up_proj", "fused expert gate/up");
            take_width(gu.n_dims == 3 ? gu.ne[1] / 2 : 0, gu, "shape[1]/2");
            expect_shape(gu, {d, 2 * int64_t(_d.n_ff_exp), E}, "PyTorch [n_experts, 2*moe_intermediate_size, hidden]");
            expect_shape(*fused_down, {_d.n_ff_exp, d, E}, "PyTorch [n_experts, hidden, moe_intermediate_size]");
            for (int e = 0; e < E; ++e) {
                add_slice(entries[e], expert_part::GATE_UP, gu, e, E);
                add_slice(entries[e], expert_part::DOWN, *fused_down, e, E);
            }
        } else {
            const char* gn = mixtral ? "w1" : "gate_proj";
            const char* un = mixtral ? "w3" : "up_proj";
            const char* dn = mixtral ? "w2" : "down_proj";
            for (int e = 0; e < E; ++e) {
                std::string p = fmt::format("{}experts.{}.", moe, e);
                const tensor_desc& g = need(p + gn + ".weight", "expert gate projection");
                const tensor_desc& u = need(p + un + ".weight", "expert up projection");
                const tensor_desc& dw = need(p + dn + ".weight", "expert down projection");
                take_width(g.n_dims == 2 ? g.ne[1] : 0, g, "shape[0]");
                expect_shape(g, {d, _d.n_ff_exp}, "PyTorch [intermediate, hidden]");
                expect_shape(u, {d, _d.n_ff_exp}, "PyTorch [intermediate, hidden]");
                expect_shape(dw, {_d.n_ff_exp, d}, "PyTorch [hidden, intermediate]");
                add_whole(entries[e], expert_part::GATE, g);
                add_whole(entries[e], expert_part::UP, u);
                add_whole(entries[e], expert_part::DOWN, dw);
            }
            std::string extra = fmt::format("{}experts.{}.{}.weight", moe, E, gn);
            if (_f.find(extra))
                fail("{}: tensor '{}' names an expert beyond the config's expert count {}", _src, extra, E);
        }
        for (auto& ee : entries) _d.layout.experts.push_back(std::move(ee));

        const tensor_desc* sh = _f.find(b + "mlp.shared_expert.gate_proj.weight");
        if (!sh) sh = _f.find(b + "mlp.shared_experts.gate_proj.weight");
        if (sh) {
            if (sh->n_dims != 2) expect_shape(*sh, {d, 0}, "PyTorch [shared_intermediate, hidden]");
            if (_d.n_ff_shexp == 0) _d.n_ff_shexp = int(sh->ne[1]);
            if (_d.architecture == arch::QWEN2MOE) _d.n_shared_experts = 1;
        }
    }

    // gpt-oss checkpoints fuse the experts of a layer into 3-D tensors with the expert leading, so expert e is
    // the contiguous slice e of each. Published (MXFP4) form: gate_up_proj_blocks [E, 2f, d/32, 16] and
    // gate_up_proj_scales [E, 2f, d/32] (U8, gate/up rows interleaved), down_proj_blocks [E, d, f/32, 16],
    // down_proj_scales [E, d, f/32], plus biases [E, 2f] / [E, d] (docs/model-formats.md §5.3). Dequantized:
    // gate_up_proj [E, d, 2f] and down_proj [E, f, d] (x @ W layout). Consumers must know these are HF layouts.
    void gpt_oss_hf_layer(int il, const std::string& moe) {
        const int E = _d.n_experts, d = _d.n_embd;
        const tensor_desc* router = _f.find(moe + "router.weight");
        const tensor_desc* gub = _f.find(moe + "experts.gate_up_proj_blocks");
        const tensor_desc* gu = _f.find(moe + "experts.gate_up_proj");
        if (!router) {
            if (gub || gu)
                fail("{}: layer {} has expert tensors but no router: missing tensor '{}router.weight'", _src, il, moe);
            fail("{}: layer {}: missing tensor '{}router.weight' (router; every gpt-oss layer is MoE)", _src, il, moe);
        }
        expect_shape(*router, {d, E}, "PyTorch [n_experts, hidden_size]");
        int moe_layer = _d.layout.n_moe_layers++;
        _d.layout.moe_layers.push_back(il);
        std::vector<expert_entry> entries = new_entries(il, moe_layer);
        std::vector<part_source> parts;
        if (gub) {
            if (d % 32) fail("{}: hidden_size {} is not a multiple of the MXFP4 block (32)", _src, d);
            take_width(gub->n_dims == 4 ? gub->ne[2] / 2 : 0, *gub, "shape[1]/2");
            const int64_t f = _d.n_ff_exp;
            if (f % 32) fail("{}: expert width {} is not a multiple of the MXFP4 block (32)", _src, f);
            const tensor_desc& gus = need(moe + "experts.gate_up_proj_scales", "MXFP4 scales of gate/up");
            const tensor_desc& db = need(moe + "experts.down_proj_blocks", "MXFP4 blocks of down");
            const tensor_desc& ds = need(moe + "experts.down_proj_scales", "MXFP4 scales of down");
            expect_shape(*gub, {16, d / 32, 2 * f, E}, "PyTorch [n_experts, 2*intermediate, hidden/32, 16]");
            expect_shape(gus, {d / 32, 2 * f, E}, "PyTorch [n_experts, 2*intermediate, hidden/32]");
            expect_shape(db, {16, f / 32, d, E}, "PyTorch [n_experts, hidden, intermediate/32, 16]");
            expect_shape(ds, {f / 32, d, E}, "PyTorch [n_experts, hidden, intermediate/32]");
            parts = {{expert_part::GATE_UP, gub},
                     {expert_part::GATE_UP_SCALES, &gus},
                     {expert_part::DOWN, &db},
                     {expert_part::DOWN_SCALES, &ds}};
        } else if (gu) {
            take_width(gu->n_dims == 3 ? gu->ne[0] / 2 : 0, *gu, "shape[2]/2");
            const tensor_desc& dn = need(moe + "experts.down_proj", "expert down projection");
            expect_shape(*gu, {2 * int64_t(_d.n_ff_exp), d, E}, "PyTorch [n_experts, hidden, 2*intermediate]");
            expect_shape(dn, {d, _d.n_ff_exp, E}, "PyTorch [n_experts, intermediate, hidden]");
            parts = {{expert_part::GATE_UP, gu}, {expert_part::DOWN, &dn}};
        } else {
            fail("{}: layer {}: missing tensor '{}experts.gate_up_proj_blocks' (or '{}experts.gate_up_proj')", _src, il,
                 moe, moe);
        }
        const tensor_desc& gub_bias = need(moe + "experts.gate_up_proj_bias", "expert gate/up bias");
        const tensor_desc& d_bias = need(moe + "experts.down_proj_bias", "expert down bias");
        expect_shape(gub_bias, {2 * int64_t(_d.n_ff_exp), E}, "PyTorch [n_experts, 2*intermediate]");
        expect_shape(d_bias, {d, E}, "PyTorch [n_experts, hidden]");
        parts.push_back({expert_part::GATE_UP_BIAS, &gub_bias});
        parts.push_back({expert_part::DOWN_BIAS, &d_bias});
        for (int e = 0; e < E; ++e)
            for (const auto& p : parts) add_slice(entries[size_t(e)], p.part, *p.t, e, E);
        for (auto& ee : entries) _d.layout.experts.push_back(std::move(ee));
    }

    // ---- common ---------------------------------------------------------------------------------------------
    // RoPE scaling from GGUF (docs/model-formats.md §3.3): rope.scaling.type (llama.cpp reads "linear" when only a
    // factor is given), rope.scaling.factor or the older rope.scale_linear, original_context_length, the optional
    // yarn_beta_fast/slow, and DeepSeek-V2's yarn_log_multiplier, which the converter writes as 0.1 * mscale_all_dim.
    void gguf_rope_scaling() {
        rope_scaling& r = _d.rope_scale;
        std::optional<double> factor = _f.meta_float(_pfx + "rope.scaling.factor");
        if (!factor) factor = _f.meta_float(_pfx + "rope.scale_linear");
        set_scaling_type(_f.meta_string(_pfx + "rope.scaling.type").value_or(factor ? "linear" : "none"),
                         _pfx + "rope.scaling.type");
        if (r.type == rope_scaling_type::NONE) return;
        r.factor = factor.value_or(1.0);
        if (r.type == rope_scaling_type::LINEAR && r.factor == 1.0) {  // a factor of 1 is no scaling at all
            r = rope_scaling{};
            return;
        }
        r.orig_ctx = int(gguf_int(_pfx + "rope.scaling.original_context_length").value_or(0));
        r.beta_fast = _f.meta_float(_pfx + "rope.scaling.yarn_beta_fast").value_or(32.0);
        r.beta_slow = _f.meta_float(_pfx + "rope.scaling.yarn_beta_slow").value_or(1.0);
        r.mscale_all_dim = _f.meta_float(_pfx + "rope.scaling.yarn_log_multiplier").value_or(0.0) / 0.1;
        check_scaling(_pfx + "rope.scaling.factor", _pfx + "rope.scaling.original_context_length");
    }

    // RoPE base and scaling from config.json: transformers 4.x writes rope_theta at the top and rope_scaling
    // {type|rope_type, factor, ...}; 5.x writes rope_parameters {rope_type, rope_theta, factor, ...}.
    void hf_rope() {
        const nlohmann::json* rp = nullptr;
        for (const char* k : {"rope_parameters", "rope_scaling"}) {
            auto it = cfg().find(k);
            if (it == cfg().end() || it->is_null()) continue;
            if (!it->is_object()) fail("{}: config.json: key '{}': expected an object, found {}", _src, k, it->dump());
            rp = &*it;
            break;
        }
        auto num = [&](const char* key) -> std::optional<double> {
            if (!rp) return std::nullopt;
            auto it = rp->find(key);
            if (it == rp->end() || it->is_null()) return std::nullopt;
            if (!it->is_number())
                fail("{}: config.json: rope parameter '{}': expected a number, found {}", _src, key, it->dump());
            return it->get<double>();
        };
        _d.rope_freq_base = cfg_float("rope_theta").value_or(num("rope_theta").value_or(10000.0));
        if (!rp) return;
        std::string type = "default";
        for (const char* k : {"rope_type", "type"})
            if (auto it = rp->find(k); it != rp->end() && it->is_string()) {
                type = it->get<std::string>();
                break;
            }
        set_scaling_type(type == "default" ? "none" : type, "config.json rope_type");
        rope_scaling& r = _d.rope_scale;
        if (r.type == rope_scaling_type::NONE) return;
        r.factor = num("factor").value_or(1.0);
        r.orig_ctx = int(num("original_max_position_embeddings").value_or(0.0));
        r.beta_fast = num("beta_fast").value_or(32.0);
        r.beta_slow = num("beta_slow").value_or(1.0);
        r.mscale_all_dim = num("mscale_all_dim").value_or(0.0);
        check_scaling("config.json rope factor", "config.json original_max_position_embeddings");
    }

    void set_scaling_type(const std::string& name, const std::string& what) {
        rope_scaling& r = _d.rope_scale;
        r.name = name;
        if (name == "none")
            r.type = rope_scaling_type::NONE;
        else if (name == "linear")
            r.type = rope_scaling_type::LINEAR;
        else if (name == "yarn")
            r.type = rope_scaling_type::YARN;
        else if (!name.empty())
            r.type = rope_scaling_type::OTHER;  // longrope, llama3, dynamic, ...: described, not computed
        else
            fail("{}: {}: expected none, linear, yarn, ...; found an empty string", _src, what);
    }

    void check_scaling(const std::string& factor_what, const std::string& ctx_what) const {
        const rope_scaling& r = _d.rope_scale;
        if (!(r.factor > 0.0) || !std::isfinite(r.factor))
            fail("{}: {}: expected a positive scaling factor, found {}", _src, factor_what, r.factor);
        if (r.type == rope_scaling_type::YARN && r.orig_ctx <= 0)
            fail("{}: {}: YaRN RoPE scaling needs the original context length, found {}", _src, ctx_what, r.orig_ctx);
    }

    void check_counts() const {
        if (_d.n_layers <= 0 || _d.n_layers > 100000)
            fail("{}: number of layers: expected 1..100000, found {}", _src, _d.n_layers);
        if (_d.n_embd <= 0) fail("{}: model width (n_embd): expected > 0, found {}", _src, _d.n_embd);
        if (_d.n_experts <= 0 || _d.n_experts > 4096)
            fail("{}: expert count: expected 1..4096, found {}", _src, _d.n_experts);
        if (_d.n_experts_used <= 0 || _d.n_experts_used > _d.n_experts)
            fail("{}: experts used per token (top-k): expected 1..{} (the expert count), found {}", _src, _d.n_experts,
                 _d.n_experts_used);
        if (_d.n_head <= 0) fail("{}: attention head count: expected > 0, found {}", _src, _d.n_head);
        if (_d.n_leading_dense < 0 || _d.n_leading_dense >= _d.n_layers)
            fail("{}: leading dense layers: expected 0..{}, found {}", _src, _d.n_layers - 1, _d.n_leading_dense);
    }

    void finish() {
        auto& L = _d.layout;
        L.n_experts = _d.n_experts;
        uint64_t all = 0;
        for (const auto& t : _f.tensors) all += t.bytes;
        for (auto& ee : L.experts) {
            ee.bytes = 0;
            for (const auto& r : ee.ranges) ee.bytes += r.bytes;
            L.max_expert_bytes = std::max(L.max_expert_bytes, ee.bytes);
            L.total_bytes += ee.bytes;
        }
        MOE_CHECK(L.total_bytes <= all);  // expert ranges are disjoint slices of distinct tensors
        _d.resident_bytes = all - L.total_bytes;

        // An expert tensor the layout did not claim (a block index beyond the block count, a stray name) would
        // silently count as resident and never be streamed: refuse it instead.
        std::set<std::string_view> used;
        for (const auto& ee : L.experts)
            for (const auto& r : ee.ranges) used.insert(r.tensor);
        const char* marker = _f.format == model_format::GGUF ? "_exps." : ".experts.";
        for (const auto& t : _f.tensors)
            if (t.name.find(marker) != std::string::npos && !used.count(t.name))
                fail(
                    "{}: tensor '{}' looks like routed-expert weights but belongs to no MoE layer of the {} blocks "
                    "described",
                    _src, t.name, _d.n_layers);
    }
};

}  // namespace

model_desc describe_model(const model_file& file) {
    return describer(file).run();
}

}  // namespace moe
