// A session: one conversation on a shared model and offloader. It owns what is per conversation: the KV cache and
// the workspaces (its forward pass), the sampler, and its own statistics. Any number of sessions run on one model
// (whose resident weights exist once) and one offloader (one expert cache, whose loaded experts serve every
// session); a session's output is identical to what it would be alone, because each expert's product depends only
// on the session's own tokens and the routing, never on what is resident.
//
// The generation loop lives here once (generate()): `moe run`, `moe bench run` and the C API all call it.
//
// Thread safety: one session is driven by one thread at a time; different sessions may be driven from different
// threads (their forward steps take the model's compute lock and run one after another).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "runtime/forward.h"
#include "runtime/sampler.h"

namespace moe {

struct session_config {
    int n_ctx = 256;   // KV cache positions
    int n_batch = 32;  // prefill chunk: tokens evaluated together (each expert loaded once per chunk and layer)
};

// What a generation produced and how long it took.
struct generation {
    std::vector<int> tokens;         // generated, end-of-generation token excluded
    bool stopped_eog = false;        // stopped at an end-of-generation token
    bool context_full = false;       // stopped because the context was full
    bool stopped_by_caller = false;  // on_token asked to stop
    bool interrupted = false;        // generate_hooks::stop was raised (a signal): stopped between two steps
    bool prefill_done = false;       // the whole prompt was evaluated
    uint64_t n_prompt = 0;
    uint64_t n_decoded = 0;  // decode steps (the last generated token is sampled, never evaluated)
    double prompt_s = 0.0, decode_s = 0.0;
};

// Optional hooks of a generation.
struct generate_hooks {
    // Polled between prefill chunks and before each decode step; when it reads true, generation stops there with
    // generation::interrupted set (a signal handler raises it).
    const std::atomic<bool>* stop = nullptr;
    // Told after each prefill chunk: prompt tokens evaluated so far, of the total.
    std::function<void(size_t done, size_t total)> prefill_progress;
};

class session {
public:
    // The model and offloader must outlive the session. Allocates the KV cache and workspaces in backend memory.
    session(const model& m, offloader& off, const session_config& cfg);

    const model& owner() const { return _m; }
    // Forgets the sequence (the KV cache is reused from position 0; the expert cache keeps what it holds).
    void reset() { _fwd.reset(); }
    int n_past() const { return _fwd.n_past(); }
    int n_ctx() const { return _cfg.n_ctx; }
    // Decodes one token at the next position; returns n_vocab logits, valid until the next call.
    const float* decode(int token) { return _fwd.decode(token); }
    // Evaluates `tokens` after what the sequence holds, in chunks of n_batch; returns the last token's logits and,
    // when all_logits is not null, writes every position's logits there (tokens.size(), n_vocab). Bit-identical
    // to decoding them one by one on the CPU.
    const float* eval(std::span<const int> tokens, float* all_logits = nullptr);
    // Resets, then evaluates `tokens` writing every position's logits to out (tokens.size(), n_vocab).
    void logits(std::span<const int> tokens, std::span<float> out);

    // The sampler generate() uses (reset to `cfg` at the start of each generation).
    void set_sampler(const sampler_config& cfg) { _sampler_cfg = cfg; }
    const sampler_config& sampler_settings() const { return _sampler_cfg; }
    // Told each generated token; return false to stop after it.
    using token_fn = std::function<bool(int token)>;
    // Resets, prefills `prompt` and samples up to n_predict tokens, stopping early at an end-of-generation token
    // of `tok` (when given) or a full context. Exceptions (a failed expert load, ...) propagate; what was generated
    // before is in `partial` when it is not null.
    generation generate(std::span<const int> prompt, int n_predict, const tokenizer* tok, const token_fn& on_token,
                        generation* partial = nullptr, const generate_hooks& hooks = {});

    // Bytes of the KV cache and the workspaces (what this session adds to the compute memory).
    uint64_t workspace_bytes() const { return _fwd.workspace_bytes(); }
    const forward_stats& stats() const { return _fwd.stats(); }
    void set_routing_observer(routing_observer obs) { _fwd.set_routing_observer(std::move(obs)); }
    // Benchmarks only: replaces the router's choice of experts (see routing_override in forward.h; trace_routing.h
    // makes one that replays a recorded trace). An empty function restores the router.
    void set_routing_override(routing_override ovr) { _fwd.set_routing_override(std::move(ovr)); }

private:
    // eval in chunks of n_batch, telling hooks.prefill_progress after each; nullptr when hooks.stop was raised
    // before the last chunk.
    const float* eval_chunks(std::span<const int> tokens, float* all_logits, const generate_hooks& hooks);

    const model& _m;
    session_config _cfg;
    forward_pass _fwd;
    sampler_config _sampler_cfg;
};

}  // namespace moe
