// `moe serve -m MODEL [--host 127.0.0.1] [--port 8080] [--parallel N] [--ctx N] [--vram-budget X] ...`: an
// OpenAI-compatible HTTP server (runtime/serve) over one model and one expert cache, with continuous batching of
// up to --parallel conversations. The budget is planned as `moe run` plans it, with one KV cache per parallel
// slot. SIGINT/SIGTERM: stop accepting, let running requests finish within --shutdown-timeout (then cancel them),
// exit 0.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>

#include "common/error.h"
#include "common/units.h"
#include "runtime/chat_template.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/cli/plan_budget.h"
#include "runtime/cli/progress.h"
#include "runtime/cpu_dot.h"
#include "runtime/engine.h"
#include "runtime/run_stats.h"
#include "runtime/serve/scheduler.h"
#include "runtime/serve/server.h"
#include "runtime/tokenizer.h"

namespace moe::cli {
namespace {

struct serve_flags {
    std::string model_path, host = "127.0.0.1", api_key, alias, budget_text, host_budget_text, policy = "lru";
    std::string prefetch = "none", backend_text = "auto";
    int port = 8080, n_parallel = 4, n_ctx = 0, n_batch = 32, max_queue = 16, n_threads = 1, io_timeout = 30;
    int prefetch_depth = 1, prefetch_k = 0;
    double shutdown_timeout = 10.0;
    size_t max_body = 4u << 20;
};

std::optional<int> parse_serve_flags(int argc, char** argv, serve_flags& f) {
    CLI::App app{
        "Serve a Mixture-of-Experts model over an OpenAI-compatible HTTP API (/v1/chat/completions, "
        "/v1/completions, /v1/models, /health, /metrics), decoding up to --parallel requests together on one "
        "expert cache.",
        "moe serve"};
    app.add_option("-m,--model", f.model_path,
                   "model file: .gguf (first shard of a split set), .safetensors, or a "
                   "directory")
        ->required();
    app.add_option("--host", f.host, "address to listen on (loopback by default; 0.0.0.0 for every interface)")
        ->capture_default_str();
    app.add_option("--port", f.port, "TCP port (0: any free port, printed)")
        ->check(CLI::Range(0, 65535))
        ->capture_default_str();
    app.add_option("--parallel", f.n_parallel, "requests decoded together (each its own KV cache of --ctx)")
        ->check(CLI::Range(1, 256))
        ->capture_default_str();
    app.add_option("--ctx", f.n_ctx,
                   "context of each request (prompt + generated; KV cache positions per parallel slot). Default: "
                   "the model's trained context, at most 4096");
    app.add_option("-b,--batch-size", f.n_batch, "token rows of one forward step (decode rows plus prompt chunks)")
        ->check(CLI::Range(1, 4096))
        ->capture_default_str();
    app.add_option("--queue", f.max_queue, "requests that may wait for a slot; more are refused with 429")
        ->check(CLI::Range(0, 1 << 16))
        ->capture_default_str();
    app.add_option("--api-key", f.api_key, "require 'Authorization: Bearer KEY' on the /v1 routes");
    app.add_option("-a,--alias", f.alias, "the model name /v1/models lists (default: the model file's name)");
    app.add_option("--vram-budget", f.budget_text,
                   "the whole compute memory the server may use (resident weights, --parallel KV caches, "
                   "workspaces, then expert slots), e.g. 8G; default: sized from free memory");
    app.add_option("--host-budget", f.host_budget_text, "pinned host RAM for a second level of expert slots, e.g. 32G");
    app.add_option("--policy", f.policy, "eviction policy of the expert cache")->capture_default_str();
    app.add_option("--prefetch", f.prefetch, "none, spec, history or both (docs/prefetch.md)")
        ->check(CLI::IsMember({"none", "spec", "history", "both"}))
        ->capture_default_str();
    app.add_option("--prefetch-depth", f.prefetch_depth, "MoE layers predicted ahead")
        ->check(CLI::Range(1, 1 << 16))
        ->capture_default_str();
    app.add_option("--prefetch-k", f.prefetch_k, "experts guessed per predicted layer (0 = top-k)")
        ->check(CLI::Range(0, 1 << 16))
        ->capture_default_str();
    app.add_option("--backend", f.backend_text, "cuda, cpu or auto")
        ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
        ->capture_default_str();
    app.add_option("-t,--threads", f.n_threads, "CPU threads for the matrix products (0 = one per hardware thread)")
        ->check(CLI::Range(0, 4096))
        ->capture_default_str();
    app.add_option("--timeout", f.io_timeout, "seconds a client may take to send a request or take a reply")
        ->check(CLI::Range(1, 3600))
        ->capture_default_str();
    app.add_option("--shutdown-timeout", f.shutdown_timeout,
                   "on SIGTERM/SIGINT, seconds running requests get to finish before they are cancelled")
        ->check(CLI::Range(0.0, 3600.0))
        ->capture_default_str();
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::fprintf(stderr, "moe serve: error: %s\n(see moe serve --help)\n", e.what());
        return 2;
    }
    return std::nullopt;
}

std::atomic<bool> g_stop{false};
volatile std::sig_atomic_t g_signal = 0;

extern "C" void on_serve_signal(int sig) {
    g_signal = sig;
    g_stop.store(true, std::memory_order_relaxed);
}

void install_signals() {
    struct sigaction sa {};
    sa.sa_handler = on_serve_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;  // a second signal ends the process at once
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    ::sigaction(SIGPIPE, &ign, nullptr);  // a client that went away is a failed write, not a dead server
}

std::string file_name_of(const std::string& path) {
    std::string p = path;
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    const size_t slash = p.find_last_of('/');
    return slash == std::string::npos ? p : p.substr(slash + 1);
}

// Waits until pred() or the deadline; true when pred() held.
template <typename Pred>
bool wait_until(Pred pred, std::chrono::steady_clock::time_point deadline) {
    while (!pred()) {
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
}

}  // namespace

int run_serve(int argc, char** argv) {
    serve_flags f;
    if (const std::optional<int> rc = parse_serve_flags(argc, argv, f)) return *rc;
    std::optional<uint64_t> budget;
    if (!f.budget_text.empty()) budget = parse_bytes(f.budget_text, "--vram-budget");
    if (budget && *budget == 0) fail_usage("--vram-budget 0: expected a positive size");
    engine_config ec;
    if (!f.host_budget_text.empty()) {
        ec.host_budget_bytes = parse_bytes(f.host_budget_text, "--host-budget");
        if (ec.host_budget_bytes == 0) fail_usage("--host-budget 0: expected a positive size");
    }
    ec.backend = parse_backend(f.backend_text);
    if (!computes_on_cuda(ec.backend)) {
        try {
            cpu_isa_selected();
        } catch (const error& e) {
            fail_usage("{}", e.what());
        }
    }
    const std::string& path = f.model_path;
    const model_file mf = open_model_file(path);
    const model_desc desc = describe_model(mf);
    check_forward_supported(desc, path);
    std::optional<tokenizer> tok;
    try {
        tok = tokenizer::from_model_file(mf);
    } catch (const error& e) {
        fail("{}: moe serve needs the model's tokenizer: {}", path, e.what());
    }
    std::optional<chat_template> chat;
    try {
        chat = chat_template_of(mf, desc.architecture, path);
    } catch (const error& e) {
        warn_once("serve.chat_template", fmt::format("{}; /v1/chat/completions is off", e.what()));
    }
    int n_ctx = f.n_ctx;
    if (n_ctx == 0) n_ctx = desc.n_ctx_train > 0 ? std::min(desc.n_ctx_train, 4096) : 4096;
    if (n_ctx < 2) fail_usage("--ctx {}: expected at least 2 positions", n_ctx);

    ec.n_ctx = n_ctx;
    ec.n_batch = f.n_batch;
    ec.policy = f.policy;
    ec.n_threads = f.n_threads;
    if (f.prefetch != "none") {
        ec.prefetch.mode = parse_prefetch_mode(f.prefetch, "--prefetch");
        ec.prefetch.depth = f.prefetch_depth;
        ec.prefetch.per_layer = f.prefetch_k;
    }
    const planned_budget pb = plan_budget(path, mf, desc, ec, budget, "moe serve", f.n_parallel);

    ec.load_progress = load_progress_reporter("moe serve", ::isatty(::fileno(stderr)) != 0);
    const model m(path, model_config_of(ec));
    offloader off(offload_layout_of(m.file(), m.desc()), offload_config_of(ec, m));
    serve::scheduler_config sc;
    sc.n_parallel = f.n_parallel;
    sc.n_ctx = n_ctx;
    sc.n_batch = f.n_batch;
    sc.max_queue = f.max_queue;
    serve::scheduler sched(m, off, *tok, sc);
    const footprint fp = measure_footprint(m, off, sched.forward());
    check_footprint(fp, pb.plan, path);

    serve::server_options so;
    so.host = f.host;
    so.port = f.port;
    so.api_key = f.api_key;
    so.model_id = f.alias.empty() ? file_name_of(path) : f.alias;
    so.io_timeout_s = f.io_timeout;
    so.max_body_bytes = f.max_body;
    serve::server srv(sched, off, *tok, chat, so);
    install_signals();
    const int port = srv.bind();
    std::fprintf(stderr, "moe serve: %s: %d parallel x %d positions, %s backend, memory %s, prefetch %s\n",
                 so.model_id.c_str(), f.n_parallel, n_ctx, std::string(m.compute().name()).c_str(),
                 format_footprint(fp).c_str(), pb.prefetch.c_str());
    std::fprintf(stderr, "moe serve: listening on http://%s:%d%s\n", f.host.c_str(), port,
                 f.api_key.empty() ? "" : " (API key required)");
    std::fflush(stderr);
    std::thread http([&] { srv.listen(); });

    while (!g_stop.load(std::memory_order_relaxed)) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                               std::chrono::duration<double>(f.shutdown_timeout));
    const serve::scheduler_metrics before = sched.metrics();
    std::fprintf(stderr, "moe serve: %s: no new requests; %d running and %d queued get %.0f s to finish\n",
                 ::strsignal(int(g_signal)), before.active, before.queued, f.shutdown_timeout);
    sched.drain();
    bool finished = wait_until([&] { return sched.idle(); }, deadline);
    if (!finished) {
        sched.cancel_all();
        wait_until([&] { return sched.idle(); }, std::chrono::steady_clock::now() + std::chrono::seconds(5));
    }
    // Let the replies in flight send their last bytes, then close.
    wait_until([&] { return srv.in_flight() == 0; }, std::chrono::steady_clock::now() + std::chrono::seconds(5));
    srv.stop();
    http.join();
    const serve::scheduler_metrics s = sched.metrics();
    std::fprintf(stderr,
                 "moe serve: stopped%s: %llu requests finished, %llu cancelled, %llu failed, %llu refused; %llu "
                 "tokens generated\n",
                 finished ? "" : " (running requests were cancelled at the deadline)", (unsigned long long)s.finished,
                 (unsigned long long)s.cancelled, (unsigned long long)s.failed, (unsigned long long)s.refused,
                 (unsigned long long)s.generated_tokens);
    return 0;
}

}  // namespace moe::cli
