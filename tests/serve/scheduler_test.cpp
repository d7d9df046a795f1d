// The serving scheduler: requests decoded together (continuous batching, prompts joining while others decode)
// produce exactly what a lone session produces for each of them, greedy and seeded, at the smallest expert budget;
// stop strings cut the text where the string starts; a full queue, a draining server, a prompt or max_tokens that
// does not fit the context are refused with their status; a cancelled request frees its slot.
#include "runtime/serve/scheduler.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "runtime/engine.h"
#include "runtime/serve/api_request.h"

namespace moe::serve {
namespace {

using namespace std::chrono_literals;

const std::string k_model = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/mixtral-tiny-f32.gguf";

struct fixture {
    engine_config cfg;
    model m;
    offloader off;
    tokenizer tok;
    explicit fixture(uint64_t budget)
        : cfg(make_cfg(budget)),
          m(k_model, model_config_of(cfg)),
          off(offload_layout_of(m.file(), m.desc()), offload_config_of(cfg, m)),
          tok(tokenizer::from_model_file(m.file())) {}
    static engine_config make_cfg(uint64_t budget) {
        engine_config c;
        c.n_ctx = 64;
        c.expert_budget_bytes = budget;
        return c;
    }
};

std::vector<std::string> prompts() {
    return {"Hello world", "The quick brown fox", "In the beginning",        "Once upon a time there was",
            "a",           "Numbers: 1 2 3 4",    "MoE models route tokens", "Goodbye"};
}

std::vector<int> encode(const tokenizer& tok, const std::string& text) {
    std::vector<int> ids;
    for (int32_t t : tok.encode(text, true, false)) ids.push_back(int(t));
    return ids;
}

// What a lone session generates, as the text the server would send.
std::string lone_text(fixture& fx, const std::vector<int>& prompt, int n, const sampler_config& sc) {
    session s(fx.m, fx.off, session_config{64, 32});
    s.set_sampler(sc);
    const generation g = s.generate(prompt, n, &fx.tok, {});
    std::string text;
    for (int t : g.tokens) text += fx.tok.token_to_piece(t, false);
    return text;
}

job::update wait_done(const std::shared_ptr<job>& j, std::string& text) {
    job::update u;
    do {
        u = j->wait_for(1s);
        text += u.text;
    } while (!u.done);
    return u;
}

void check_batched_equals_lone(int n_parallel, const sampler_config& sc) {
    fixture fx(engine::min_budget_for(describe_model(open_model_file(k_model))));
    std::vector<std::string> want;
    for (const std::string& p : prompts()) want.push_back(lone_text(fx, encode(fx.tok, p), 12, sc));
    const uint64_t evictions_before = fx.off.stats().total().evictions;

    scheduler_config cfg;
    cfg.n_parallel = n_parallel;
    cfg.n_ctx = 64;
    cfg.n_batch = 8;  // long prompts are fed in chunks beside other requests' decode rows
    scheduler sched(fx.m, fx.off, fx.tok, cfg);
    std::vector<std::shared_ptr<job>> jobs;
    for (const std::string& p : prompts()) {
        job_request r;
        r.prompt = encode(fx.tok, p);
        r.max_tokens = 12;
        r.sampling = sc;
        jobs.push_back(sched.submit(std::move(r)));
    }
    for (size_t i = 0; i < jobs.size(); ++i) {
        std::string text;
        const job::update u = wait_done(jobs[i], text);
        EXPECT_EQ(text, want[i]) << "request " << i << " with " << n_parallel << " in parallel";
        EXPECT_TRUE(u.reason == finish_reason::LENGTH || u.reason == finish_reason::STOP);
    }
    const scheduler_metrics m = sched.metrics();
    EXPECT_EQ(m.finished, jobs.size());
    EXPECT_EQ(m.active, 0);
    if (n_parallel > 1) {
        EXPECT_GT(m.step_rows, m.steps) << "steps should have carried several requests";
    }
    EXPECT_GT(fx.off.stats().total().evictions, evictions_before) << "the budget was meant to make them compete";
}

TEST(scheduler, greedy_requests_batched_match_a_lone_session) {
    check_batched_equals_lone(8, sampler_config{});
    check_batched_equals_lone(3, sampler_config{});  // more requests than slots: they queue
}

TEST(scheduler, seeded_sampling_batched_matches_a_lone_session) {
    sampler_config sc;
    sc.temperature = 0.9f;
    sc.top_k = 40;
    sc.top_p = 0.95f;
    sc.seed = 1234;
    check_batched_equals_lone(4, sc);
}

TEST(scheduler, a_stop_string_ends_the_text_before_it) {
    fixture fx(0);
    const std::vector<int> prompt = encode(fx.tok, "Hello world");
    const std::string full = lone_text(fx, prompt, 16, sampler_config{});
    ASSERT_GE(full.size(), 6u);
    // A stop string starting in the middle of the text (possibly across token boundaries).
    const size_t at = full.size() / 2;
    const std::string stop = full.substr(at, 3);
    const size_t first = full.find(stop);
    scheduler_config cfg;
    cfg.n_ctx = 64;
    scheduler sched(fx.m, fx.off, fx.tok, cfg);
    job_request r;
    r.prompt = prompt;
    r.max_tokens = 16;
    r.stop = {"never appears here", stop};
    std::string text;
    const job::update u = wait_done(sched.submit(std::move(r)), text);
    EXPECT_EQ(text, full.substr(0, first));
    EXPECT_EQ(u.reason, finish_reason::STOP);
}

TEST(scheduler, refusals_carry_their_status) {
    fixture fx(0);
    scheduler_config cfg;
    cfg.n_parallel = 1;
    cfg.n_ctx = 16;
    cfg.max_queue = 1;
    scheduler sched(fx.m, fx.off, fx.tok, cfg);
    const auto status_of = [&](job_request r) {
        try {
            sched.submit(std::move(r));
        } catch (const api_error& e) {
            return e.status;
        }
        return 200;
    };
    job_request too_long;
    too_long.prompt.assign(16, 1);
    EXPECT_EQ(status_of(too_long), 400);
    job_request too_many;
    too_many.prompt = {1, 2, 3};
    too_many.max_tokens = 14;
    EXPECT_EQ(status_of(too_many), 400);
    job_request bad_token;
    bad_token.prompt = {1, fx.m.desc().n_vocab};
    EXPECT_EQ(status_of(bad_token), 400);
    job_request bad_sampling;
    bad_sampling.prompt = {1};
    bad_sampling.sampling.top_p = 0.0f;
    EXPECT_EQ(status_of(bad_sampling), 400);
    sched.drain();
    job_request ok;
    ok.prompt = {1, 2};
    EXPECT_EQ(status_of(ok), 503);
    EXPECT_EQ(sched.metrics().refused, 1u);
}

TEST(scheduler, a_full_queue_refuses_with_429_and_cancelled_requests_free_their_slot) {
    fixture fx(0);
    scheduler_config cfg;
    cfg.n_parallel = 1;
    cfg.n_ctx = 4096;  // long enough to still be running when cancelled
    cfg.max_queue = 1;
    scheduler sched(fx.m, fx.off, fx.tok, cfg);
    job_request r;
    r.prompt = {1, 2, 3};
    r.ignore_eos = true;  // runs until the 4096-position context is full: still running when cancelled
    auto running = sched.submit(r);
    // Wait until the first one holds the slot, then fill the queue.
    while (sched.metrics().active == 0) std::this_thread::sleep_for(1ms);
    auto queued = sched.submit(r);
    try {
        sched.submit(r);
        ADD_FAILURE() << "a third request should not fit";
    } catch (const api_error& e) {
        EXPECT_EQ(e.status, 429);
    }
    queued->cancel();
    running->cancel();
    std::string text;
    EXPECT_EQ(wait_done(running, text).reason, finish_reason::CANCELLED);
    EXPECT_EQ(wait_done(queued, text).reason, finish_reason::CANCELLED);
    for (int i = 0; i < 1000 && !sched.idle(); ++i) std::this_thread::sleep_for(1ms);
    EXPECT_TRUE(sched.idle());
    EXPECT_EQ(sched.metrics().cancelled, 2u);
    // The slot serves the next request.
    r.max_tokens = 4;
    text.clear();
    EXPECT_EQ(wait_done(sched.submit(r), text).reason, finish_reason::LENGTH);
}

}  // namespace
}  // namespace moe::serve
