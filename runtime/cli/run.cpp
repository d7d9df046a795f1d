// `moe run -m MODEL -p PROMPT [-n N] [--vram-budget X] ...`: generates text with the engine, streaming each token
// to stdout as it is produced, then prints what the expert cache did (hit rates, bytes moved, time waiting) on
// stderr. --trace records every routing decision (prompt and generated tokens) as moe-trace v1 so `moe sim` can
// replay the run; --stats-json writes the tokens and figures for scripts and tests.
//
// --vram-budget is the whole compute-memory budget (DESIGN.md invariant 1): the resident weights, the KV cache and
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

// The prefetcher's part of the summary (definitions: docs/prefetch.md): overall, then one entry per MoE layer.
std::string prefetch_summary(const cache_stats& cs, std::span<const prefetcher_layer_stats> pf, int depth,
                             int per_layer) {
    const layer_stats tot = cs.total();
    prefetcher_layer_stats pt;
    for (const auto& p : pf) pt += p;
    std::string s = fmt::format(
        "prefetch   depth {}, {} per layer: recall {:.1f}%, precision {:.1f}%, prediction recall {:.1f}%; {} loads, "
        "{} used ({} in time, {} joined while loading), {} wasted ({} evicted unused = {}, {} cancelled)\n",
        depth, per_layer, 100.0 * tot.prefetch_recall(), 100.0 * tot.prefetch_precision(),
        100.0 * pt.prediction_recall(), tot.prefetch_loads, tot.prefetch_used(), tot.prefetch_hits, tot.prefetch_joins,
        tot.prefetch_wasted(), tot.prefetch_unused_evictions, format_bytes(tot.prefetch_unused_bytes),
        tot.cancelled_loads);
    s += "pf layer   recall/precision/wasted:";
    for (size_t l = 0; l < cs.layers.size(); ++l) {
        const layer_stats& L = cs.layers[l];
        s += fmt::format(" {}:{:.0f}%/{:.0f}%/{}", l, 100.0 * L.prefetch_recall(), 100.0 * L.prefetch_precision(),
                         format_bytes(L.prefetch_unused_bytes));
    }
    return s + "\n";
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
    const budget_choice c =
        choose_expert_budget(*mem, need, slot, n_total, uint32_t(desc.n_experts_used), model_path);
    ec.expert_budget_bytes = c.budget_bytes;
    plan.budget_bytes = mem->free_bytes - std::min(mem->free_bytes, safety_margin(*mem));
    plan.need = need;
    plan.slot_bytes = slot;
    plan.n_slots = c.n_slots;
    plan.every_expert = c.every_expert;
    plan.min_budget_bytes = need.total() + uint64_t(desc.n_experts_used) * slot;
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
    std::optional<tokenizer> tok;
    std::optional<chat_template> chat_tpl;
    model_desc desc;
    const model_file mf = open_model_file(model_path);  // also for the memory estimate below
    {
        desc = describe_model(mf);
        if (!prompt.empty()) {
            try {
                tok = tokenizer::from_model_file(mf);
            } catch (const error& e) {
                fail("{}: cannot encode the prompt text: {}; pass the prompt as token ids with --prompt-ids",
                     model_path, e.what());
            }
            if (chat) chat_tpl = chat_template_of(mf, desc.architecture, model_path);
        } else {
            try {
                tok = tokenizer::from_model_file(mf);  // only to print text; ids are printed without one
            } catch (const error&) {
            }
        }
    }
    if (prefetch_k > desc.n_experts)
        fail("--prefetch-k {}: expected 0 (= top-k) up to the model's {} experts per layer", prefetch_k,
             desc.n_experts);
    bool use_prefetch = prefetch != "none";
    const int per_layer = prefetch_k ? prefetch_k : desc.n_experts_used;

    std::vector<int> prompt_tokens;
    std::string prompt_text;  // what the tokenizer encoded: the prompt, or with --chat the templated chat
    if (!prompt.empty()) {
        // --chat: the template writes BOS/EOS where it wants them and its markers are special tokens, so encode
        // as transformers' apply_chat_template(tokenize=True) does: nothing added, special tokens parsed.
        const auto special_text = [&](int32_t id) { return id >= 0 ? tok->text(id) : std::string(); };
        prompt_text =
            chat_tpl ? apply_chat_template(*chat_tpl, prompt, special_text(tok->bos_id()), special_text(tok->eos_id()))
                     : prompt;
        for (int32_t t : tok->encode(prompt_text, !chat_tpl, chat_tpl.has_value())) prompt_tokens.push_back(int(t));
        if (prompt_tokens.empty()) fail("-p: the prompt encodes to no tokens");
        if (chat_tpl)
            std::fprintf(stderr, "moe run: --chat: %s template from %s: %zu prompt tokens\n",
                         std::string(chat_style_name(chat_tpl->style)).c_str(), chat_tpl->origin.c_str(),
                         prompt_tokens.size());
    } else {
        prompt_tokens = parse_ids(prompt_ids_text, desc.n_vocab);
    }
    const int need_ctx = int(prompt_tokens.size()) + n_predict;
    if (n_ctx == 0) n_ctx = need_ctx;
    if (n_ctx < int(prompt_tokens.size()) + 1)
        fail("--ctx {}: the prompt has {} tokens; expected a context of at least {}", n_ctx, prompt_tokens.size(),
             prompt_tokens.size() + 1);

    engine_config ec;
    ec.n_ctx = n_ctx;
    ec.policy = policy;
    ec.n_threads = n_threads;
    ec.backend = parse_backend(backend_text);
    ec.host_budget_bytes = host_budget.value_or(0);

    // The budget covers resident weights + KV cache + workspaces + expert slots; the slots get what is left.
    // Planned (and refused) before the weights load.
    const uint64_t slot = engine::slot_bytes_for(desc);
    const uint32_t n_total = uint32_t(desc.layout.n_moe_layers * desc.layout.n_experts);
    const memory_need need = estimate_memory_need(mf, desc, ec.n_ctx, ec.n_batch, computes_on_cuda(ec.backend));
    const bool budget_auto = !budget;
    budget_plan plan;
    if (budget_auto)
        std::fputs(
            size_budgets_from_free_memory(model_path, desc, need, ec, host_budget.has_value(), plan).c_str(),
            stderr);
    else
        plan = plan_compute_budget(*budget, need, slot, n_total, uint32_t(desc.n_experts_used), model_path,
                                   "--vram-budget");
    ec.expert_budget_bytes = plan.expert_bytes();
    const std::string budget_name =
        budget_auto ? std::string("the budget sized from free memory") : "--vram-budget " + format_bytes(*budget);

    // lru-layer splits the slots evenly between the MoE layers and evicts only within a layer, so each layer's
    // share must hold its top-k: refuse here rather than fail on the first layer that runs out.
    const uint64_t n_moe = uint64_t(std::max(1, desc.layout.n_moe_layers));
    if (policy == "lru-layer" && plan.n_slots < uint64_t(desc.n_experts_used) * n_moe) {
        const uint32_t want = uint32_t(uint64_t(desc.n_experts_used) * n_moe);
        const uint64_t need_total = need.total() + uint64_t(want) * slot;
        fail(
            "{}: {} ({} bytes) is too small for --policy lru-layer: it gives each of the {} MoE layers an equal "
            "share of the slots, and each share must hold top-{} experts, so it needs at least {} ({} bytes) = {}; "
            "use another policy or a larger budget",
            model_path, budget_name, plan.budget_bytes, desc.layout.n_moe_layers, desc.n_experts_used,
            format_bytes(need_total), need_total, format_breakdown(need, want, slot));
    }
    // With lru-layer, prefetches still loading hold slots of their layer's share (the prefetcher starts at most
    // --prefetch-k loads per layer and step), and a share cannot borrow from other layers: unless each share holds
    // top-k plus those, a demand can find every slot of its share pinned or loading. Generation goes on without
    // prefetch then.
    if (use_prefetch && policy == "lru-layer" && !plan.every_expert) {
        const uint64_t share = plan.n_slots / n_moe;
        const uint64_t want = uint64_t(desc.n_experts_used) + uint64_t(per_layer);
        if (share < want) {
            warn_once("run.lru_layer_prefetch",
                      fmt::format("--prefetch {} turned off: --policy lru-layer gives each MoE layer {} slot(s) "
                                  "of {}, fewer than the {} a prefetch beside a demand needs",
                                  prefetch, share, budget_name, want));
            use_prefetch = false;
            prefetch = "none (off: lru-layer share too small)";
        }
    }
    if (use_prefetch) {
        ec.prefetch.mode = parse_prefetch_mode(prefetch, "--prefetch");
        ec.prefetch.depth = prefetch_depth;
        ec.prefetch.per_layer = prefetch_k;
    }
    // The host tier sits under the expert slots and needs at least as many slots (engine.h); refuse before loading.
    if (host_budget) {
        const uint64_t above = plan.n_slots;
        if (*host_budget / slot < above)
            fail(
                "{}: --host-budget {} ({} bytes) holds {} slot(s) of {}, fewer than the {} expert slot(s) of the "
                "{} above it; the host tier needs at least {} ({} bytes)",
                model_path, format_bytes(*host_budget), *host_budget, *host_budget / slot, format_bytes(slot), above,
                budget_auto ? "budget sized from free memory" : "--vram-budget", format_bytes(above * slot),
                above * slot);
    }
    ec.load_progress = load_progress_reporter("moe run", ::isatty(::fileno(stderr)) != 0);
    const auto t_load = clock_type::now();
    engine eng(model_path, ec);
    const double load_s = seconds_since(t_load);
    // The plan rested on an estimate: hold the engine to the budget before anything runs.
    const footprint fp = measure_footprint(eng);
    check_footprint(fp, plan, model_path);

    routing_trace trace;
    trace.model = trace_model_name(desc.name);
    trace.n_layers = uint32_t(desc.layout.n_moe_layers);
    trace.n_experts = uint32_t(desc.layout.n_experts);
    trace.top_k = uint32_t(desc.n_experts_used);
    if (!trace_path.empty())
        eng.set_routing_observer([&trace](int pos, int moe_layer, std::span<const int> ex, std::span<const float> w) {
            trace_row r;
            r.seq = 0;
            r.token = uint32_t(pos);
            r.layer = uint32_t(moe_layer);
            r.experts.assign(ex.begin(), ex.end());
            r.weights.assign(w.begin(), w.end());
            trace.rows.push_back(std::move(r));
        });

    sampler smp(sc);
    for (int t : prompt_tokens) smp.accept(t);

    const auto t_prompt = clock_type::now();
    const float* logits = eng.prefill(prompt_tokens);
    const double prompt_s = seconds_since(t_prompt);

    std::vector<int> generated;
    std::string text;
    double decode_s = 0.0;
    uint64_t n_decoded = 0;
    bool stopped_eog = false;
    const size_t V = size_t(desc.n_vocab);
    while (true) {
        const int next = smp.sample(std::span<const float>(logits, V));
        if (tok && tok->is_eog(next)) {
            stopped_eog = true;
            break;
        }
        generated.push_back(next);
        smp.accept(next);
        std::string piece = tok ? tok->token_to_piece(next, false) : fmt::format("{} ", next);
        text += piece;
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
        if (int(generated.size()) >= n_predict) break;
        if (int(prompt_tokens.size() + generated.size()) >= n_ctx) {
            std::fprintf(stderr, "\nmoe run: context of %d positions is full; stopping\n", n_ctx);
            break;
        }
        const auto t0 = clock_type::now();
        logits = eng.decode(next);
        decode_s += seconds_since(t0);
        ++n_decoded;
    }
    std::fputc('\n', stdout);
    std::fflush(stdout);

    const cache_stats cs = eng.stats();
    const layer_stats tot = cs.total();
    const uint64_t slot_bytes = eng.expert_slot_bytes();
    const uint32_t n_slots = eng.n_expert_slots();
    const uint32_t n_total_experts = n_total;
    const std::vector<link_row> links = engine_links(eng);

    std::string s;
    s += fmt::format("\n--- moe run: {} ({} MoE layers x {} experts, top-{})\n", model_path, desc.layout.n_moe_layers,
                     desc.layout.n_experts, desc.n_experts_used);
    s += fmt::format("load       {:.3f} s, resident weights {}, backend {}\n", load_s, format_bytes(eng.resident_bytes()),
                     eng.backend_name());
    s += fmt::format("prompt     {} tokens in {:.3f} s = {:.1f} tokens/s\n", prompt_tokens.size(), prompt_s,
                     rate(prompt_tokens.size(), prompt_s));
    s += fmt::format("decode     {} tokens generated{}, {} evaluated in {:.3f} s = {:.1f} tokens/s\n", generated.size(),
                     stopped_eog ? " (stopped at end-of-generation)" : "", n_decoded, decode_s,
                     rate(n_decoded, decode_s));
    s += fmt::format("memory     {} <= {} {} ({} in {})\n", format_footprint(fp),
                     budget_auto ? "usable" : "budget", format_bytes(plan.budget_bytes),
                     budget_auto ? "free memory less the margin" : "--vram-budget",
                     eng.resident_backend_bytes() > 0 ? "VRAM" : "RAM");
    s += fmt::format("cache      policy {}, prefetch {}, {} slots of {} = {} ({:.1f}% of {} experts)\n",
                     eng.policy_name(), prefetch, n_slots, format_bytes(slot_bytes),
                     format_bytes(uint64_t(n_slots) * slot_bytes),
                     100.0 * double(n_slots) / double(std::max(1u, n_total_experts)), n_total_experts);
    s +=
        fmt::format("hit rate   {:.1f}% ({} hits, {} misses, {} evictions, {} prefetch loads, {} prefetch hits)\n",
                    100.0 * tot.hit_rate(), tot.hits, tot.misses, tot.evictions, tot.prefetch_loads, tot.prefetch_hits);
    s += "per layer ";
    for (size_t l = 0; l < cs.layers.size(); ++l) s += fmt::format(" {}:{:.1f}%", l, 100.0 * cs.layers[l].hit_rate());
    s += "\n";
    s += fmt::format("loaded     {} ({} bytes) in {} loads; {:.3f} ms waiting on loads\n",
                     format_bytes(tot.bytes_loaded), tot.bytes_loaded, tot.loads, double(tot.wait_ns) / 1e6);
    const layer_stats host = eng.host_stats().total();
    if (eng.has_host_tier())
        s += fmt::format(
            "host tier  {} slots = {} pinned RAM: {:.1f}% of the misses above served from RAM ({} hits, {} misses), "
            "{} read from the file\n",
            eng.n_host_slots(), format_bytes(uint64_t(eng.n_host_slots()) * slot_bytes), 100.0 * host.hit_rate(),
            host.hits, host.misses, format_bytes(host.bytes_loaded));
    s += links_summary(links);
    const auto pf_layers = eng.prefetch_stats();
    if (!pf_layers.empty()) s += prefetch_summary(cs, pf_layers, prefetch_depth, per_layer);
    std::fputs(s.c_str(), stderr);

    if (!trace_path.empty()) {
        write_trace(trace_path, trace);
        std::fprintf(stderr, "trace      %zu rows -> %s\n", trace.rows.size(), trace_path.c_str());
    }
    if (!stats_path.empty()) {
        json j;
        j["model"] = model_path;
        j["prompt_tokens"] = prompt_tokens;
        j["prompt_text"] = prompt.empty() ? json(nullptr) : json(prompt_text);
        j["chat_template"] = chat_tpl ? json(std::string(chat_style_name(chat_tpl->style))) : json(nullptr);
        j["tokens"] = generated;
        j["text"] = tok ? json(text) : json(nullptr);
        j["stopped_at_eog"] = stopped_eog;
        j["hit_rate"] = tot.hit_rate();
        j["prompt_tokens_per_s"] = rate(prompt_tokens.size(), prompt_s);
        j["decode_tokens_per_s"] = rate(n_decoded, decode_s);
        j["prompt_s"] = prompt_s;
        j["decode_s"] = decode_s;
        j["n_decoded"] = n_decoded;
        // docs/prefetch.md defines these; all 0 with --prefetch none (no needed expert came from a prefetch).
        prefetcher_layer_stats pf_tot;
        for (const auto& p : pf_layers) pf_tot += p;
        j["prefetch_recall"] = tot.prefetch_recall();
        j["prefetch_precision"] = tot.prefetch_precision();
        j["prefetch_wasted_bytes"] = tot.prefetch_unused_bytes;
        j["prefetch_wasted"] = tot.prefetch_wasted();
        j["prefetch_cancelled"] = tot.cancelled_loads;
        j["prefetch_prediction_recall"] = pf_tot.prediction_recall();
        j["prefetch_loads"] = tot.prefetch_loads;
        j["prefetch_hits"] = tot.prefetch_hits;
        j["prefetch_joins"] = tot.prefetch_joins;
        j["prefetch_depth"] = use_prefetch ? prefetch_depth : 0;
        j["prefetch_k"] = use_prefetch ? per_layer : 0;
        json layers = json::array();
        for (size_t l = 0; l < cs.layers.size(); ++l) {
            const layer_stats& L = cs.layers[l];
            layers.push_back({{"layer", l},
                              {"hits", L.hits},
                              {"misses", L.misses},
                              {"hit_rate", L.hit_rate()},
                              {"evictions", L.evictions},
                              {"loads", L.loads},
                              {"bytes_loaded", L.bytes_loaded},
                              {"wait_ms", double(L.wait_ns) / 1e6},
                              {"prefetch_recall", L.prefetch_recall()},
                              {"prefetch_precision", L.prefetch_precision()},
                              {"prefetch_wasted_bytes", L.prefetch_unused_bytes},
                              {"prefetch_loads", L.prefetch_loads},
                              {"prefetch_used", L.prefetch_used()},
                              {"prefetch_cancelled", L.cancelled_loads},
                              {"prefetch_prediction_recall",
                               l < pf_layers.size() ? pf_layers[l].prediction_recall() : 0.0}});
        }
        j["per_layer"] = layers;
        j["hits"] = tot.hits;
        j["misses"] = tot.misses;
        j["evictions"] = tot.evictions;
        j["bytes_loaded"] = tot.bytes_loaded;
        j["wait_ms"] = double(tot.wait_ns) / 1e6;
        // The whole compute-memory budget (--vram-budget, or the usable free memory when sized automatically) and
        // what the engine holds in it, measured after it was built.
        j["budget_bytes"] = plan.budget_bytes;
        j["budget_unlimited"] = false;
        j["budget_auto"] = budget_auto;  // sized from free memory (no --vram-budget)
        j["memory"] = {{"resident_bytes", fp.need.resident_bytes},
                       {"kv_cache_bytes", fp.need.kv_bytes},
                       {"workspace_bytes", fp.need.workspace_bytes},
                       {"expert_slot_bytes", fp.expert_bytes()},
                       {"total_bytes", fp.total()},
                       {"budget_bytes", plan.budget_bytes},
                       {"n_ctx", n_ctx}};
        j["expert_budget_bytes"] = fp.expert_bytes();
        j["links"] = links_json(links);
        j["host_slots"] = eng.n_host_slots();
        j["host_budget_bytes"] = uint64_t(eng.n_host_slots()) * slot_bytes;
        j["host_hits"] = host.hits;
        j["host_misses"] = host.misses;
        j["host_hit_rate"] = host.hit_rate();
        j["host_bytes_loaded"] = host.bytes_loaded;
        j["n_slots"] = n_slots;
        j["slot_bytes"] = slot_bytes;
        j["policy"] = std::string(eng.policy_name());
        j["backend"] = std::string(eng.backend_name());
        j["prefetch"] = prefetch;
        std::ofstream out(stats_path);
        if (!out) fail("--stats-json {}: cannot open for writing", stats_path);
        out << j.dump(1) << "\n";
        if (!out) fail("--stats-json {}: write failed", stats_path);
    }
    return 0;
}

}  // namespace moe::cli
