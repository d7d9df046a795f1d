// A session (see session.h): chunked evaluation and the generation loop.
#include "runtime/session.h"

#include <algorithm>
#include <chrono>

#include "common/error.h"

namespace moe {

namespace {
using clock_type = std::chrono::steady_clock;
double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}
}  // namespace

session::session(const model& m, offloader& off, const session_config& cfg)
    : _m(m), _cfg(cfg), _fwd(m, off, forward_config{cfg.n_ctx, cfg.n_batch}) {}

const float* session::eval(std::span<const int> tokens, float* all_logits) {
    return eval_chunks(tokens, all_logits, generate_hooks{});
}

const float* session::eval_chunks(std::span<const int> tokens, float* all_logits, const generate_hooks& hooks) {
    if (tokens.empty()) fail("{}: evaluation of an empty token sequence", _m.desc().name);
    const size_t B = size_t(_cfg.n_batch), V = size_t(_m.desc().n_vocab);
    const float* last = nullptr;
    for (size_t i = 0; i < tokens.size(); i += B) {
        if (hooks.stop && hooks.stop->load(std::memory_order_relaxed)) return nullptr;
        const size_t n = std::min(B, tokens.size() - i);
        last = _fwd.eval(tokens.subspan(i, n), all_logits ? all_logits + i * V : nullptr);
        if (hooks.prefill_progress) hooks.prefill_progress(i + n, tokens.size());
    }
    return last;
}

void session::logits(std::span<const int> tokens, std::span<float> out) {
    MOE_CHECK(out.size() >= tokens.size() * size_t(_m.desc().n_vocab));
    reset();
    eval(tokens, out.data());
}

generation session::generate(std::span<const int> prompt, int n_predict, const tokenizer* tok, const token_fn& on_token,
                             generation* partial, const generate_hooks& hooks) {
    generation g;
    generation& out = partial ? *partial : g;
    out = generation{};
    if (prompt.empty()) fail("{}: generation needs a prompt of at least one token", _m.desc().name);
    if (n_predict <= 0) fail("{}: generation of {} tokens: expected at least 1", _m.desc().name, n_predict);
    if (int(prompt.size()) + 1 > _cfg.n_ctx)
        fail("{}: the prompt has {} tokens; a context of {} positions leaves no room to generate", _m.desc().name,
             prompt.size(), _cfg.n_ctx);
    sampler smp(_sampler_cfg);
    for (int t : prompt) smp.accept(t);
    reset();
    out.n_prompt = prompt.size();
    const auto stop = [&] { return hooks.stop && hooks.stop->load(std::memory_order_relaxed); };
    const auto t_prompt = clock_type::now();
    const float* logits = eval_chunks(prompt, nullptr, hooks);
    out.prompt_s = seconds_since(t_prompt);
    if (!logits) {
        out.interrupted = true;
        return out;
    }
    out.prefill_done = true;

    const size_t V = size_t(_m.desc().n_vocab);
    while (true) {
        const int next = smp.sample(std::span<const float>(logits, V));
        if (tok && tok->is_eog(next)) {
            out.stopped_eog = true;
            break;
        }
        out.tokens.push_back(next);
        smp.accept(next);
        if (on_token && !on_token(next)) {
            out.stopped_by_caller = true;
            break;
        }
        if (int(out.tokens.size()) >= n_predict) break;
        if (int(prompt.size() + out.tokens.size()) >= _cfg.n_ctx) {
            out.context_full = true;
            break;
        }
        if (stop()) {
            out.interrupted = true;
            break;
        }
        const auto t0 = clock_type::now();
        logits = decode(next);
        out.decode_s += seconds_since(t0);
        ++out.n_decoded;
    }
    return out;
}

}  // namespace moe
