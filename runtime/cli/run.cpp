// `moe run -m MODEL -p PROMPT [-n N] [--vram-budget X] ...`: generates text with the engine, streaming each token
// to stdout as it is produced, then prints what the expert cache did (hit rates, bytes moved, time waiting) on
// stderr. --trace records every routing decision (prompt and generated tokens) as moe-trace v1 so `moe sim` can
// replay the run; --stats-json writes the tokens and figures for scripts and tests.
//
// --vram-budget is the whole compute-memory budget (invariant 1 of docs/invariants.md: budgets are hard): the resident
// weights, the KV cache and the workspaces come first and the expert slots get what is left (runtime/auto_budget.h:
// plan_compute_budget).
// --backend cuda (the default where a GPU is usable) puts all of them in VRAM; --backend cpu computes on the CPU,
// and the budget is then RAM. The estimate the slots are planned with is checked against what the engine really
// allocated before anything runs, and the summary prints the breakdown.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cache/trace.h"
#include "common/error.h"
#include "common/units.h"
#include "runtime/auto_budget.h"
#include "runtime/backend_cuda.h"
#include "runtime/chat_template.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/cli/output_file.h"
#include "runtime/cli/plan_budget.h"
#include "runtime/cli/progress.h"
#include "runtime/cpu_dot.h"
#include "runtime/engine.h"
#include "runtime/model_desc.h"
#include "runtime/run_stats.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer.h"

namespace moe::cli {
namespace {

using json = nlohmann::ordered_json;

std::vector<int> parse_ids(const std::string& text, int n_vocab) {
    std::vector<int> ids;
    for (const std::string& item : split_commas(text)) {
        const std::optional<int> v = parse_int(item);
        if (!v) fail("--prompt-ids: '{}' is not a token id: expected comma-separated integers like 1,2,3", item);
        if (*v < 0 || *v >= n_vocab) fail("--prompt-ids: token id {} is outside the vocabulary [0, {})", *v, n_vocab);
        ids.push_back(*v);
    }
    if (ids.empty()) fail("--prompt-ids: no token ids given");
    return ids;
}

// The model name as the trace header wants it: one word.
std::string trace_model_name(const std::string& name) {
    std::string s = name.empty() ? "model" : name;
    for (char& c : s)
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') c = '_';
    return s;
}

// What the user gave as the prompt.
struct prompt_input {
    std::string text;      // -p
    std::string ids_text;  // --prompt-ids
    bool chat = false;     // --chat
};
struct prepared_prompt {
    std::vector<int> tokens;
    std::string text;                   // what the tokenizer encoded: the prompt, or the templated chat
    std::optional<tokenizer> tok;       // when the file has a usable one (to print text)
    std::optional<chat_template> chat;  // --chat
};

// The prompt as token ids: encoded with the file's tokenizer (with --chat, inside its chat template), or parsed
// from --prompt-ids.
prepared_prompt prepare_prompt(const model_file& mf, const model_desc& desc, const std::string& model_path,
                               const prompt_input& in) {
    prepared_prompt p;
    if (in.text.empty()) {
        try {
            p.tok = tokenizer::from_model_file(mf);  // only to print text; ids are printed without one
        } catch (const error&) {
        }
        p.tokens = parse_ids(in.ids_text, desc.n_vocab);
        return p;
    }
    try {
        p.tok = tokenizer::from_model_file(mf);
    } catch (const error& e) {
        fail("{}: cannot encode the prompt text: {}; pass the prompt as token ids with --prompt-ids", model_path,
             e.what());
    }
    if (in.chat) p.chat = chat_template_of(mf, desc.architecture, model_path);
    // --chat: the template writes BOS/EOS where it wants them and its markers are special tokens, so encode as
    // transformers' apply_chat_template(tokenize=True) does: nothing added, special tokens parsed.
    const tokenizer& tok = *p.tok;
    const auto special_text = [&](int32_t id) { return id >= 0 ? tok.text(id) : std::string(); };
    p.text = p.chat ? apply_chat_template(*p.chat, in.text, special_text(tok.bos_id()), special_text(tok.eos_id()))
                    : in.text;
    try {
        for (int32_t t : tok.encode(p.text, !p.chat, p.chat.has_value())) p.tokens.push_back(int(t));
    } catch (const error& e) {
        fail("{}: cannot encode the prompt with the file's tokenizer: {}", model_path, e.what());
    }
    if (p.tokens.empty()) fail("-p: the prompt encodes to no tokens");
    if (p.chat)
        std::fprintf(stderr, "moe run: --chat: %s template from %s: %zu prompt tokens\n",
                     std::string(chat_style_name(p.chat->style)).c_str(), p.chat->origin.c_str(), p.tokens.size());
    return p;
}

// Everything `moe run` takes from its command line.
struct run_flags {
    std::string model_path, prompt, prompt_ids_text, budget_text, host_budget_text, policy = "lru";
    std::string prefetch = "none", trace_path, stats_path, backend_text = "auto";
    int n_predict = 32, n_threads = 1, n_ctx = 0, prefetch_depth = 1, prefetch_k = 0;
    bool chat = false;
    sampler_config sc;
};

// Parses the flags into f; returns an exit status when the command is done (help, or a parse error: 2).
std::optional<int> parse_run_flags(int argc, char** argv, run_flags& f) {
    CLI::App app{
        "Generate text with a Mixture-of-Experts model, streaming experts through a cache of the given "
        "budget. Tokens go to stdout as they are produced; a summary (speed, hit rates, bytes loaded) "
        "goes to stderr.",
        "moe run"};
    app.add_option("-m,--model", f.model_path,
                   "model file: .gguf (first shard of a split set), .safetensors, or a "
                   "directory")
        ->required();
    auto* p_opt =
        app.add_option("-p,--prompt", f.prompt, "prompt text (encoded with the model's tokenizer, BOS added)");
    auto* ids_opt = app.add_option("--prompt-ids", f.prompt_ids_text,
                                   "the prompt as comma-separated token ids (e.g. 1,17,42), for models without a "
                                   "tokenizer; nothing is added");
    p_opt->excludes(ids_opt);
    app.add_flag("--chat", f.chat,
                 "wrap the prompt in the model's chat template (tokenizer.chat_template, or the architecture's when "
                 "the file has none) as one user turn followed by the assistant prefix")
        ->excludes(ids_opt);
    app.add_option("--host-budget", f.host_budget_text,
                   "pinned host RAM for a second level of expert slots under the first (experts evicted from the "
                   "first stay there, so a miss is a memory copy instead of a file read), e.g. 32G. Default: none, "
                   "except with a GPU backend and no --vram-budget, where it is sized from free RAM");
    app.add_option("-n,--n-predict", f.n_predict,
                   "most tokens to generate (stops earlier at an end-of-generation token)")
        ->check(CLI::Range(1, 1 << 20))
        ->capture_default_str();
    app.add_option("--vram-budget", f.budget_text,
                   "the whole compute memory the model may use, e.g. 8G (an 8 GB card), 512M: resident weights, KV "
                   "cache and workspaces come first, expert slots get the rest; VRAM with the cuda backend, RAM with "
                   "the cpu backend. Too small for those plus one layer's top-k slots: refused with the minimum. "
                   "Default: sized from free memory (free VRAM with a GPU backend, MemAvailable on the CPU) less a "
                   "margin, at most every expert; what it chose is printed");
    app.add_option("--policy", f.policy, "eviction policy of the expert cache (lru, lfu, ...: see moe sim --help)")
        ->capture_default_str();
    app.add_option("--prefetch", f.prefetch,
                   "load experts before they are needed (decode): none; spec, the next layers' routers applied to "
                   "the current hidden state; history, experts that followed the current ones before; both "
                   "(docs/prefetch.md)")
        ->check(CLI::IsMember({"none", "spec", "history", "both"}))
        ->capture_default_str();
    app.add_option("--prefetch-depth", f.prefetch_depth, "MoE layers predicted ahead at each layer")
        ->check(CLI::Range(1, 1 << 16))
        ->capture_default_str();
    app.add_option("--prefetch-k", f.prefetch_k, "experts guessed per predicted layer (0 = the model's top-k)")
        ->check(CLI::Range(0, 1 << 16))
        ->capture_default_str();
    app.add_option("--trace", f.trace_path,
                   "write every routing decision (prompt and generated tokens) as moe-trace v1");
    app.add_option("--stats-json", f.stats_path, "write generated tokens, text and cache figures as JSON");
    app.add_option("--seed", f.sc.seed, "random seed for sampling (same seed, same tokens)")->capture_default_str();
    app.add_option("--temp", f.sc.temperature, "temperature; 0 = greedy (argmax)")
        ->check(CLI::Range(0.0f, 100.0f))
        ->capture_default_str();
    app.add_option("--top-k", f.sc.top_k, "keep the k most likely tokens (0 = off)")
        ->check(CLI::Range(0, 1 << 30))
        ->capture_default_str();
    app.add_option("--top-p", f.sc.top_p, "nucleus sampling: keep the most likely tokens up to this mass (1 = off)")
        ->check(CLI::Range(0.0f, 1.0f))
        ->capture_default_str();
    app.add_option("--min-p", f.sc.min_p, "drop tokens less likely than min-p times the most likely (0 = off)")
        ->check(CLI::Range(0.0f, 1.0f))
        ->capture_default_str();
    app.add_option("--repeat-penalty", f.sc.repeat_penalty,
                   "llama.cpp repetition penalty over the last 64 tokens (1 = off)")
        ->check(CLI::Range(0.0f, 100.0f))
        ->capture_default_str();
    app.add_option("--backend", f.backend_text,
                   "where the model computes: cuda (expert slots and resident weights in VRAM), cpu (RAM), or auto "
                   "(cuda when a GPU is usable)")
        ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
        ->capture_default_str();
    app.add_option("--threads", f.n_threads, "CPU threads for the matrix products (0 = one per hardware thread)")
        ->check(CLI::Range(0, 4096))
        ->capture_default_str();
    app.add_option("--ctx", f.n_ctx,
                   "context length (KV cache positions, allocated up front and printed); default: the prompt + "
                   "n-predict, at most the model's trained context")
        ->check(CLI::Range(0, 1 << 24));
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::fprintf(stderr, "moe run: error: %s\n(see moe run --help)\n", e.what());
        return 2;
    }
    if (f.prompt.empty() && f.prompt_ids_text.empty()) {
        std::fprintf(stderr,
                     "moe run: error: a prompt is required: -p TEXT or --prompt-ids 1,2,3\n(see moe run --help)\n");
        return 2;
    }
    return std::nullopt;
}

// Set by SIGINT / SIGTERM: generation stops between two steps and the run finishes cleanly.
std::atomic<bool> g_stop{false};
volatile std::sig_atomic_t g_signal = 0;

extern "C" void on_stop_signal(int sig) {
    g_signal = sig;
    g_stop.store(true, std::memory_order_relaxed);
}

// Installs the handlers for the run and puts the old ones back at the end. A second Ctrl-C ends the process at
// once (SA_RESETHAND). SIGPIPE is ignored: a closed stdout shows as a failed write, which the run handles.
class signal_scope {
public:
    signal_scope() {
        struct sigaction sa {};
        sa.sa_handler = on_stop_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESETHAND;
        ::sigaction(SIGINT, &sa, &_int);
        ::sigaction(SIGTERM, &sa, &_term);
        struct sigaction ign {};
        ign.sa_handler = SIG_IGN;
        sigemptyset(&ign.sa_mask);
        ::sigaction(SIGPIPE, &ign, &_pipe);
    }
    ~signal_scope() {
        ::sigaction(SIGINT, &_int, nullptr);
        ::sigaction(SIGTERM, &_term, nullptr);
        ::sigaction(SIGPIPE, &_pipe, nullptr);
    }
    signal_scope(const signal_scope&) = delete;
    signal_scope& operator=(const signal_scope&) = delete;

private:
    struct sigaction _int {
    }, _term{}, _pipe{};
};

// The KV cache positions: --ctx as given (so `moe inspect --ctx` plans the same memory), said out loud with its bytes
// when it is more than the run can use; without it what the run needs (prompt + tokens to generate), bounded by
// the model's trained context (a model is not trained to attend further), never fewer than the prompt plus one.
int choose_context(const run_flags& f, const model_desc& desc, int n_prompt) {
    const int64_t need = int64_t(n_prompt) + f.n_predict;
    const int trained = desc.n_ctx_train;
    if (f.n_ctx > 0 && f.n_ctx < n_prompt + 1)
        fail_usage("--ctx {}: the prompt has {} tokens; expected a context of at least {}", f.n_ctx, n_prompt,
                   n_prompt + 1);
    int64_t ctx = need;
    if (f.n_ctx > 0) {
        ctx = f.n_ctx;
        if (ctx > need)
            std::fprintf(stderr,
                         "moe run: --ctx %d reserves a KV cache of %s for %d positions; this run uses at most %lld "
                         "(prompt + --n-predict)\n",
                         f.n_ctx, format_bytes(kv_cache_bytes(desc, f.n_ctx)).c_str(), f.n_ctx, (long long)need);
    } else if (trained > 0)
        ctx = std::max<int64_t>(std::min<int64_t>(need, trained), n_prompt + 1);
    if (trained > 0 && ctx > trained)
        warn_once("run.beyond_trained_context",
                  fmt::format("a context of {} positions is beyond the {} the model was trained for; output past "
                              "position {} may degrade",
                              ctx, trained, trained));
    if (f.n_ctx == 0 && ctx < need)
        std::fprintf(stderr,
                     "moe run: the model was trained for %d positions: the context is %lld (%d prompt tokens), so at "
                     "most %lld tokens are generated; pass --ctx to go further\n",
                     trained, (long long)ctx, n_prompt, (long long)(ctx - n_prompt));
    return int(ctx);
}

// What went wrong before the run finished, if anything, and the exit status it gives.
struct run_outcome {
    std::string error;  // a failed step (expert load, ...) or a failed write: its message
    int exit_code = 0;
};

// Writes a generated piece to stdout; false (with the reason and exit status) when stdout is gone or full.
bool write_stdout(const std::string& piece, run_outcome& out) {
    if (std::fwrite(piece.data(), 1, piece.size(), stdout) == piece.size() && std::fflush(stdout) == 0) return true;
    const int err = errno;
    out.error = fmt::format("writing the generated text to stdout failed: {}", std::strerror(err));
    out.exit_code = err == EPIPE ? 128 + SIGPIPE : 1;
    return false;
}

}  // namespace

int run_run(int argc, char** argv) {
    run_flags f;
    if (const std::optional<int> rc = parse_run_flags(argc, argv, f)) return *rc;
    const sampler_config& sc = f.sc;
    if (sc.top_p <= 0.0f) fail_usage("--top-p {}: expected a value in (0, 1]", sc.top_p);
    if (sc.repeat_penalty <= 0.0f) fail_usage("--repeat-penalty {}: expected a value > 0 (1 = off)", sc.repeat_penalty);
    std::optional<uint64_t> budget;
    if (!f.budget_text.empty()) budget = parse_bytes(f.budget_text, "--vram-budget");
    if (budget && *budget == 0)
        fail_usage("--vram-budget 0: expected a positive size (leave the flag out to size it from free memory)");
    std::optional<uint64_t> host_budget;
    if (!f.host_budget_text.empty()) host_budget = parse_bytes(f.host_budget_text, "--host-budget");
    if (host_budget && *host_budget == 0)
        fail_usage("--host-budget 0: expected a positive size (leave the flag out for no host tier)");
    const std::string& model_path = f.model_path;
    // MOE_CPU_ISA picks the CPU kernels for the whole process: a bad value is refused before anything is read.
    if (!computes_on_cuda(parse_backend(f.backend_text))) {
        try {
            cpu_isa_selected();
        } catch (const error& e) {
            fail_usage("{}", e.what());
        }
    }

    // The model's description, the outputs, the prompt and the budget plan come first: a refusal should not wait
    // for the weights to load, and nothing should be computed for an output that cannot be written.
    const model_file mf = open_model_file(model_path);
    const model_desc desc = describe_model(mf);
    check_forward_supported(desc, model_path);
    std::optional<output_file> trace_out, stats_out;
    if (!f.trace_path.empty()) trace_out.emplace("--trace", f.trace_path, mf.paths);
    if (!f.stats_path.empty())
        stats_out.emplace("--stats-json", f.stats_path, mf.paths,
                          std::vector<const output_file*>{trace_out ? &*trace_out : nullptr});
    prompt_input in;
    in.text = f.prompt;
    in.ids_text = f.prompt_ids_text;
    in.chat = f.chat;
    const prepared_prompt pp = prepare_prompt(mf, desc, model_path, in);
    const int n_ctx = choose_context(f, desc, int(pp.tokens.size()));

    engine_config ec;
    ec.n_ctx = n_ctx;
    ec.policy = f.policy;
    ec.n_threads = f.n_threads;
    ec.backend = parse_backend(f.backend_text);
    ec.host_budget_bytes = host_budget.value_or(0);
    if (f.prefetch != "none") {
        ec.prefetch.mode = parse_prefetch_mode(f.prefetch, "--prefetch");
        ec.prefetch.depth = f.prefetch_depth;
        ec.prefetch.per_layer = f.prefetch_k;
    }
    const planned_budget pb = plan_budget(model_path, mf, desc, ec, budget, "moe run");
    const budget_plan& plan = pb.plan;
    const bool budget_auto = pb.budget_auto;
    const std::string& prefetch = pb.prefetch;

    ec.load_progress = load_progress_reporter("moe run", ::isatty(::fileno(stderr)) != 0);
    const auto t_load = clock_type::now();
    engine eng(model_path, ec);
    const model& m = eng.get_model();
    offloader& off = eng.get_offloader();
    session& ses = eng.get_session();
    run_info info;
    info.load_s = seconds_since(t_load);
    // The plan rested on an estimate: hold what was built to the budget before anything runs.
    const footprint fp = measure_footprint(m, off, ses);
    check_footprint(fp, plan, model_path);

    // The trace is written as the routing happens, so an interrupted run keeps every row it produced.
    run_outcome outcome;
    size_t n_trace_rows = 0;
    if (trace_out) {
        routing_trace header;
        header.model = trace_model_name(desc.name);
        header.n_layers = uint32_t(desc.layout.n_moe_layers);
        header.n_experts = uint32_t(desc.layout.n_experts);
        header.top_k = uint32_t(desc.n_experts_used);
        trace_out->write(trace_header(header));
        ses.set_routing_observer([&, row = trace_row{}, line = std::string()](int pos, int moe_layer,
                                                                              std::span<const int> ex,
                                                                              std::span<const float> w) mutable {
            row.token = uint32_t(pos);
            row.layer = uint32_t(moe_layer);
            row.experts.assign(ex.begin(), ex.end());
            row.weights.assign(w.begin(), w.end());
            format_trace_row(line, row);
            if (std::fwrite(line.data(), 1, line.size(), trace_out->stream()) != line.size()) {
                if (outcome.error.empty())
                    outcome.error = fmt::format("--trace {}: write failed: {}", f.trace_path, std::strerror(errno));
                g_stop.store(true);
            }
            ++n_trace_rows;
        });
    }

    ses.set_sampler(sc);
    const tokenizer* tok = pp.tok ? &*pp.tok : nullptr;
    std::string text;
    generation g;
    generate_hooks hooks;
    g_stop.store(false);
    g_signal = 0;
    hooks.stop = &g_stop;
    // A long prompt shows its progress on a terminal (evaluating thousands of tokens takes a while).
    const bool tty = ::isatty(::fileno(stderr)) != 0;
    const auto t_prefill = clock_type::now();
    if (tty && pp.tokens.size() >= 256)
        hooks.prefill_progress = [&](size_t done, size_t total) {
            std::fprintf(stderr, "\rmoe run: prompt %s %zu / %zu tokens, %.1f tokens/s ",
                         progress_bar(done, total).c_str(), done, total, rate(done, seconds_since(t_prefill)));
            if (done == total) std::fputc('\n', stderr);
        };
    {
        signal_scope signals;
        try {
            ses.generate(
                pp.tokens, f.n_predict, tok,
                [&](int token) {
                    const std::string piece = tok ? tok->token_to_piece(token, false) : fmt::format("{} ", token);
                    text += piece;
                    return write_stdout(piece, outcome);
                },
                &g, hooks);
        } catch (const std::exception& e) {
            outcome.error = e.what();
            outcome.exit_code = 1;
        }
    }
    if (g.context_full) std::fprintf(stderr, "\nmoe run: context of %d positions is full; stopping\n", n_ctx);
    if (outcome.exit_code != 128 + SIGPIPE) {
        std::fputc('\n', stdout);
        std::fflush(stdout);
    }
    const int sig = int(g_signal);
    if (g.interrupted && sig != 0) {
        if (outcome.error.empty()) outcome.error = fmt::format("interrupted by {}", ::strsignal(sig));
        if (outcome.exit_code == 0) outcome.exit_code = 128 + sig;
    } else if (!outcome.error.empty() && outcome.exit_code == 0) {
        outcome.exit_code = 1;
    }

    info.model_path = model_path;
    info.prompt_tokens = pp.tokens;
    if (!f.prompt.empty()) info.prompt_text = pp.text;
    if (pp.chat) info.chat_template = std::string(chat_style_name(pp.chat->style));
    if (tok) info.text = text;
    info.plan = plan;
    info.budget_auto = budget_auto;
    info.prefetch = prefetch;
    info.n_ctx = n_ctx;
    std::string summary = run_summary(info, g, m, off, fp);
    if (!outcome.error.empty()) summary += fmt::format("stopped    {}\n", outcome.error);
    std::fputs(summary.c_str(), stderr);

    // Results are kept whatever happened above: the trace rows so far, and the statistics with the reason.
    std::string write_error;
    if (trace_out) {
        try {
            trace_out->commit();
            std::fprintf(stderr, "trace      %zu rows -> %s\n", n_trace_rows, f.trace_path.c_str());
        } catch (const error& e) {
            write_error = e.what();
        }
    }
    if (stats_out) {
        nlohmann::ordered_json j = run_stats_json(info, g, m, off, fp);
        j["interrupted"] = g.interrupted || outcome.exit_code == 128 + SIGPIPE;
        j["error"] = outcome.error.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(outcome.error);
        try {
            stats_out->write(dump_json(j) + "\n");
            stats_out->commit();
        } catch (const error& e) {
            if (write_error.empty()) write_error = e.what();
        }
    }
    if (!write_error.empty()) {
        std::fprintf(stderr, "moe run: error: %s\n", write_error.c_str());
        if (outcome.exit_code == 0) outcome.exit_code = 1;
    }
    if (!outcome.error.empty() && outcome.exit_code == 1)
        std::fprintf(stderr, "moe run: error: %s\n", outcome.error.c_str());
    return outcome.exit_code;
}

}  // namespace moe::cli
