// Random-weight model files (see model_gen.h). Block layouts are those dequant.cpp decodes (docs/model-formats.md
// §2.2); the scales below are chosen so that the decoded values have an RMS of ~0.02 and a mean of ~0.
#include "runtime/model_gen.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "common/error.h"
#include "runtime/dequant.h"

namespace moe {
namespace {

using T = tensor_type;

constexpr float k_weight_rms = 0.02f;  // like trained transformer weights
constexpr float k_norm_spread = 0.05f;
constexpr float k_router_sigma = 0.02f;
constexpr uint64_t k_golden = 0x9E3779B97F4A7C15ull;

uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// splitmix64: one add and one mix per 64 random bits.
struct splitmix {
    uint64_t s;
    uint64_t next() { return mix64(s += k_golden); }
};

// ~N(0, 1) from 64 random bits: the sum of four 16-bit uniforms (Irwin-Hall), centred and scaled; within +-3.5.
float approx_normal(uint64_t r) {
    const uint32_t s =
        uint32_t(r & 0xFFFF) + uint32_t((r >> 16) & 0xFFFF) + uint32_t((r >> 32) & 0xFFFF) + uint32_t(r >> 48);
    return (float(s) / 65536.0f - 2.0f) * 1.7320508f;
}

// A factor in [0.85, 1.15) from 16 random bits: block scales vary a little, as in a real file.
float jitter(uint64_t r) {
    return 0.85f + 0.3f * float(r & 0xFFFF) / 65536.0f;
}

void put_half(uint8_t* p, float v) {
    const uint16_t h = f32_to_fp16(v);
    p[0] = uint8_t(h), p[1] = uint8_t(h >> 8);
}

void fill_random(splitmix& r, uint8_t* p, int n) {
    for (int i = 0; i + 8 <= n; i += 8) {
        const uint64_t v = r.next();
        std::memcpy(p + i, &v, 8);
    }
    if (n % 8) {
        const uint64_t v = r.next();
        std::memcpy(p + n / 8 * 8, &v, size_t(n % 8));
    }
}

// block_q4_K { half d; half dmin; uint8 scales[12]; uint8 qs[128]; }: x = d*sc*q - dmin*m, q uniform in 0..15.
// dmin = 8 d and m = sc * 15/16 (rounded) give mean d*sc*7.5 - 8 d*m ~ 0; sc in 32..63 (mean 47.5) and
// q's RMS about its mean 4.61 give d = 0.02 / (47.5 * 4.61).
void block_q4_k(splitmix& r, uint8_t* b) {
    const uint64_t r0 = r.next(), r1 = r.next();
    const float d = fp16_to_f32(f32_to_fp16(k_weight_rms / (47.5f * 4.61f) * jitter(r0)));
    put_half(b, d);
    put_half(b + 2, 8.0f * d);  // exact: a power-of-two multiple of a half
    uint8_t sc[8], m[8];
    for (int j = 0; j < 8; j++) {
        sc[j] = uint8_t(32 + ((r1 >> (5 * j)) & 31));
        m[j] = uint8_t((sc[j] * 15 + 8) / 16);
    }
    // The inverse of get_scale_min_k4: sub-blocks 0..3 in the low 6 bits of bytes 0..3 (scale) and 4..7 (min);
    // 4..7 as nibbles of bytes 8..11 with their top 2 bits in the top bits of bytes 0..3 (scale) / 4..7 (min).
    uint8_t* s = b + 4;
    for (int j = 0; j < 4; j++) {
        s[j] = uint8_t(sc[j] | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = uint8_t(m[j] | ((m[j + 4] >> 4) << 6));
        s[j + 8] = uint8_t((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
    }
    fill_random(r, b + 16, 128);
}

// block_q6_K { uint8 ql[128]; uint8 qh[64]; int8 scales[16]; half d; }: x = d*sc*(q - 32), q uniform in 0..63
// (RMS 18.5 about 32); sc in 6..21 (RMS ~14.3).
void block_q6_k(splitmix& r, uint8_t* b) {
    fill_random(r, b, 192);
    const uint64_t r0 = r.next(), r1 = r.next();
    for (int j = 0; j < 16; j++) b[192 + j] = uint8_t(6 + (((j < 8 ? r0 : r1) >> (4 * (j % 8))) & 15));
    put_half(b + 208, k_weight_rms / (14.3f * 18.5f) * jitter(r0 >> 48));
}

// block_q8_0 { half d; int8 qs[32]; }: q uniform in -128..127 (RMS 73.9).
void block_q8_0(splitmix& r, uint8_t* b) {
    const uint64_t r0 = r.next();
    put_half(b, k_weight_rms / 73.9f * jitter(r0));
    fill_random(r, b + 2, 32);
}

// block_q4_0 { half d; uint8 qs[16]; }: x = d*(q - 8), q uniform in 0..15 (RMS 4.64 about 8).
void block_q4_0(splitmix& r, uint8_t* b) {
    const uint64_t r0 = r.next();
    put_half(b, k_weight_rms / 4.64f * jitter(r0));
    fill_random(r, b + 2, 16);
}

// block_mxfp4 { uint8 e; uint8 qs[16]; }: x = E2M1(q) * 2^(e-127); the 16 codes have an RMS of 2.93, so
// e = 120 (2^-7) gives ~0.023; one block in four takes e = 119 (half of that).
void block_mxfp4(splitmix& r, uint8_t* b) {
    const uint64_t r0 = r.next();
    b[0] = (r0 & 3) == 0 ? 119 : 120;
    fill_random(r, b + 1, 16);
}

float plain_value(gen_fill f, uint64_t bits) {
    switch (f) {
        case gen_fill::NORM:
            return 1.0f + k_norm_spread * approx_normal(bits);
        case gen_fill::ROUTER:
            return k_router_sigma * approx_normal(bits);
        case gen_fill::WEIGHT:
            break;
    }
    return k_weight_rms * approx_normal(bits);
}

constexpr int k_plain_unit = 64;  // elements of a plain (F32/F16/BF16) tensor generated together

// Bytes of one generation unit of a tensor: a quant block, or k_plain_unit elements of a plain type.
uint64_t unit_bytes(T t) {
    const auto& info = type_info(t);
    return info.block_elems == 1 ? uint64_t(k_plain_unit) * info.block_bytes : info.block_bytes;
}

// Writes unit u of a tensor into out (unit_bytes(t) bytes).
void gen_unit(T t, gen_fill f, uint64_t key, uint64_t u, uint8_t* out) {
    splitmix r{mix64(key ^ mix64(u + 1))};
    switch (t) {
        case T::Q4_K:
            return block_q4_k(r, out);
        case T::Q6_K:
            return block_q6_k(r, out);
        case T::Q8_0:
            return block_q8_0(r, out);
        case T::Q4_0:
            return block_q4_0(r, out);
        case T::MXFP4:
            return block_mxfp4(r, out);
        case T::F32:
            for (int i = 0; i < k_plain_unit; i++) {
                const float v = plain_value(f, r.next());
                std::memcpy(out + 4 * i, &v, 4);
            }
            return;
        case T::F16:
        case T::BF16:
            for (int i = 0; i < k_plain_unit; i++) {
                const float v = plain_value(f, r.next());
                const uint16_t h = t == T::F16 ? f32_to_fp16(v) : f32_to_bf16(v);
                out[2 * i] = uint8_t(h), out[2 * i + 1] = uint8_t(h >> 8);
            }
            return;
        default:
            check_failed("gen_unit(fillable type)", __FILE__, __LINE__, std::string(type_name(t)));
    }
}

constexpr T k_fillable[] = {T::Q4_0, T::Q8_0, T::Q4_K, T::Q6_K, T::MXFP4, T::F16, T::BF16, T::F32};

std::string lower(std::string_view s) {
    std::string o(s);
    for (char& c : o) c = char(std::tolower(static_cast<unsigned char>(c)));
    return o;
}

// llama.cpp's general.file_type (LLAMA_FTYPE_*) for a file whose experts have type t.
uint32_t file_type_of(const gen_shape& s) {
    if (s.gate_up_type == T::Q4_K && s.down_type == T::Q6_K) return 15;  // MOSTLY_Q4_K_M
    switch (s.gate_up_type) {
        case T::F32:
            return 0;
        case T::F16:
            return 1;
        case T::Q4_0:
            return 2;
        case T::Q8_0:
            return 7;
        case T::Q4_K:
            return 15;  // Mixtral's Q4_K_M keeps Q4_K experts
        case T::Q6_K:
            return 18;
        case T::BF16:
            return 32;
        case T::MXFP4:
            return 38;  // MOSTLY_MXFP4_MOE
        default:
            return 0;
    }
}

std::vector<gen_shape> make_shapes() {
    std::vector<gen_shape> v;
    {
        // Qwen3-30B-A3B as a Q4_K_M GGUF: Q4_K gate/up experts, Q6_K down, Q6_K value projection and output.
        gen_shape s;
        s.name = "qwen3-30b-a3b";
        s.arch = "qwen3moe";
        s.n_layers = 48, s.n_embd = 2048, s.n_ff = 6144, s.n_ff_exp = 768, s.n_experts = 128, s.n_experts_used = 8;
        s.n_head = 32, s.n_head_kv = 4, s.head_dim = 128, s.n_vocab = 151936, s.n_ctx = 40960;
        s.rope_theta = 1e6f, s.rms_eps = 1e-6f, s.qk_norm = true;
        s.gate_up_type = T::Q4_K, s.down_type = T::Q6_K, s.attn_type = T::Q4_K, s.attn_v_type = T::Q6_K;
        s.embd_type = T::Q4_K, s.output_type = T::Q6_K;
        v.push_back(s);
    }
    {
        // Mixtral-8x7B as llama.cpp writes it today: architecture llama with merged 3-D expert tensors.
        gen_shape s;
        s.name = "mixtral-8x7b";
        s.arch = "llama";
        s.n_layers = 32, s.n_embd = 4096, s.n_ff = 14336, s.n_ff_exp = 14336, s.n_experts = 8, s.n_experts_used = 2;
        s.n_head = 32, s.n_head_kv = 8, s.head_dim = 128, s.n_vocab = 32000, s.n_ctx = 32768;
        s.rope_theta = 1e6f, s.rms_eps = 1e-5f, s.qk_norm = false;
        s.gate_up_type = T::Q4_K, s.down_type = T::Q4_K, s.attn_type = T::Q4_K, s.attn_v_type = T::Q4_K;
        s.embd_type = T::Q4_K, s.output_type = T::Q6_K;
        v.push_back(s);
    }
    {
        // A small qwen3moe with the types of qwen3-30b-a3b, for tests and CI. The widths are multiples of 256,
        // the K-quant block, so every tensor keeps its real type.
        gen_shape s = v[0];
        s.name = "qwen3-moe-small";
        s.n_layers = 2, s.n_embd = 256, s.n_ff = 768, s.n_ff_exp = 256, s.n_experts = 8, s.n_experts_used = 2;
        s.n_head = 4, s.n_head_kv = 2, s.head_dim = 64, s.n_vocab = 1024, s.n_ctx = 4096;
        v.push_back(s);
    }
    return v;
}

}  // namespace

const std::vector<gen_shape>& gen_shapes() {
    static const std::vector<gen_shape> shapes = make_shapes();
    return shapes;
}

std::optional<gen_shape> find_gen_shape(std::string_view name) {
    for (const auto& s : gen_shapes())
        if (s.name == name) return s;
    return std::nullopt;
}

std::optional<tensor_type> parse_gen_type(std::string_view name) {
    const std::string n = lower(name);
    for (T t : k_fillable)
        if (lower(type_name(t)) == n) return t;
    return std::nullopt;
}

std::string gen_type_names() {
    std::string o;
    for (T t : k_fillable) o += (o.empty() ? "" : ", ") + lower(type_name(t));
    return o;
}

gen_plan plan_model(const gen_options& opt) {
    auto found = find_gen_shape(opt.shape);
    if (!found) {
        std::string names;
        for (const auto& s : gen_shapes()) names += (names.empty() ? "" : ", ") + s.name;
        fail_usage("--shape: unknown shape '{}' (expected one of {})", opt.shape, names);
    }
    gen_shape s = *found;
    if (opt.layers != 0) {
        if (opt.layers < 1 || opt.layers > 1000) fail_usage("--layers {}: expected 1..1000", opt.layers);
        s.n_layers = opt.layers;
    }
    if (opt.vocab != 0) {
        if (opt.vocab < 1 || opt.vocab > (1 << 24)) fail_usage("--vocab {}: expected 1..16777216", opt.vocab);
        s.n_vocab = opt.vocab;
    }
    if (opt.experts_type) {
        const T t = *opt.experts_type;
        if (!std::count(std::begin(k_fillable), std::end(k_fillable), t))
            fail_usage("--experts-type {}: expected one of {}", lower(type_name(t)), gen_type_names());
        const uint32_t blk = type_info(t).block_elems;
        if (s.n_embd % blk || s.n_ff_exp % blk)
            fail_usage("--experts-type {}: its blocks of {} do not divide the rows of {} ({} and {})",
                       lower(type_name(t)), blk, s.name, s.n_embd, s.n_ff_exp);
        s.gate_up_type = s.down_type = t;
    }

    gen_plan p{s, opt.seed, gguf_builder(32), {}, 0};
    gguf_builder& g = p.gguf;
    const std::string& a = s.arch;
    g.add_string("general.architecture", a);
    g.add_string("general.type", "model");
    g.add_string("general.name", s.name + " (random weights)");
    g.add_u32("general.file_type", file_type_of(s));
    g.add_u32("general.quantization_version", 2);
    g.add_u32(a + ".vocab_size", uint32_t(s.n_vocab));  // there is no tokenizer to count the tokens of
    g.add_u32(a + ".context_length", uint32_t(s.n_ctx));
    g.add_u32(a + ".embedding_length", uint32_t(s.n_embd));
    g.add_u32(a + ".block_count", uint32_t(s.n_layers));
    g.add_u32(a + ".feed_forward_length", uint32_t(s.n_ff));
    if (a != "llama") g.add_u32(a + ".expert_feed_forward_length", uint32_t(s.n_ff_exp));
    g.add_u32(a + ".attention.head_count", uint32_t(s.n_head));
    g.add_u32(a + ".attention.head_count_kv", uint32_t(s.n_head_kv));
    if (a == "llama") {
        g.add_u32(a + ".rope.dimension_count", uint32_t(s.head_dim));
    } else {
        g.add_u32(a + ".attention.key_length", uint32_t(s.head_dim));
        g.add_u32(a + ".attention.value_length", uint32_t(s.head_dim));
    }
    g.add_f32(a + ".rope.freq_base", s.rope_theta);
    g.add_f32(a + ".attention.layer_norm_rms_epsilon", s.rms_eps);
    g.add_u32(a + ".expert_count", uint32_t(s.n_experts));
    g.add_u32(a + ".expert_used_count", uint32_t(s.n_experts_used));

    const int64_t E = s.n_embd, V = s.n_vocab, F = s.n_ff_exp, X = s.n_experts, hd = s.head_dim;
    const int64_t qd = int64_t(s.n_head) * hd, kvd = int64_t(s.n_head_kv) * hd;
    auto add = [&](const std::string& name, T t, std::vector<int64_t> ne, gen_fill f) {
        const size_t i = g.add_tensor(name, t, std::move(ne));
        p.fills.push_back(f);
        return i;
    };
    add("token_embd.weight", s.embd_type, {E, V}, gen_fill::WEIGHT);
    for (int il = 0; il < s.n_layers; il++) {
        const std::string b = fmt::format("blk.{}.", il);
        add(b + "attn_norm.weight", T::F32, {E}, gen_fill::NORM);
        add(b + "attn_q.weight", s.attn_type, {E, qd}, gen_fill::WEIGHT);
        add(b + "attn_k.weight", s.attn_type, {E, kvd}, gen_fill::WEIGHT);
        add(b + "attn_v.weight", s.attn_v_type, {E, kvd}, gen_fill::WEIGHT);
        add(b + "attn_output.weight", s.attn_type, {qd, E}, gen_fill::WEIGHT);
        if (s.qk_norm) {
            add(b + "attn_q_norm.weight", T::F32, {hd}, gen_fill::NORM);
            add(b + "attn_k_norm.weight", T::F32, {hd}, gen_fill::NORM);
        }
        add(b + "ffn_norm.weight", T::F32, {E}, gen_fill::NORM);
        add(b + "ffn_gate_inp.weight", T::F32, {E, X}, gen_fill::ROUTER);
        for (const char* n : {"ffn_gate_exps", "ffn_up_exps"}) {
            const size_t i = add(b + n + ".weight", s.gate_up_type, {E, F, X}, gen_fill::WEIGHT);
            p.expert_bytes += g.tensors()[i].bytes;
        }
        const size_t i = add(b + "ffn_down_exps.weight", s.down_type, {F, E, X}, gen_fill::WEIGHT);
        p.expert_bytes += g.tensors()[i].bytes;
    }
    add("output_norm.weight", T::F32, {E}, gen_fill::NORM);
    add("output.weight", s.output_type, {E, V}, gen_fill::WEIGHT);
    return p;
}

void gen_fill_tensor(const gen_plan& plan, size_t index, uint64_t begin, uint64_t end, uint8_t* dst) {
    const gguf_tensor_spec& t = plan.gguf.tensors()[index];
    MOE_CHECK(begin <= end && end <= t.bytes);
    const gen_fill f = plan.fills[index];
    const uint64_t key = mix64(plan.seed * k_golden ^ mix64(uint64_t(index) + 0x51ED));
    const uint64_t ub = unit_bytes(t.type);
    uint8_t tmp[k_plain_unit * 4];
    MOE_CHECK(ub <= sizeof tmp);
    for (uint64_t u = begin / ub; u * ub < end; u++) {
        const uint64_t a = u * ub, e = a + ub;
        if (a >= begin && e <= end) {
            gen_unit(t.type, f, key, u, dst + (a - begin));
        } else {  // a unit cut by the range (or by the end of the tensor): make it whole, copy the part
            gen_unit(t.type, f, key, u, tmp);
            const uint64_t from = std::max(a, begin), to = std::min(e, end);
            std::memcpy(dst + (from - begin), tmp + (from - a), size_t(to - from));
        }
    }
}

gguf_write_result generate_model(const gen_plan& plan, const std::string& path, const gguf_write_options& options) {
    return write_gguf_file(
        path, plan.gguf,
        [&plan](size_t index, uint64_t begin, uint64_t end, uint8_t* dst) {
            gen_fill_tensor(plan, index, begin, end, dst);
        },
        options);
}

}  // namespace moe
