// Continuous batching for `moe serve`: up to n_parallel requests decode together on one model and one expert
// cache. Each request owns a sequence of one forward pass (runtime/forward.h, n_seq = n_parallel: its own KV
// cache) and its own sampler; every step of the scheduler's thread advances each running request by one token and
// feeds waiting prompts into the rest of the batch (n_batch rows), so an expert loaded for a step serves every
// request that routes to it. A request's tokens do not depend on what else runs: on the CPU its logits are
// bit-identical to a lone session's (forward_batch_test), so its greedy (or seeded) output is too.
//
// More requests than slots wait in a bounded queue (submit refuses with 429 when it is full, 503 once draining).
// A client that goes away cancels its job; the scheduler frees the slot at its next step.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "runtime/forward.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer.h"

namespace moe::serve {

struct scheduler_config {
    int n_parallel = 4;  // requests decoding at once (sequences of the forward pass)
    int n_ctx = 2048;    // positions per request: prompt + generated
    int n_batch = 32;    // rows of one forward step (decode rows + prompt chunks)
    int max_queue = 16;  // requests waiting for a slot; more are refused with 429
};

enum class finish_reason { NONE, STOP, LENGTH, CANCELLED, ERROR };
std::string_view finish_reason_name(finish_reason r);  // "stop", "length", "cancelled", "error" ("" for NONE)

struct job_request {
    std::vector<int> prompt;        // token ids, at least one
    int max_tokens = 0;             // 0: until the context is full
    sampler_config sampling;        // its own sampler; one seed gives the same tokens alone or batched
    std::vector<std::string> stop;  // stop strings: the text ends before the first match, which is not sent
    bool ignore_eos = false;        // an end-of-generation token is sampled and sent like any other (benchmarks)
};

// One request's progress, shared between the scheduler thread (which produces it) and the HTTP handler (which
// streams it). Text is released only when it can no longer become part of a stop string and ends on a whole
// UTF-8 character.
class job {
public:
    explicit job(job_request r) : _req(std::move(r)) {}

    struct update {
        std::string text;  // new text since the last update
        bool done = false;
        finish_reason reason = finish_reason::NONE;
        std::string error;  // with ERROR
        int n_prompt = 0, n_completion = 0;
        double queue_s = 0.0;   // submitted -> given a slot
        double prompt_s = 0.0;  // given a slot -> first token sampled (prefill)
        double decode_s = 0.0;  // first token -> last token (0 until done)
    };
    // Waits up to `timeout` for new text or the end; takes what arrived.
    update wait_for(std::chrono::milliseconds timeout);
    // The client went away: the scheduler drops the request at its next step (a finished job ignores it).
    void cancel() { _cancelled.store(true); }
    bool cancelled() const { return _cancelled.load(); }
    const job_request& request() const { return _req; }

private:
    friend class scheduler;
    // Scheduler side.
    void append_token(int token, const tokenizer& tok);  // adds its text and releases what is safe
    bool stop_matched() const { return _stop_hit; }
    void finish(finish_reason r, std::string error = {});  // releases the rest of the text

    job_request _req;
    std::atomic<bool> _cancelled{false};
    mutable std::mutex _mu;
    std::condition_variable _cv;
    std::string _ready;  // released, not yet taken by the handler
    bool _done = false;
    finish_reason _reason = finish_reason::NONE;
    std::string _error;
    int _n_completion = 0;
    std::chrono::steady_clock::time_point _t_submit = std::chrono::steady_clock::now(), _t_admit, _t_first, _t_end;

    // Only the scheduler thread touches these.
    std::optional<sampler> _smp;
    int _slot = -1;
    size_t _n_fed = 0;     // prompt tokens evaluated
    int _last = -1;        // the sampled token the next decode step evaluates
    std::string _text;     // the whole completion text so far
    size_t _released = 0;  // bytes of _text released
    bool _stop_hit = false;
};

// What the scheduler has done, for /metrics and `moe bench serve`.
struct scheduler_metrics {
    int n_parallel = 0, active = 0, queued = 0;
    uint64_t requests = 0, finished = 0, cancelled = 0, failed = 0, refused = 0;
    uint64_t prompt_tokens = 0, generated_tokens = 0;
    uint64_t steps = 0, step_rows = 0;
    double step_seconds = 0.0;         // time inside forward steps
    double recent_tokens_per_s = 0.0;  // generated tokens per second over the last ~10 s
};

class scheduler {
public:
    // The model, offloader and tokenizer must outlive the scheduler. Allocates the forward pass (n_parallel KV
    // caches) and starts the thread.
    scheduler(const model& m, offloader& off, const tokenizer& tok, const scheduler_config& cfg);
    ~scheduler();  // cancels everything and joins the thread
    scheduler(const scheduler&) = delete;
    scheduler& operator=(const scheduler&) = delete;

    // Queues a request. Throws api_error: 400 when the prompt (with max_tokens) does not fit the context or holds
    // a token outside the vocabulary, 429 when the queue is full, 503 once drain() was called.
    std::shared_ptr<job> submit(job_request r);
    // Stops accepting requests (submit answers 503); running and queued ones go on.
    void drain();
    bool draining() const { return _draining.load(); }
    // No request running or queued.
    bool idle() const;
    // Ends every running and queued request as cancelled.
    void cancel_all();

    scheduler_metrics metrics() const;
    const scheduler_config& config() const { return _cfg; }
    // Bytes of the KV caches and workspaces of the forward pass.
    uint64_t workspace_bytes() const { return _fwd.workspace_bytes(); }
    const forward_pass& forward() const { return _fwd; }

private:
    void loop();
    void admit();  // moves queued jobs into free slots
    void drop_cancelled();
    void step();  // one forward step over the running jobs
    void release(std::shared_ptr<job> j, finish_reason r, std::string error = {});  // by value: j may be a slot
    void sample(job& j, const float* logits);

    const model& _m;
    const tokenizer& _tok;
    scheduler_config _cfg;
    forward_pass _fwd;

    mutable std::mutex _mu;  // guards the queue, the flags and the counters below
    std::condition_variable _cv;
    std::deque<std::shared_ptr<job>> _queue;
    bool _quit = false;
    std::atomic<bool> _draining{false};
    bool _cancel_all = false;
    scheduler_metrics _counters;
    std::deque<std::pair<std::chrono::steady_clock::time_point, uint64_t>> _rate_window;  // (time, generated)

    // Only the scheduler thread touches these.
    std::vector<std::shared_ptr<job>> _slots;  // (n_parallel) running job of each sequence, or null
    uint64_t _admitted = 0;
    std::vector<uint64_t> _admit_order;  // (n_parallel) admission number of each slot's job (prompt order)
    std::vector<seq_tokens> _batch;
    std::vector<int> _batch_slot;

    std::thread _thread;  // last: starts once everything above exists
};

}  // namespace moe::serve
