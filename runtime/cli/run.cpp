// `moe run -m MODEL -p PROMPT [-n N] [--vram-budget X] ...`: generates text with the engine, streaming each token
// to stdout as it is produced, then prints what the expert cache did (hit rates, bytes moved, time waiting) on
// stderr. --trace records every routing decision (prompt and generated tokens) as moe-trace v1 so `moe sim` can
// replay the run; --stats-json writes the tokens and figures for scripts and tests.
//
// --vram-budget is the whole compute-memory budget (invariant 1 of docs/invariants.md: budgets are hard): the resident weights, the KV cache and
// the workspaces come first and the expert slots get what is left (runtime/auto_budget.h: plan_compute_budget).
// --backend cuda (the default where a GPU is usable) puts all of them in VRAM; --backend cpu computes on the CPU,
// and the budget is then RAM. The estimate the slots are planned with is checked against what the engine really
// allocated before anything runs, and the summary prints the breakdown.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
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
#include "runtime/cli/progress.h"
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
        if (*v < 0 || *v >= n_vocab)
            fail("--prompt-ids: token id {} is outside the vocabulary [0, {})", *v, n_vocab);
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
    std::string text;                     // what the tokenizer encoded: the prompt, or the templated chat
    std::optional<tokenizer> tok;         // when the file has a usable one (to print text)
    std::optional<chat_template> chat;    // --chat
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

// Without --vram-budget (runtime/auto_budget.h): the expert budget from the free memory of the memory the backend
// computes in (VRAM for CUDA, RAM for the CPU) and, with a GPU backend and no --host-budget, a host tier from free
// RAM. Sets ec's budgets and `plan` (its budget: the free memory less the margin); returns what was chosen and
// why, for stderr.
std::string size_budgets_from_free_memory(const std::string& model_path, const model_desc& desc,
                                          const memory_need& need, engine_config& ec, bool host_given,
                                          budget_plan& plan) {
    const bool cuda = computes_on_cuda(ec.backend);
    const std::optional<free_memory> mem = cuda ? free_vram() : available_ram();
    if (!mem)
        fail("{}: no --vram-budget given, and {} cannot be read to size one; pass --vram-budget", model_path,
             cuda ? "the GPU's free memory" : "/proc/meminfo");
    const uint64_t slot = engine::slot_bytes_for(desc);
    const uint32_t n_total = uint32_t(desc.layout.n_moe_layers * desc.layout.n_experts);
    // lru-layer needs top-k in every layer's share; the other policies one layer's top-k.
    const uint32_t min_slots = uint32_t(desc.n_experts_used) *
                               (ec.policy == "lru-layer" ? uint32_t(std::max(1, desc.layout.n_moe_layers)) : 1u);
    const budget_choice c =
        choose_expert_budget(*mem, need, slot, n_total, min_slots, model_path);
    ec.expert_budget_bytes = c.budget_bytes;
    plan.budget_bytes = mem->free_bytes - std::min(mem->free_bytes, safety_margin(*mem));
    plan.need = need;
    plan.slot_bytes = slot;
    plan.n_slots = c.n_slots;
    plan.every_expert = c.every_expert;
    plan.min_budget_bytes = need.total() + uint64_t(min_slots) * slot;
    std::string s = fmt::format(
        "moe run: no --vram-budget given: {} for expert slots in {} = {} slots of {} ({:.1f}% of the {} experts{}), "
        "sized from {}\n",
        format_bytes(c.budget_bytes), cuda ? "VRAM" : "RAM", c.n_slots, format_bytes(slot),
        100.0 * double(c.n_slots) / double(std::max(1u, n_total)), n_total, c.every_expert ? ": every expert fits" : "",
        c.explain);
    if (cuda && !host_given)
        if (const std::optional<free_memory> ram = available_ram())
            if (const auto h = choose_host_budget(*ram, need.resident_bytes, slot, n_total, c.n_slots)) {
                ec.host_budget_bytes = h->budget_bytes;
                s += fmt::format(
                    "moe run: no --host-budget given: {} of pinned RAM for a host tier = {} slots ({:.1f}% of the "
                    "experts), sized as {}\n",
                    format_bytes(h->budget_bytes), h->n_slots, 100.0 * double(h->n_slots) / double(n_total),
                    h->explain);
            }
    return s;
}

}  // namespace

int run_run(int argc, char** argv) {
    CLI::App app{
        "Generate text with a Mixture-of-Experts model, streaming experts through a cache of the given "
        "budget. Tokens go to stdout as they are produced; a summary (speed, hit rates, bytes loaded) "
        "goes to stderr.",
        "moe run"};
    std::string model_path, prompt, prompt_ids_text, budget_text, policy = "lru", prefetch = "none";
    std::string trace_path, stats_path;
    int n_predict = 32, n_threads = 1, n_ctx = 0, prefetch_depth = 1, prefetch_k = 0;
    sampler_config sc;
    app.add_option("-m,--model", model_path,
                   "model file: .gguf (first shard of a split set), .safetensors, or a "
                   "directory")
        ->required();
    auto* p_opt = app.add_option("-p,--prompt", prompt, "prompt text (encoded with the model's tokenizer, BOS added)");
    auto* ids_opt = app.add_option("--prompt-ids", prompt_ids_text,
                                   "the prompt as comma-separated token ids (e.g. 1,17,42), for models without a "
                                   "tokenizer; nothing is added");
    p_opt->excludes(ids_opt);
    bool chat = false;
    app.add_flag("--chat", chat,
                 "wrap the prompt in the model's chat template (tokenizer.chat_template, or the architecture's when "
                 "the file has none) as one user turn followed by the assistant prefix")
        ->excludes(ids_opt);
    std::string host_budget_text;
    app.add_option("--host-budget", host_budget_text,
                   "pinned host RAM for a second level of expert slots under the first (experts evicted from the "
                   "first stay there, so a miss is a memory copy instead of a file read), e.g. 32G. Default: none, "
                   "except with a GPU backend and no --vram-budget, where it is sized from free RAM");
    app.add_option("-n,--n-predict", n_predict, "most tokens to generate (stops earlier at an end-of-generation token)")
        ->check(CLI::Range(1, 1 << 20))
        ->capture_default_str();
    app.add_option("--vram-budget", budget_text,
                   "the whole compute memory the model may use, e.g. 8G (an 8 GB card), 512M: resident weights, KV "
                   "cache and workspaces come first, expert slots get the rest; VRAM with the cuda backend, RAM with "
                   "the cpu backend. Too small for those plus one layer's top-k slots: refused with the minimum. "
                   "Default: sized from free memory (free VRAM with a GPU backend, MemAvailable on the CPU) less a "
                   "margin, at most every expert; what it chose is printed");
    app.add_option("--policy", policy, "eviction policy of the expert cache (lru, lfu, ...: see moe sim --help)")
        ->capture_default_str();
    app.add_option("--prefetch", prefetch,
                   "load experts before they are needed (decode): none; spec, the next layers' routers applied to "
                   "the current hidden state; history, experts that followed the current ones before; both "
                   "(docs/prefetch.md)")
        ->check(CLI::IsMember({"none", "spec", "history", "both"}))
        ->capture_default_str();
    app.add_option("--prefetch-depth", prefetch_depth, "MoE layers predicted ahead at each layer")
        ->check(CLI::Range(1, 1 << 16))
        ->capture_default_str();
    app.add_option("--prefetch-k", prefetch_k, "experts guessed per predicted layer (0 = the model's top-k)")
        ->check(CLI::Range(0, 1 << 16))
        ->capture_default_str();
    app.add_option("--trace", trace_path, "write every routing decision (prompt and generated tokens) as moe-trace v1");
    app.add_option("--stats-json", stats_path, "write generated tokens, text and cache figures as JSON");
    app.add_option("--seed", sc.seed, "random seed for sampling (same seed, same tokens)")->capture_default_str();
    app.add_option("--temp", sc.temperature, "temperature; 0 = greedy (argmax)")
        ->check(CLI::Range(0.0f, 100.0f))
        ->capture_default_str();
    app.add_option("--top-k", sc.top_k, "keep the k most likely tokens (0 = off)")
        ->check(CLI::Range(0, 1 << 30))
        ->capture_default_str();
    app.add_option("--top-p", sc.top_p, "nucleus sampling: keep the most likely tokens up to this mass (1 = off)")
        ->check(CLI::Range(0.0f, 1.0f))
        ->capture_default_str();
    app.add_option("--min-p", sc.min_p, "drop tokens less likely than min-p times the most likely (0 = off)")
        ->check(CLI::Range(0.0f, 1.0f))
        ->capture_default_str();
    app.add_option("--repeat-penalty", sc.repeat_penalty,
                   "llama.cpp repetition penalty over the last 64 tokens (1 = off)")
        ->check(CLI::Range(0.0f, 100.0f))
        ->capture_default_str();
    std::string backend_text = "auto";
    app.add_option("--backend", backend_text,
                   "where the model computes: cuda (expert slots and resident weights in VRAM), cpu (RAM), or auto "
                   "(cuda when a GPU is usable)")
        ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
        ->capture_default_str();
    app.add_option("--threads", n_threads, "CPU threads for the matrix products (0 = one per hardware thread)")
        ->check(CLI::Range(0, 4096))
        ->capture_default_str();
    app.add_option("--ctx", n_ctx, "context length (KV cache positions); default: prompt + n-predict")
        ->check(CLI::Range(0, 1 << 24));
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::fprintf(stderr, "moe run: error: %s\n(see moe run --help)\n", e.what());
        return 2;
    }
    if (prompt.empty() && prompt_ids_text.empty()) {
        std::fprintf(stderr,
                     "moe run: error: a prompt is required: -p TEXT or --prompt-ids 1,2,3\n(see moe run --help)\n");
        return 2;
    }
    if (sc.top_p <= 0.0f) fail("--top-p {}: expected a value in (0, 1]", sc.top_p);
    if (sc.repeat_penalty <= 0.0f) fail("--repeat-penalty {}: expected a value > 0 (1 = off)", sc.repeat_penalty);

    std::optional<uint64_t> budget;
    if (!budget_text.empty()) budget = parse_bytes(budget_text, "--vram-budget");
    if (budget && *budget == 0)
        fail("--vram-budget 0: expected a positive size (leave the flag out to size it from free memory)");
    std::optional<uint64_t> host_budget;
    if (!host_budget_text.empty()) host_budget = parse_bytes(host_budget_text, "--host-budget");
    if (host_budget && *host_budget == 0)
        fail("--host-budget 0: expected a positive size (leave the flag out for no host tier)");

    // The tokenizer, the prompt and the budget plan come first: a refusal should not wait for the weights to load.
    const model_file mf = open_model_file(model_path);
    const model_desc desc = describe_model(mf);
    check_forward_supported(desc, model_path);
    prompt_input in;
    in.text = prompt;
    in.ids_text = prompt_ids_text;
    in.chat = chat;
    const prepared_prompt pp = prepare_prompt(mf, desc, model_path, in);

    const int need_ctx = int(pp.tokens.size()) + n_predict;
    if (n_ctx == 0) n_ctx = need_ctx;
    if (n_ctx < int(pp.tokens.size()) + 1)
        fail("--ctx {}: the prompt has {} tokens; expected a context of at least {}", n_ctx, pp.tokens.size(),
             pp.tokens.size() + 1);

    engine_config ec;
    ec.n_ctx = n_ctx;
    ec.policy = policy;
    ec.n_threads = n_threads;
    ec.backend = parse_backend(backend_text);
    ec.host_budget_bytes = host_budget.value_or(0);
    if (prefetch != "none") {
        ec.prefetch.mode = parse_prefetch_mode(prefetch, "--prefetch");
        ec.prefetch.depth = prefetch_depth;
        ec.prefetch.per_layer = prefetch_k;
    }
    const bool cuda = computes_on_cuda(ec.backend);

    // The budget covers resident weights + KV cache + workspaces + expert slots; the slots get what is left, and the
    // offloader's rules (validate_offload_config) are checked here too, all before the weights load.
    const offload_layout layout = offload_layout_of(mf, desc);
    offload_config oc;
    oc.tier = cuda ? tier_kind::DEVICE : tier_kind::RAM;
    oc.policy = policy;
    oc.prefetch = ec.prefetch;
    const uint64_t slot = offload_slot_bytes(layout.max_expert_bytes());
    const memory_need need = estimate_memory_need(mf, desc, ec.n_ctx, ec.n_batch, cuda);
    const bool budget_auto = !budget;
    budget_plan plan;
    if (budget_auto)
        std::fputs(size_budgets_from_free_memory(model_path, desc, need, ec, host_budget.has_value(), plan).c_str(),
                   stderr);
    else
        plan = plan_compute_budget(*budget, need, slot, layout.n_keys(), min_expert_slots(oc, layout), model_path,
                                   "--vram-budget", min_slots_reason(oc, layout));
    ec.expert_budget_bytes = plan.expert_bytes();
    oc.expert_budget_bytes = ec.expert_budget_bytes;
    oc.host_budget_bytes = ec.host_budget_bytes;
    std::vector<std::string> warnings;
    offload_config checked;
    try {
        checked = validate_offload_config(oc, layout, &warnings);
    } catch (const config_error& e) {
        fail("{}: {}", model_path, e.what());
    }
    for (const std::string& w : warnings) warn_once("run.offload_config", w);
    if (checked.prefetch.mode != ec.prefetch.mode) {
        ec.prefetch.mode = checked.prefetch.mode;
        prefetch = "none (off: lru-layer share too small)";
    }

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

    routing_trace trace;
    trace.model = trace_model_name(desc.name);
    trace.n_layers = uint32_t(desc.layout.n_moe_layers);
    trace.n_experts = uint32_t(desc.layout.n_experts);
    trace.top_k = uint32_t(desc.n_experts_used);
    if (!trace_path.empty())
        ses.set_routing_observer([&trace](int pos, int moe_layer, std::span<const int> ex, std::span<const float> w) {
            trace_row r;
            r.seq = 0;
            r.token = uint32_t(pos);
            r.layer = uint32_t(moe_layer);
            r.experts.assign(ex.begin(), ex.end());
            r.weights.assign(w.begin(), w.end());
            trace.rows.push_back(std::move(r));
        });

    ses.set_sampler(sc);
    const tokenizer* tok = pp.tok ? &*pp.tok : nullptr;
    std::string text;
    const generation g = ses.generate(pp.tokens, n_predict, tok, [&](int token) {
        const std::string piece = tok ? tok->token_to_piece(token, false) : fmt::format("{} ", token);
        text += piece;
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
        return true;
    });
    if (g.context_full) std::fprintf(stderr, "\nmoe run: context of %d positions is full; stopping\n", n_ctx);
    std::fputc('\n', stdout);
    std::fflush(stdout);

    info.model_path = model_path;
    info.prompt_tokens = pp.tokens;
    if (!prompt.empty()) info.prompt_text = pp.text;
    if (pp.chat) info.chat_template = std::string(chat_style_name(pp.chat->style));
    if (tok) info.text = text;
    info.plan = plan;
    info.budget_auto = budget_auto;
    info.prefetch = prefetch;
    info.n_ctx = n_ctx;
    std::fputs(run_summary(info, g, m, off, fp).c_str(), stderr);

    if (!trace_path.empty()) {
        write_trace(trace_path, trace);
        std::fprintf(stderr, "trace      %zu rows -> %s\n", trace.rows.size(), trace_path.c_str());
    }
    if (!stats_path.empty()) {
        std::ofstream out(stats_path);
        if (!out) fail("--stats-json {}: cannot open for writing", stats_path);
        out << dump_json(run_stats_json(info, g, m, off, fp)) << "\n";
        if (!out) fail("--stats-json {}: write failed", stats_path);
    }
    return 0;
}

}  // namespace moe::cli
