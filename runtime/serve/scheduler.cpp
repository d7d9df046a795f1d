// Continuous batching (see scheduler.h).
#include "runtime/serve/scheduler.h"

#include <fmt/format.h>

#include <algorithm>
#include <random>

#include "common/error.h"
#include "common/log.h"
#include "runtime/serve/api_request.h"

namespace moe::serve {

using clock_type = std::chrono::steady_clock;

std::string_view finish_reason_name(finish_reason r) {
    switch (r) {
        case finish_reason::STOP:
            return "stop";
        case finish_reason::LENGTH:
            return "length";
        case finish_reason::CANCELLED:
            return "cancelled";
        case finish_reason::ERROR:
            return "error";
        case finish_reason::NONE:
            break;
    }
    return "";
}

namespace {

// Bytes at the end of s that start a UTF-8 character whose continuation bytes have not arrived yet.
size_t incomplete_utf8_tail(std::string_view s) {
    for (size_t back = 1; back <= std::min<size_t>(3, s.size()); ++back) {
        const unsigned char c = static_cast<unsigned char>(s[s.size() - back]);
        if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
        const size_t len = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
        return len > back ? back : 0;
    }
    return 0;
}

// Length of the longest suffix of s that is a proper prefix of some stop string (text that may still become a
// stop string and must be held back).
size_t partial_stop_suffix(std::string_view s, const std::vector<std::string>& stops) {
    size_t best = 0;
    for (const std::string& st : stops)
        for (size_t n = std::min(st.size() - 1, s.size()); n > best; --n)
            if (s.substr(s.size() - n) == std::string_view(st).substr(0, n)) {
                best = n;
                break;
            }
    return best;
}

}  // namespace

job::update job::wait_for(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(_mu);
    _cv.wait_for(lock, timeout, [&] { return _done || !_ready.empty(); });
    update u;
    u.text.swap(_ready);
    u.done = _done;
    u.reason = _reason;
    u.error = _error;
    u.n_prompt = int(_req.prompt.size());
    u.n_completion = _n_completion;
    const auto secs = [](clock_type::time_point a, clock_type::time_point b) {
        return a.time_since_epoch().count() && b >= a ? std::chrono::duration<double>(b - a).count() : 0.0;
    };
    u.queue_s = secs(_t_submit, _t_admit);
    u.prompt_s = secs(_t_admit, _t_first);
    u.decode_s = _done ? secs(_t_first, _t_end) : 0.0;
    return u;
}

void job::append_token(int token, const tokenizer& tok) {
    const size_t before = _text.size();
    _text += tok.token_to_piece(token, false);
    size_t end = _text.size();
    if (!_req.stop.empty()) {
        // A match can start up to (longest stop - 1) bytes before the new piece.
        size_t longest = 0;
        for (const std::string& s : _req.stop) longest = std::max(longest, s.size());
        const size_t from = before > longest ? before - longest : 0;
        size_t hit = std::string::npos;
        for (const std::string& s : _req.stop) hit = std::min(hit, _text.find(s, from));
        if (hit != std::string::npos) {
            _text.resize(hit);
            _stop_hit = true;
            end = hit;
        } else {
            end -= partial_stop_suffix(_text, _req.stop);
        }
    }
    if (!_stop_hit) end -= incomplete_utf8_tail(std::string_view(_text).substr(0, end));
    std::lock_guard<std::mutex> lock(_mu);
    if (_n_completion++ == 0) _t_first = clock_type::now();
    if (end > _released) {
        _ready.append(_text, _released, end - _released);
        _released = end;
    }
    _cv.notify_all();
}

void job::finish(finish_reason r, std::string error) {
    std::lock_guard<std::mutex> lock(_mu);
    if (_done) return;
    if (_released < _text.size() && r != finish_reason::CANCELLED && r != finish_reason::ERROR)
        _ready.append(_text, _released, std::string::npos);
    _released = _text.size();
    _done = true;
    _t_end = clock_type::now();
    _reason = r;
    _error = std::move(error);
    _cv.notify_all();
}

scheduler::scheduler(const model& m, offloader& off, const tokenizer& tok, const scheduler_config& cfg)
    : _m(m), _tok(tok), _cfg(cfg), _fwd(m, off, forward_config{cfg.n_ctx, cfg.n_batch, cfg.n_parallel}) {
    if (cfg.max_queue < 0) fail("serve: the queue length must be >= 0, found {}", cfg.max_queue);
    _counters.n_parallel = cfg.n_parallel;
    _slots.resize(size_t(cfg.n_parallel));
    _admit_order.assign(size_t(cfg.n_parallel), 0);
    _batch.reserve(size_t(cfg.n_parallel));
    _batch_slot.reserve(size_t(cfg.n_parallel));
    _thread = std::thread([this] { loop(); });
}

scheduler::~scheduler() {
    {
        std::lock_guard<std::mutex> lock(_mu);
        _quit = true;
        _cancel_all = true;
    }
    _cv.notify_all();
    _thread.join();
}

std::shared_ptr<job> scheduler::submit(job_request r) {
    const int n_prompt = int(r.prompt.size());
    if (n_prompt == 0) throw invalid_request("the prompt encodes to no tokens", "prompt");
    for (int t : r.prompt)
        if (t < 0 || t >= _m.desc().n_vocab)
            throw invalid_request(fmt::format("token id {} is outside the vocabulary [0, {})", t, _m.desc().n_vocab),
                                  "prompt");
    if (n_prompt + 1 > _cfg.n_ctx)
        throw invalid_request(fmt::format("the prompt has {} tokens; the context of {} positions leaves no room to "
                                          "generate (start the server with a larger --ctx)",
                                          n_prompt, _cfg.n_ctx),
                              "messages", "context_length_exceeded");
    if (r.max_tokens < 0) throw invalid_request("'max_tokens' must be at least 1", "max_tokens");
    if (r.max_tokens > 0 && int64_t(n_prompt) + r.max_tokens > _cfg.n_ctx)
        throw invalid_request(fmt::format("the prompt ({} tokens) plus max_tokens ({}) exceeds the context of {} "
                                          "positions; ask for at most {} tokens",
                                          n_prompt, r.max_tokens, _cfg.n_ctx, _cfg.n_ctx - n_prompt),
                              "max_tokens", "context_length_exceeded");
    try {
        sampler probe(r.sampling);  // throws moe::error for values the sampler refuses
    } catch (const error& e) {
        throw invalid_request(e.what());
    }
    auto j = std::make_shared<job>(std::move(r));
    {
        std::lock_guard<std::mutex> lock(_mu);
        if (_draining.load()) {
            ++_counters.refused;
            throw api_error(503, "unavailable", "the server is shutting down and accepts no new requests");
        }
        // Requests beyond the free slots wait; at most max_queue of them.
        const int free_slots = std::max(0, _cfg.n_parallel - _counters.active);
        if (int(_queue.size()) >= _cfg.max_queue + free_slots) {
            ++_counters.refused;
            throw api_error(429, "rate_limit_error",
                            fmt::format("the server is busy: {} requests running and {} waiting (the limit); retry "
                                        "later",
                                        _cfg.n_parallel, _cfg.max_queue));
        }
        _queue.push_back(j);
        ++_counters.requests;
        _counters.queued = int(_queue.size());
    }
    _cv.notify_all();
    return j;
}

void scheduler::drain() {
    std::lock_guard<std::mutex> lock(_mu);
    _draining.store(true);
}

bool scheduler::idle() const {
    std::lock_guard<std::mutex> lock(_mu);
    return _queue.empty() && _counters.active == 0;
}

void scheduler::cancel_all() {
    {
        std::lock_guard<std::mutex> lock(_mu);
        _cancel_all = true;
    }
    _cv.notify_all();
}

scheduler_metrics scheduler::metrics() const {
    std::lock_guard<std::mutex> lock(_mu);
    scheduler_metrics m = _counters;
    m.queued = int(_queue.size());
    if (_rate_window.size() >= 2) {
        const double dt = std::chrono::duration<double>(_rate_window.back().first - _rate_window.front().first).count();
        if (dt > 0) m.recent_tokens_per_s = double(_rate_window.back().second - _rate_window.front().second) / dt;
    }
    return m;
}

void scheduler::release(std::shared_ptr<job> j, finish_reason r, std::string error) {
    if (j->_slot >= 0) {
        _fwd.reset(j->_slot);
        _slots[size_t(j->_slot)].reset();
        j->_slot = -1;
    }
    {
        // Counted before the job says it is done, so whoever waited for it sees the counters include it.
        std::lock_guard<std::mutex> lock(_mu);
        ++(r == finish_reason::CANCELLED ? _counters.cancelled
           : r == finish_reason::ERROR   ? _counters.failed
                                         : _counters.finished);
        _counters.active = int(std::count_if(_slots.begin(), _slots.end(), [](const auto& s) { return bool(s); }));
    }
    j->finish(r, std::move(error));
}

void scheduler::loop() {
    while (true) {
        {
            std::unique_lock<std::mutex> lock(_mu);
            _cv.wait(lock, [&] {
                return _quit || _cancel_all || !_queue.empty() ||
                       std::any_of(_slots.begin(), _slots.end(), [](const auto& s) { return bool(s); });
            });
            if (_cancel_all) {
                _cancel_all = false;
                std::deque<std::shared_ptr<job>> queued;
                queued.swap(_queue);
                lock.unlock();
                for (auto& j : queued) j->finish(finish_reason::CANCELLED);
                for (auto& s : _slots)
                    if (s) release(s, finish_reason::CANCELLED);
                lock.lock();
                _counters.cancelled += queued.size();
            }
            if (_quit) return;
        }
        drop_cancelled();
        admit();
        if (std::any_of(_slots.begin(), _slots.end(), [](const auto& s) { return bool(s); })) step();
    }
}

void scheduler::drop_cancelled() {
    for (auto& s : _slots)
        if (s && s->cancelled()) release(s, finish_reason::CANCELLED);
}

void scheduler::admit() {
    while (true) {
        std::shared_ptr<job> j;
        size_t free_slot = _slots.size();
        for (size_t i = 0; i < _slots.size(); ++i)
            if (!_slots[i]) {
                free_slot = i;
                break;
            }
        {
            std::lock_guard<std::mutex> lock(_mu);
            // Requests cancelled while waiting leave the queue without a slot.
            while (!_queue.empty() && _queue.front()->cancelled()) {
                _queue.front()->finish(finish_reason::CANCELLED);
                _queue.pop_front();
                ++_counters.cancelled;
            }
            if (free_slot == _slots.size() || _queue.empty()) return;
            j = _queue.front();
            _queue.pop_front();
            _counters.queued = int(_queue.size());
        }
        sampler_config sc = j->_req.sampling;
        j->_smp.emplace(sc);
        for (int t : j->_req.prompt) j->_smp->accept(t);
        j->_slot = int(free_slot);
        {
            std::lock_guard<std::mutex> jl(j->_mu);
            j->_t_admit = clock_type::now();
        }
        _fwd.reset(j->_slot);
        _slots[free_slot] = j;
        _admit_order[free_slot] = _admitted++;
        std::lock_guard<std::mutex> lock(_mu);
        ++_counters.active;
    }
}

// One forward step: a decode row for every job that has sampled a token, then prompt chunks of the jobs still
// prefilling, oldest first, as far as n_batch rows go.
void scheduler::step() {
    _batch.clear();
    _batch_slot.clear();
    int rows = 0;
    for (size_t i = 0; i < _slots.size(); ++i) {
        job* j = _slots[i].get();
        if (j && j->_n_fed == j->_req.prompt.size() && rows < _cfg.n_batch) {
            _batch.push_back(seq_tokens{int(i), std::span<const int>(&j->_last, 1)});
            _batch_slot.push_back(int(i));
            ++rows;
        }
    }
    std::vector<size_t> prefilling;
    for (size_t i = 0; i < _slots.size(); ++i)
        if (_slots[i] && _slots[i]->_n_fed < _slots[i]->_req.prompt.size()) prefilling.push_back(i);
    std::sort(prefilling.begin(), prefilling.end(),
              [&](size_t a, size_t b) { return _admit_order[a] < _admit_order[b]; });
    for (size_t i : prefilling) {
        if (rows >= _cfg.n_batch) break;
        job* j = _slots[i].get();
        const size_t n = std::min(j->_req.prompt.size() - j->_n_fed, size_t(_cfg.n_batch - rows));
        _batch.push_back(seq_tokens{int(i), std::span<const int>(j->_req.prompt).subspan(j->_n_fed, n)});
        _batch_slot.push_back(int(i));
        rows += int(n);
    }
    if (_batch.empty()) return;

    const auto t0 = clock_type::now();
    const float* logits = nullptr;
    try {
        logits = _fwd.eval_batch(_batch);
    } catch (const std::exception& e) {
        // An expert load failed (an I/O error): the step's requests fail with the message, the others go on.
        log(log_level::error, "serve: a forward step failed: {}", e.what());
        for (int s : _batch_slot)
            if (_slots[size_t(s)]) release(_slots[size_t(s)], finish_reason::ERROR, e.what());
        return;
    }
    const double dt = std::chrono::duration<double>(clock_type::now() - t0).count();
    const size_t V = size_t(_m.desc().n_vocab);
    uint64_t n_prompt = 0, n_generated = 0;
    for (size_t b = 0; b < _batch.size(); ++b) {
        const std::shared_ptr<job> j = _slots[size_t(_batch_slot[b])];
        const bool was_prefill = j->_n_fed < j->_req.prompt.size();
        if (was_prefill) {
            j->_n_fed += _batch[b].tokens.size();
            n_prompt += _batch[b].tokens.size();
            if (j->_n_fed < j->_req.prompt.size()) continue;  // more of the prompt to come
        }
        sample(*j, logits + b * V);
        ++n_generated;
    }
    std::lock_guard<std::mutex> lock(_mu);
    ++_counters.steps;
    _counters.step_rows += uint64_t(rows);
    _counters.step_seconds += dt;
    _counters.prompt_tokens += n_prompt;
    _counters.generated_tokens += n_generated;
    const auto now = clock_type::now();
    _rate_window.emplace_back(now, _counters.generated_tokens);
    while (_rate_window.size() > 2 && now - _rate_window.front().first > std::chrono::seconds(10))
        _rate_window.pop_front();
}

// Samples the job's next token from its logits and decides whether it goes on (as session::generate does:
// an end-of-generation token ends it unsent; max_tokens, a stop string or a full context end it after the token).
void scheduler::sample(job& j, const float* logits) {
    const std::shared_ptr<job> self = _slots[size_t(j._slot)];
    const int next = j._smp->sample(std::span<const float>(logits, size_t(_m.desc().n_vocab)));
    if (!j._req.ignore_eos && _tok.is_eog(next)) {
        release(self, finish_reason::STOP);
        return;
    }
    j._smp->accept(next);
    j.append_token(next, _tok);
    const int n_generated = j._n_completion;
    if (j.stop_matched()) {
        release(self, finish_reason::STOP);
    } else if (j._req.max_tokens > 0 && n_generated >= j._req.max_tokens) {
        release(self, finish_reason::LENGTH);
    } else if (int(j._req.prompt.size()) + n_generated >= _cfg.n_ctx) {
        release(self, finish_reason::LENGTH);
    } else {
        j._last = next;
    }
}

}  // namespace moe::serve
