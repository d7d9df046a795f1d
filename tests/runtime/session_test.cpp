// Many sessions on one model and one offloader: the resident weights are uploaded once (counted through a backend
// that records every allocation and upload), and each session's logits are bit-identical to a lone session's on
// the same tokens, with the sessions' steps interleaved token by token over one expert cache at the smallest
// budget, with and without the prefetcher.
#include "runtime/session.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend_cpu.h"
#include "runtime/engine.h"
#include "runtime/offloader.h"

namespace moe {
namespace {

const std::string k_model = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/ref/mixtral-f32.gguf";
// Q4_K, Q5_K, Q6_K and Q8_0 resident matrices (embeddings, attention, output), F32 vectors.
const std::string k_model_q = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/llamacpp/mixtral-kq.gguf";

// The CPU backend, counting what is allocated and uploaded into its memory.
class counting_backend final : public backend {
public:
    explicit counting_backend(int64_t max_cols) : _cpu(max_cols) {}
    uint64_t n_allocs = 0, alloc_bytes = 0, n_uploads = 0, upload_bytes = 0;

    std::string_view name() const override { return _cpu.name(); }
    bool host_memory() const override { return true; }
    void* alloc(uint64_t bytes) override {
        ++n_allocs;
        alloc_bytes += bytes;
        return _cpu.alloc(bytes);
    }
    void free(void* p) override { _cpu.free(p); }
    void upload(void* dst, const void* src, uint64_t bytes) override {
        ++n_uploads;
        upload_bytes += bytes;
        _cpu.upload(dst, src, bytes);
    }
    void download(void* dst, const void* src, uint64_t bytes) override { _cpu.download(dst, src, bytes); }
    void copy(void* dst, const void* src, uint64_t bytes) override { _cpu.copy(dst, src, bytes); }
    void synchronize() override { _cpu.synchronize(); }
    bool supports(tensor_type t) const override { return _cpu.supports(t); }
    void get_row(tensor_type t, const void* W, int64_t row, int64_t n_cols, float* out) override {
        _cpu.get_row(t, W, row, n_cols, out);
    }
    void matvec(tensor_type t, const void* W, const float* x, float* y, int64_t n_cols, int64_t n_rows) override {
        _cpu.matvec(t, W, x, y, n_cols, n_rows);
    }
    void matmul(tensor_type t, const void* W, const float* X, float* Y, int64_t n_cols, int64_t n_rows,
                int64_t n_tok) override {
        _cpu.matmul(t, W, X, Y, n_cols, n_rows, n_tok);
    }
    void rmsnorm(const float* x, const float* w, float* y, int64_t n, float eps) override {
        _cpu.rmsnorm(x, w, y, n, eps);
    }
    void rmsnorm_rows(const float* x, const float* w, float* y, int64_t n, int64_t n_rows, float eps) override {
        _cpu.rmsnorm_rows(x, w, y, n, n_rows, eps);
    }
    void rope(float* x, int n_heads, int head_dim, int n_rot, int pos, float freq_base, rope_style style) override {
        _cpu.rope(x, n_heads, head_dim, n_rot, pos, freq_base, style);
    }
    void attention(const float* q, const float* k, const float* v, float* out, float* scores, int n_head, int n_head_kv,
                   int hd_k, int hd_v, int n_kv, float scale) override {
        _cpu.attention(q, k, v, out, scores, n_head, n_head_kv, hd_k, hd_v, n_kv, scale);
    }
    void route(const float* logits, float* probs, int n_experts, int k, gating_func gating, bool norm_topk,
               float weights_scale, int* ids, float* weights) override {
        _cpu.route(logits, probs, n_experts, k, gating, norm_topk, weights_scale, ids, weights);
    }
    void swiglu(const float* gate, const float* up, float* out, int64_t n) override { _cpu.swiglu(gate, up, out, n); }
    void weighted_sum(const float* const* ys, const float* w, int k, float* out, int64_t n) override {
        _cpu.weighted_sum(ys, w, k, out, n);
    }
    void add(float* y, const float* x, int64_t n) override { _cpu.add(y, x, n); }
    void add_gated(float* y, const float* x, const float* g, int64_t n) override { _cpu.add_gated(y, x, g, n); }

private:
    backend_cpu _cpu;
};

std::vector<std::vector<int>> prompts() {
    return {{1, 17, 42, 99, 5, 77, 3, 120},
            {2, 9, 9, 31, 64, 8, 100, 7},
            {5, 4, 3, 2, 1, 0, 6, 11},
            {120, 60, 30, 15, 7, 3, 1, 90}};
}

// Every position's logits of `tokens` decoded one by one on a lone engine.
std::vector<float> lone_logits(const std::string& path, const engine_config& cfg, const std::vector<int>& tokens) {
    engine e(path, cfg);
    const size_t V = size_t(e.desc().n_vocab);
    std::vector<float> out(tokens.size() * V);
    for (size_t i = 0; i < tokens.size(); ++i) std::memcpy(out.data() + i * V, e.decode(tokens[i]), V * 4);
    return out;
}

void check_sessions_match_lone(const std::string& path, prefetch_mode mode) {
    const model_desc d = describe_model(open_model_file(path));
    engine_config cfg;
    cfg.n_ctx = 16;
    cfg.expert_budget_bytes = engine::min_budget_for(d);  // the smallest budget: every step evicts
    cfg.prefetch.mode = mode;

    auto be = std::make_unique<counting_backend>(std::max(d.n_embd, d.n_ff_exp));
    counting_backend& counts = *be;
    const model m(path, std::move(be));
    EXPECT_EQ(counts.n_allocs, 1u) << "the resident weights are one block";
    EXPECT_EQ(counts.alloc_bytes, m.resident_bytes());
    const uint64_t uploads = counts.n_uploads, upload_bytes = counts.upload_bytes;
    EXPECT_GE(upload_bytes, m.resident_bytes() / 2);

    offloader off(offload_layout_of(m.file(), m.desc()), offload_config_of(cfg, m));
    std::vector<std::unique_ptr<session>> sessions;
    const auto ps = prompts();
    for (size_t i = 0; i < ps.size(); ++i)
        sessions.push_back(std::make_unique<session>(m, off, session_config_of(cfg)));
    EXPECT_EQ(counts.n_uploads, uploads) << "a session uploads no weights";
    EXPECT_EQ(counts.upload_bytes, upload_bytes);
    uint64_t session_bytes = 0;
    for (const auto& s : sessions) session_bytes += s->workspace_bytes();
    EXPECT_LE(counts.alloc_bytes, m.resident_bytes() + session_bytes)
        << "sessions allocate their KV caches and workspaces, nothing more";

    // Interleaved: token t of every session, then token t + 1 of every session.
    const size_t V = size_t(d.n_vocab), T = ps[0].size();
    std::vector<std::vector<float>> got(ps.size(), std::vector<float>(T * V));
    for (size_t t = 0; t < T; ++t)
        for (size_t i = 0; i < ps.size(); ++i) std::memcpy(got[i].data() + t * V, sessions[i]->decode(ps[i][t]), V * 4);
    for (size_t i = 0; i < ps.size(); ++i) {
        const std::vector<float> want = lone_logits(path, cfg, ps[i]);
        EXPECT_EQ(0, std::memcmp(got[i].data(), want.data(), want.size() * 4))
            << "session " << i << " differs from a lone session (prefetch " << prefetch_mode_name(mode) << ")";
    }
    EXPECT_GT(off.stats().total().evictions, 0u) << "the budget was meant to make the sessions compete";
}

TEST(session, many_sessions_share_one_upload_and_match_a_lone_session) {
    check_sessions_match_lone(k_model, prefetch_mode::NONE);
}

TEST(session, with_the_prefetcher_sessions_still_match_a_lone_session) {
    check_sessions_match_lone(k_model, prefetch_mode::BOTH);
}

TEST(session, quantized_resident_weights_stay_quantized_and_shared) {
    check_sessions_match_lone(k_model_q, prefetch_mode::NONE);
    // Quantized matrices are held as stored: well under the F32 size of the same tensors.
    const model m(k_model_q, model_config{});
    uint64_t f32 = 0;
    for (const resident_tensor& t : m.weights().plan().tensors)
        f32 += uint64_t(t.ne0) * uint64_t(std::max<int64_t>(t.ne1, 1)) * 4;
    EXPECT_LT(m.resident_bytes(), f32 / 2);
    EXPECT_NE(m.weights().tok_embd.type, tensor_type::F32);
    EXPECT_NE(m.weights().layers[0].wq.type, tensor_type::F32);
}

TEST(session, generation_is_the_same_on_every_session) {
    engine_config cfg;
    cfg.n_ctx = 24;
    engine e(k_model, cfg);
    sampler_config sc;
    sc.temperature = 0.8f;
    sc.seed = 7;
    e.get_session().set_sampler(sc);
    const std::vector<int> prompt = prompts()[0];
    const generation a = e.get_session().generate(prompt, 10, nullptr, {});
    auto other = e.make_session();
    other->set_sampler(sc);
    const generation b = other->generate(prompt, 10, nullptr, {});
    EXPECT_EQ(a.tokens, b.tokens);
    EXPECT_EQ(a.tokens.size(), 10u);
    EXPECT_EQ(a.n_decoded, 9u) << "the last token is sampled, not evaluated";
    // A callback that stops early.
    int seen = 0;
    const generation c = other->generate(prompt, 10, nullptr, [&](int) { return ++seen < 3; });
    EXPECT_TRUE(c.stopped_by_caller);
    EXPECT_EQ(c.tokens.size(), 3u);
    EXPECT_TRUE(std::equal(c.tokens.begin(), c.tokens.end(), a.tokens.begin()));
    // A context that fills up stops the generation, not the program.
    session_config small{10, 32};
    session tight(e.get_model(), e.get_offloader(), small);
    tight.set_sampler(sc);
    const generation f = tight.generate(prompt, 10, nullptr, {});
    EXPECT_TRUE(f.context_full);
    EXPECT_EQ(f.tokens.size(), 2u);
}

TEST(session, an_offloader_for_another_tier_is_refused) {
    const model m(k_model, model_config{});
    engine_config cfg;
    offload_config oc = offload_config_of(cfg, m);
    oc.tier = tier_kind::PINNED_HOST;
    offloader off(offload_layout_of(m.file(), m.desc()), oc);
    EXPECT_THROW(session(m, off, session_config{}), error);
}

}  // namespace
}  // namespace moe
