// The full-runtime half of the C API (moe_runtime.h, "the full runtime"): moe_engine over runtime/engine.h (with
// the tokenizer and the sampler), so an application loads a model, evaluates tokens and generates without
// touching the cache. Every exported function runs through guard() (api_support.h): no exception crosses the
// boundary. The generation loop is the one `moe run` runs (runtime/cli/run.cpp), so both give the same tokens.
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "api_support.h"
#include "cache/policies.h"
#include "common/gpu.h"
#include "moe_runtime.h"
#include "prefetch/prefetcher.h"
#include "runtime/backend_cuda.h"
#include "runtime/engine.h"
#include "runtime/model_desc.h"
#include "runtime/model_file.h"
#include "runtime/resident_weights.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer.h"

using namespace moe_api;

static_assert(int(moe::prefetch_mode::NONE) == MOE_PREFETCH_NONE &&
                  int(moe::prefetch_mode::SPEC) == MOE_PREFETCH_SPEC &&
                  int(moe::prefetch_mode::HISTORY) == MOE_PREFETCH_HISTORY &&
                  int(moe::prefetch_mode::BOTH) == MOE_PREFETCH_BOTH,
              "moe_prefetch_mode mirrors moe::prefetch_mode");

// One sequence: the engine's own, or a moe_session's.
struct sequence {
    moe::session* ses = nullptr;
    const float* last_logits = nullptr;  // the last evaluated token's logits (inside the forward pass)
    std::string piece;                   // moe_generate's scratch for one token's text
};

// The model, its offloader and the engine's own session (moe::engine), plus the sessions made from it.
struct moe_engine {
    std::unique_ptr<moe::engine> eng;
    const moe::tokenizer* tok = nullptr;  // the model's; null without one
    std::string arch, name, policy;
    sequence own;
    std::atomic<int> n_sessions{0};  // moe_session handles alive (destroying the engine before them is a bug)
};

struct moe_session {
    moe_engine* engine = nullptr;
    std::unique_ptr<moe::session> ses;
    sequence seq;
};

struct moe_sampler {
    moe::sampler smp;
};

namespace {

moe_engine_options default_engine_options() {
    moe_engine_options o{};
    o.struct_size = sizeof(o);
    o.expert_budget_bytes = 0;
    o.host_budget_bytes = 0;
    o.policy = nullptr;
    o.reader = MOE_READER_AUTO;
    o.n_threads = 1;
    o.n_ctx = 2048;
    o.n_batch = 32;
    o.prefetch = MOE_PREFETCH_NONE;
    o.prefetch_depth = 1;
    o.prefetch_k = 0;
    o.backend = MOE_BACKEND_CPU;
    return o;
}

moe_sampler_params default_sampler_params() {
    const moe::sampler_config d;
    moe_sampler_params p{};
    p.struct_size = sizeof(p);
    p.temperature = d.temperature;
    p.top_k = d.top_k;
    p.top_p = d.top_p;
    p.min_p = d.min_p;
    p.repeat_penalty = d.repeat_penalty;
    p.repeat_last_n = d.repeat_last_n;
    p.seed = d.seed;
    return p;
}

moe::sampler_config sampler_config_of(const moe_sampler_params* user) {
    moe_sampler_params p = default_sampler_params();
    if (user) {
        check_size(user, "params");
        read_versioned(p, user);
    }
    if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
        api_fail(MOE_ERR_INVALID_ARGUMENT, "params->top_p is {}; expected a value in (0, 1] (1 = off)", p.top_p);
    if (!(p.min_p >= 0.0f && p.min_p <= 1.0f))
        api_fail(MOE_ERR_INVALID_ARGUMENT, "params->min_p is {}; expected a value in [0, 1] (0 = off)", p.min_p);
    if (!(p.repeat_penalty > 0.0f))
        api_fail(MOE_ERR_INVALID_ARGUMENT, "params->repeat_penalty is {}; expected a value > 0 (1 = off)",
                 p.repeat_penalty);
    if (p.repeat_last_n < -1)
        api_fail(MOE_ERR_INVALID_ARGUMENT, "params->repeat_last_n is {}; expected -1 (all), 0 (none) or a count",
                 p.repeat_last_n);
    moe::sampler_config c;
    c.temperature = p.temperature;
    c.top_k = p.top_k;
    c.top_p = p.top_p;
    c.min_p = p.min_p;
    c.repeat_penalty = p.repeat_penalty;
    c.repeat_last_n = p.repeat_last_n;
    c.seed = p.seed;
    return c;
}

void check_tokens(const moe::session& s, const int32_t* tokens, size_t n) {
    const int V = s.owner().desc().n_vocab;
    for (size_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= V)
            api_fail(MOE_ERR_OUT_OF_RANGE, "tokens[{}] = {} is outside the vocabulary [0, {})", i, tokens[i], V);
    const int free = s.n_ctx() - s.n_past();
    if (n > size_t(free))
        api_fail(MOE_ERR_OUT_OF_RANGE, "{} tokens do not fit: the sequence holds {} of n_ctx = {} positions", n,
                 s.n_past(), s.n_ctx());
}

// moe_eval and moe_session_eval.
void eval_sequence(sequence& q, const int32_t* tokens, size_t n, int all_positions, float* logits) {
    if (n == 0) api_fail(MOE_ERR_INVALID_ARGUMENT, "n is 0: nothing to evaluate");
    need(tokens, "tokens");
    check_tokens(*q.ses, tokens, n);
    const size_t V = size_t(q.ses->owner().desc().n_vocab);
    static_assert(sizeof(int32_t) == sizeof(int));
    const std::span<const int> ids(reinterpret_cast<const int*>(tokens), n);
    q.last_logits = nullptr;
    const float* last = q.ses->eval(ids, all_positions && logits ? logits : nullptr);
    q.last_logits = last;
    if (logits && !all_positions) std::memcpy(logits, last, V * sizeof(float));
}

// moe_generate and moe_session_generate: the session's generation loop (the one `moe run` runs).
void generate_sequence(sequence& q, const moe::tokenizer* tok, const int32_t* prompt, size_t n_prompt,
                       int32_t n_predict, const moe_sampler_params* params, moe_token_callback callback, void* user,
                       int32_t* tokens, size_t capacity, size_t* n_generated) {
    need(n_generated, "n_generated");
    *n_generated = 0;
    if (n_prompt == 0) api_fail(MOE_ERR_INVALID_ARGUMENT, "n_prompt is 0: generation needs at least one token");
    need(prompt, "prompt");
    if (capacity > 0) need(tokens, "tokens");
    if (n_predict <= 0) api_fail(MOE_ERR_INVALID_ARGUMENT, "n_predict is {}; expected > 0", n_predict);
    moe::session& s = *q.ses;
    q.ses->set_sampler(sampler_config_of(params));
    q.last_logits = nullptr;
    if (n_prompt + 1 > size_t(s.n_ctx()))
        api_fail(MOE_ERR_OUT_OF_RANGE, "the prompt has {} tokens; n_ctx = {} leaves no room to generate", n_prompt,
                 s.n_ctx());
    s.reset();
    check_tokens(s, prompt, n_prompt);
    const std::span<const int> ids(reinterpret_cast<const int*>(prompt), n_prompt);
    size_t n = 0;
    s.generate(ids, n_predict, tok, [&](int next) {
        if (n < capacity) tokens[n] = next;
        *n_generated = ++n;
        if (!callback) return true;
        q.piece = tok ? tok->token_to_piece(next, false) : std::string();
        return callback(next, q.piece.data(), q.piece.size(), user) == 0;
    });
}

const moe::tokenizer& need_tokenizer(const moe_engine* e) {
    need(e, "engine");
    if (!e->tok) api_fail(MOE_ERR_UNSUPPORTED, "model '{}' has no tokenizer metadata: pass token ids instead", e->name);
    return *e->tok;
}

void write_text(const std::string& s, char* text, size_t capacity, size_t* n_bytes) {
    need(n_bytes, "n_bytes");
    if (capacity > 0) need(text, "text");
    *n_bytes = s.size();
    if (capacity == 0) return;
    const size_t n = std::min(capacity, s.size());
    std::memcpy(text, s.data(), n);
    if (capacity > s.size()) text[s.size()] = '\0';
}

}  // namespace

extern "C" {

MOE_API moe_status moe_engine_options_init(moe_engine_options* opts) {
    return guard("moe_engine_options_init", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(opts, "opts");
        *opts = default_engine_options();
    });
}

MOE_API moe_status moe_engine_create(const char* path, const moe_engine_options* opts, moe_engine** out) {
    return guard("moe_engine_create", MOE_ERR_FORMAT, [&] {
        need(out, "out");
        *out = nullptr;
        need(path, "path");
        check_size(opts, "options");
        moe_engine_options o = default_engine_options();
        read_versioned(o, opts);
        const std::string policy = o.policy ? o.policy : "lru";
        if (o.n_ctx <= 0 || o.n_batch <= 0 || o.n_threads < 0)
            api_fail(MOE_ERR_INVALID_ARGUMENT, "options: n_ctx ({}) and n_batch ({}) must be > 0, n_threads ({}) >= 0",
                     o.n_ctx, o.n_batch, o.n_threads);
        if (o.prefetch < MOE_PREFETCH_NONE || o.prefetch > MOE_PREFETCH_BOTH)
            api_fail(MOE_ERR_INVALID_ARGUMENT, "options->prefetch is {}; expected a moe_prefetch_mode in [0, 3]",
                     o.prefetch);
        moe::engine_config ec;
        ec.n_ctx = o.n_ctx;
        ec.n_batch = o.n_batch;
        ec.expert_budget_bytes = o.expert_budget_bytes;
        ec.host_budget_bytes = o.host_budget_bytes;
        ec.policy = policy;
        ec.reader = reader_of(o.reader);
        ec.n_threads = o.n_threads;
        ec.prefetch.mode = moe::prefetch_mode(o.prefetch);  // same order as moe_prefetch_mode
        ec.prefetch.depth = o.prefetch_depth;
        ec.prefetch.per_layer = o.prefetch_k;
        if (o.backend == MOE_BACKEND_CUDA) {
            if (!moe::cuda_backend_available())
                api_fail(MOE_ERR_UNSUPPORTED, "backend MOE_BACKEND_CUDA: no usable GPU here ({})",
                         moe::gpu_description());
            ec.backend = moe::backend_kind::CUDA;
        } else if (o.backend == MOE_BACKEND_AUTO) {
            ec.backend = moe::backend_kind::AUTO;
        } else if (o.backend != MOE_BACKEND_CPU) {
            api_fail(MOE_ERR_INVALID_ARGUMENT, "options: backend {}: expected MOE_BACKEND_CPU, _CUDA or _AUTO",
                     o.backend);
        }
        struct stat st {};
        if (::stat(path, &st) != 0) api_fail(MOE_ERR_IO, "{}: cannot open: {}", path, std::strerror(errno));

        // Refusals come before the weights load: the architecture, then the offloader's rules.
        moe::model_desc desc;
        {
            const moe::model_file mf = moe::open_model_file(path);
            desc = moe::describe_model(mf);
            try {
                moe::check_forward_supported(desc, path);
            } catch (const moe::error& err) {
                api_fail(MOE_ERR_UNSUPPORTED, "{}", err.what());
            }
            const moe::tier_kind tier =
                moe::computes_on_cuda(ec.backend) ? moe::tier_kind::DEVICE : moe::tier_kind::RAM;
            moe::validate_offload_config(moe::offload_config_of(ec, tier), moe::offload_layout_of(mf, desc));
        }

        auto e = std::make_unique<moe_engine>();
        e->eng = std::make_unique<moe::engine>(path, ec);
        e->tok = e->eng->get_model().tok();
        e->own.ses = &e->eng->get_session();
        e->arch = std::string(moe::arch_name(desc.architecture));
        e->name = desc.name;
        e->policy = policy;
        *out = e.release();
    });
}

MOE_API void moe_engine_destroy(moe_engine* engine) {
    // Sessions refer to the engine's model and offloader: destroying it first is a bug in the caller.
    if (engine) MOE_CHECK(engine->n_sessions.load() == 0 && "destroy every moe_session before its engine");
    try {
        delete engine;
    } catch (...) {
        // Destructors below do not throw; nothing may escape a C function either way.
    }
}

MOE_API moe_status moe_engine_get_info(const moe_engine* engine, moe_engine_info* info) {
    return guard("moe_engine_get_info", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(engine, "engine");
        check_size(info, "info");
        const moe::engine& g = *engine->eng;
        const moe::model_desc& d = g.desc();
        moe_engine_info r{};
        r.struct_size = sizeof(r);
        r.n_vocab = d.n_vocab;
        r.n_ctx = g.n_ctx();
        r.n_embd = d.n_embd;
        r.n_layers = d.layout.n_moe_layers;
        r.n_experts = d.layout.n_experts;
        r.top_k = d.n_experts_used;
        r.has_tokenizer = engine->tok ? 1 : 0;
        r.bos = engine->tok ? engine->tok->bos_id() : -1;
        r.eos = engine->tok ? engine->tok->eos_id() : -1;
        r.n_slots = g.n_expert_slots();
        r.slot_bytes = g.expert_slot_bytes();
        r.host_n_slots = g.n_host_slots();
        r.resident_bytes = g.resident_bytes();
        r.workspace_bytes = g.workspace_bytes();
        r.arch = engine->arch.c_str();
        r.name = engine->name.c_str();
        r.policy = engine->policy.c_str();
        r.backend = g.backend_name().data();  // a string literal: lives as long as the program
        write_versioned(info, r);
    });
}

// ---- text --------------------------------------------------------------------------------------------------

MOE_API moe_status moe_tokenize(const moe_engine* engine, const char* text, size_t text_len, int add_special,
                                int parse_special, int32_t* tokens, size_t capacity, size_t* n_tokens) {
    return guard("moe_tokenize", MOE_ERR_INVALID_ARGUMENT, [&] {
        const moe::tokenizer& tok = need_tokenizer(engine);
        need(n_tokens, "n_tokens");
        if (text_len > 0) need(text, "text");
        if (capacity > 0) need(tokens, "tokens");
        const std::vector<int32_t> ids =
            tok.encode(std::string_view(text ? text : "", text_len), add_special != 0, parse_special != 0);
        *n_tokens = ids.size();
        std::copy_n(ids.begin(), std::min(capacity, ids.size()), tokens);
    });
}

MOE_API moe_status moe_detokenize(const moe_engine* engine, const int32_t* tokens, size_t n, int special, char* text,
                                  size_t capacity, size_t* n_bytes) {
    return guard("moe_detokenize", MOE_ERR_OUT_OF_RANGE, [&] {
        const moe::tokenizer& tok = need_tokenizer(engine);
        if (n > 0) need(tokens, "tokens");
        for (size_t i = 0; i < n; ++i)
            if (tokens[i] < 0 || tokens[i] >= tok.n_vocab())
                api_fail(MOE_ERR_OUT_OF_RANGE, "tokens[{}] = {} is outside the vocabulary [0, {})", i, tokens[i],
                         tok.n_vocab());
        write_text(tok.decode(std::vector<int32_t>(tokens, tokens + n), special != 0), text, capacity, n_bytes);
    });
}

MOE_API moe_status moe_token_to_piece(const moe_engine* engine, int32_t token, int special, char* text, size_t capacity,
                                      size_t* n_bytes) {
    return guard("moe_token_to_piece", MOE_ERR_OUT_OF_RANGE, [&] {
        const moe::tokenizer& tok = need_tokenizer(engine);
        write_text(tok.token_to_piece(token, special != 0), text, capacity, n_bytes);
    });
}

MOE_API moe_status moe_token_is_eog(const moe_engine* engine, int32_t token, int* is_eog) {
    return guard("moe_token_is_eog", MOE_ERR_OUT_OF_RANGE, [&] {
        const moe::tokenizer& tok = need_tokenizer(engine);
        need(is_eog, "is_eog");
        if (token < 0 || token >= tok.n_vocab())
            api_fail(MOE_ERR_OUT_OF_RANGE, "token {} is outside the vocabulary [0, {})", token, tok.n_vocab());
        *is_eog = tok.is_eog(token) ? 1 : 0;
    });
}

// ---- evaluation --------------------------------------------------------------------------------------------

MOE_API moe_status moe_engine_reset(moe_engine* engine) {
    return guard("moe_engine_reset", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(engine, "engine");
        engine->own.ses->reset();
        engine->own.last_logits = nullptr;
    });
}

MOE_API moe_status moe_engine_n_past(const moe_engine* engine, int32_t* n_past) {
    return guard("moe_engine_n_past", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(engine, "engine");
        need(n_past, "n_past");
        *n_past = engine->own.ses->n_past();
    });
}

MOE_API moe_status moe_eval(moe_engine* engine, const int32_t* tokens, size_t n, int all_positions, float* logits) {
    return guard("moe_eval", MOE_ERR_IO, [&] {
        need(engine, "engine");
        eval_sequence(engine->own, tokens, n, all_positions, logits);
    });
}

MOE_API moe_status moe_decode(moe_engine* engine, int32_t token, const float** logits) {
    return guard("moe_decode", MOE_ERR_IO, [&] {
        if (logits) *logits = nullptr;
        need(engine, "engine");
        eval_sequence(engine->own, &token, 1, 0, nullptr);
        if (logits) *logits = engine->own.last_logits;
    });
}

MOE_API moe_status moe_get_logits(const moe_engine* engine, const float** logits) {
    return guard("moe_get_logits", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(logits, "logits");
        *logits = nullptr;
        need(engine, "engine");
        if (!engine->own.last_logits)
            api_fail(MOE_ERR_NOT_READY, "no token evaluated since the engine was created or reset");
        *logits = engine->own.last_logits;
    });
}

// ---- sessions ----------------------------------------------------------------------------------------------

MOE_API moe_status moe_session_create(moe_engine* engine, int32_t n_ctx, moe_session** out) {
    return guard("moe_session_create", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(out, "out");
        *out = nullptr;
        need(engine, "engine");
        if (n_ctx < 0) api_fail(MOE_ERR_INVALID_ARGUMENT, "n_ctx is {}; expected > 0 (or 0 for the engine's)", n_ctx);
        moe::session& own = *engine->own.ses;
        auto s = std::make_unique<moe_session>();
        s->engine = engine;
        moe::session_config sc;
        sc.n_ctx = n_ctx ? n_ctx : own.n_ctx();
        sc.n_batch = engine->eng->make_session_config().n_batch;
        s->ses = std::make_unique<moe::session>(engine->eng->get_model(), engine->eng->get_offloader(), sc);
        s->seq.ses = s->ses.get();
        ++engine->n_sessions;
        *out = s.release();
    });
}

MOE_API void moe_session_destroy(moe_session* session) {
    if (!session) return;
    --session->engine->n_sessions;
    delete session;
}

MOE_API moe_status moe_session_reset(moe_session* session) {
    return guard("moe_session_reset", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(session, "session");
        session->ses->reset();
        session->seq.last_logits = nullptr;
    });
}

MOE_API moe_status moe_session_n_past(const moe_session* session, int32_t* n_past) {
    return guard("moe_session_n_past", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(session, "session");
        need(n_past, "n_past");
        *n_past = session->ses->n_past();
    });
}

MOE_API moe_status moe_session_eval(moe_session* session, const int32_t* tokens, size_t n, int all_positions,
                                    float* logits) {
    return guard("moe_session_eval", MOE_ERR_IO, [&] {
        need(session, "session");
        eval_sequence(session->seq, tokens, n, all_positions, logits);
    });
}

MOE_API moe_status moe_session_generate(moe_session* session, const int32_t* prompt, size_t n_prompt, int32_t n_predict,
                                        const moe_sampler_params* params, moe_token_callback callback, void* user,
                                        int32_t* tokens, size_t capacity, size_t* n_generated) {
    return guard("moe_session_generate", MOE_ERR_IO, [&] {
        need(session, "session");
        generate_sequence(session->seq, session->engine->tok, prompt, n_prompt, n_predict, params, callback, user,
                          tokens, capacity, n_generated);
    });
}

// ---- sampling and generation -------------------------------------------------------------------------------

MOE_API moe_status moe_sampler_params_init(moe_sampler_params* params) {
    return guard("moe_sampler_params_init", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(params, "params");
        *params = default_sampler_params();
    });
}

MOE_API moe_status moe_sampler_create(const moe_sampler_params* params, moe_sampler** out) {
    return guard("moe_sampler_create", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(out, "out");
        *out = nullptr;
        need(params, "params");
        *out = new moe_sampler{moe::sampler(sampler_config_of(params))};
    });
}

MOE_API void moe_sampler_destroy(moe_sampler* sampler) {
    delete sampler;
}

MOE_API moe_status moe_sampler_accept(moe_sampler* sampler, int32_t token) {
    return guard("moe_sampler_accept", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(sampler, "sampler");
        sampler->smp.accept(token);
    });
}

MOE_API moe_status moe_sampler_sample(moe_sampler* sampler, const float* logits, int32_t n_vocab, int32_t* token) {
    return guard("moe_sampler_sample", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(sampler, "sampler");
        need(logits, "logits");
        need(token, "token");
        if (n_vocab <= 0) api_fail(MOE_ERR_INVALID_ARGUMENT, "n_vocab is {}; expected > 0", n_vocab);
        *token = sampler->smp.sample(std::span<const float>(logits, size_t(n_vocab)));
    });
}

MOE_API moe_status moe_generate(moe_engine* engine, const int32_t* prompt, size_t n_prompt, int32_t n_predict,
                                const moe_sampler_params* params, moe_token_callback callback, void* user,
                                int32_t* tokens, size_t capacity, size_t* n_generated) {
    return guard("moe_generate", MOE_ERR_IO, [&] {
        need(engine, "engine");
        generate_sequence(engine->own, engine->tok, prompt, n_prompt, n_predict, params, callback, user, tokens,
                          capacity, n_generated);
    });
}

// ---- statistics --------------------------------------------------------------------------------------------

MOE_API moe_status moe_engine_get_stats(const moe_engine* engine, int32_t level, int32_t layer, moe_stats* stats) {
    return guard("moe_engine_get_stats", MOE_ERR_INVALID_ARGUMENT, [&] {
        need(engine, "engine");
        check_size(stats, "stats");
        const moe::engine& g = *engine->eng;
        const int32_t L = g.desc().layout.n_moe_layers;
        if (layer < -1 || layer >= L)
            api_fail(MOE_ERR_OUT_OF_RANGE, "layer {} is outside [0, {}) (or -1 for totals)", layer, L);
        moe::cache_stats cs;
        if (level == MOE_LEVEL_EXPERT)
            cs = g.stats();
        else if (level == MOE_LEVEL_HOST) {
            if (!g.has_host_tier())
                api_fail(MOE_ERR_OUT_OF_RANGE, "the engine has no host tier (options->host_budget_bytes was 0)");
            cs = g.host_stats();
        } else
            api_fail(MOE_ERR_INVALID_ARGUMENT, "level {}: expected MOE_LEVEL_EXPERT (0) or MOE_LEVEL_HOST (1)", level);
        // The prefetcher's guesses (decode steps), the same at both levels; empty with MOE_PREFETCH_NONE.
        moe::prefetcher_layer_stats ps;
        const auto pf = g.prefetch_stats();
        for (size_t l = 0; l < pf.size(); ++l)
            if (layer < 0 || size_t(layer) == l) ps += pf[l];
        moe_stats r;
        fill_stats(r, layer < 0 ? cs.total() : cs.layers[size_t(layer)], 0, ps);
        write_versioned(stats, r);
    });
}

}  // extern "C"
