// `moe bench run -m MODEL [--budgets 100,50,25] [--prompt-tokens 64] [--gen-tokens 32] [--threads N] [--json]
// [--llama-cpp auto|off]`: tokens/s of prompt processing and decode at a set of expert budgets, given as a
// percentage of the model's experts, with the hit rate and bytes loaded at each. Every budget gets a fresh engine
// (an empty expert cache) and the same prompt: fixed pseudo-random token ids, so no tokenizer is needed and no
// end-of-generation token stops the decode (greedy argmax tokens are fed back). Timings cover the evaluation only,
// not loading the resident weights. The percentages are of the expert bytes only (the slots); each budget's row
// also reports the total footprint in compute memory, measured from the engine: resident weights, KV cache and
// workspaces besides the slots (what `moe run --vram-budget` must cover).
//
// For a yardstick it runs llama.cpp on the same GGUF, with the same threads, prompt ids and token counts, through
// llama-cpp-python (scripts/llamacpp_bench.py, a subprocess printing JSON), when that package is importable;
// llama.cpp keeps every expert in RAM (mmap), so it is the "no cache" reference on the CPU.
//
// --routing-trace FILE (benchmarks on random-weight models): each MoE layer's expert choice is taken from the next
// row of that layer in a moe-trace v1 file instead of the router (runtime/trace_routing.h), so the cache sees the
// locality of a recorded run; every budget replays the trace from its start. The logits then no longer follow the
// model; the table's header and the JSON ("routing") say which routing was used.
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/units.h"
#include "prefetch/prefetcher.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/engine.h"
#include "runtime/model_desc.h"
#include "runtime/model_file.h"
#include "runtime/run_stats.h"
#include "runtime/trace_routing.h"

#ifndef MOE_SOURCE_DIR
#define MOE_SOURCE_DIR "."
#endif

namespace moe::cli {

namespace {

using json = nlohmann::ordered_json;

std::vector<int> parse_percents(const std::string& text) {
    std::vector<int> out;
    for (const std::string& item : split_commas(text)) {
        const std::optional<int> v = parse_int(item);
        if (!v || *v <= 0 || *v > 100)
            fail(
                "--budgets: '{}' is not a percentage: expected comma-separated integers in 1..100 (% of the "
                "model's experts), like 100,50,25",
                item);
        out.push_back(*v);
    }
    if (out.empty()) fail("--budgets: no budgets given: expected percentages like 100,50,25");
    return out;
}

struct budget_result {
    int percent = 0;       // requested
    bool clamped = false;  // raised to the smallest workable budget
    uint32_t n_slots = 0;
    uint64_t budget_bytes = 0;
    double load_s = 0, prompt_s = 0, decode_s = 0;
    layer_stats total;   // prompt + decode
    layer_stats decode;  // decode only
    std::string backend;
    footprint memory;  // what the engine held in compute memory (slots included)
};

layer_stats minus(const layer_stats& a, const layer_stats& b) {
    layer_stats d;
    d.hits = a.hits - b.hits;
    d.misses = a.misses - b.misses;
    d.evictions = a.evictions - b.evictions;
    d.loads = a.loads - b.loads;
    d.bytes_loaded = a.bytes_loaded - b.bytes_loaded;
    d.wait_ns = a.wait_ns - b.wait_ns;
    return d;
}

budget_result run_budget(const std::string& path, const model_desc& d, int percent, const std::vector<int>& prompt,
                         int gen_tokens, int threads, backend_kind backend, const std::string& policy,
                         prefetch_mode prefetch, const routing_trace* trace, const std::string& trace_path) {
    const uint64_t slot = engine::slot_bytes_for(d);
    const uint32_t n_total = uint32_t(d.layout.n_moe_layers * d.layout.n_experts);
    const uint32_t min_slots = uint32_t(d.n_experts_used);
    budget_result r;
    r.percent = percent;
    const uint32_t want = uint32_t(uint64_t(n_total) * uint64_t(percent) / 100);
    r.clamped = want < min_slots;
    r.n_slots = std::max(want, min_slots);
    r.budget_bytes = uint64_t(r.n_slots) * slot;

    engine_config ec;
    ec.n_ctx = int(prompt.size()) + gen_tokens + 1;
    ec.expert_budget_bytes = r.budget_bytes;
    ec.policy = policy;
    ec.n_threads = threads;
    ec.backend = backend;
    ec.prefetch.mode = prefetch;
    const auto t_load = clock_type::now();
    engine eng(path, ec);
    r.load_s = seconds_since(t_load);
    r.backend = std::string(eng.backend_name());
    r.n_slots = eng.n_expert_slots();
    r.memory = measure_footprint(eng.get_model(), eng.get_offloader(), eng.get_session());

    // Greedy, no end-of-generation stop: every budget decodes the same gen_tokens steps. The prompt's figures are
    // taken when the first token is sampled (before any decode step).
    layer_stats after_prompt;
    bool first = true;
    session& ses = eng.get_session();
    if (trace) ses.set_routing_override(trace_routing_override(*trace, d, trace_path));
    sampler_config greedy;
    greedy.temperature = 0.0f;
    ses.set_sampler(greedy);
    // A long prompt shows its progress on a terminal.
    generate_hooks hooks;
    const auto t_prompt = clock_type::now();
    if (::isatty(::fileno(stderr)) && prompt.size() >= 256)
        hooks.prefill_progress = [&](size_t done, size_t total) {
            std::fprintf(stderr, "\rmoe bench run: budget %d%%: prompt %zu / %zu tokens, %.1f tokens/s ", percent, done,
                         total, rate(done, seconds_since(t_prompt)));
            if (done == total) std::fputc('\n', stderr);
        };
    const generation g = ses.generate(
        prompt, gen_tokens + 1, nullptr,
        [&](int) {
            if (first) after_prompt = eng.stats().total(), first = false;
            return true;
        },
        nullptr, hooks);
    r.prompt_s = g.prompt_s;
    r.decode_s = g.decode_s;
    r.total = eng.stats().total();
    r.decode = minus(r.total, after_prompt);
    return r;
}

// Runs argv (no shell), returns its exit status and stdout; stderr is discarded (llama.cpp logs there).
std::pair<int, std::string> run_capture(const std::vector<std::string>& argv) {
    int fds[2];
    if (::pipe(fds) != 0) fail("bench run: pipe() failed");
    const pid_t pid = ::fork();
    if (pid < 0) fail("bench run: fork() failed");
    if (pid == 0) {
        ::dup2(fds[1], STDOUT_FILENO);
        if (FILE* null = std::freopen("/dev/null", "w", stderr); null == nullptr) _exit(126);
        ::close(fds[0]);
        ::close(fds[1]);
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execvp(args[0], args.data());
        _exit(127);
    }
    ::close(fds[1]);
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
        if (n > 0) out.append(buf, size_t(n));
    ::close(fds[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out};
}

// llama.cpp through scripts/llamacpp_bench.py: the script's JSON object, or {status, message} when it could not
// run. "status" is "ok", "not installed", "off", "skipped" or "failed".
json run_llama_cpp(const std::string& mode, const std::string& script, const std::string& python, const model_file& mf,
                   const std::vector<int>& prompt, int gen_tokens, int threads) {
    if (mode == "off") return {{"status", "off"}, {"message", "--llama-cpp off"}};
    if (mf.format != model_format::GGUF) return {{"status", "skipped"}, {"message", "llama.cpp reads GGUF files only"}};
    if (::access(script.c_str(), R_OK) != 0)
        return {{"status", "failed"}, {"message", fmt::format("{} not found (pass --llama-cpp-script)", script)}};
    std::string ids;
    for (size_t i = 0; i < prompt.size(); ++i) ids += (i ? "," : "") + std::to_string(prompt[i]);
    const auto [status, out] =
        run_capture({python, script, "--model", mf.paths[0], "--threads", std::to_string(threads), "--prompt-ids", ids,
                     "--gen-tokens", std::to_string(gen_tokens)});
    // The last line that is a JSON object is the answer (llama.cpp may print on stdout before it).
    std::istringstream lines(out);
    std::string line, last;
    while (std::getline(lines, line))
        if (!line.empty() && line.front() == '{') last = line;
    json j = json::parse(last, nullptr, false);
    if (last.empty() || j.is_discarded() || !j.is_object() || !j.contains("status") || !j["status"].is_string())
        return {{"status", "failed"},
                {"message", fmt::format("{} {} exited with status {} without a JSON answer", python, script, status)}};
    const std::string st = j["status"];
    if (st == "ok") {
        for (const char* key : {"prompt_tokens_per_s", "decode_tokens_per_s"})
            if (!j.contains(key) || !j[key].is_number())
                return {{"status", "failed"},
                        {"message", fmt::format("{}: answer without a number '{}'", script, key)}};
        if (j.value("prompt_tokens", -1) != int(prompt.size()) || j.value("gen_tokens", -1) != gen_tokens)
            return {{"status", "failed"},
                    {"message",
                     fmt::format("{}: measured {} prompt / {} generated tokens, asked for {} / {}", script,
                                 j.value("prompt_tokens", -1), j.value("gen_tokens", -1), prompt.size(), gen_tokens)}};
    } else if (st != "not installed" && st != "failed") {
        return {{"status", "failed"}, {"message", fmt::format("{}: unknown status '{}'", script, st)}};
    }
    return j;
}

std::string llama_cpp_line(const json& l, int threads) {
    const std::string st = l["status"];
    if (st == "ok")
        return fmt::format(
            "llama.cpp  {} (llama-cpp-python {}, same GGUF, {} threads, every expert in RAM): prompt "
            "{:.1f} tokens/s, decode {:.1f} tokens/s",
            l.value("backend", std::string("cpu")), l.value("version", std::string("?")), threads,
            l["prompt_tokens_per_s"].get<double>(), l["decode_tokens_per_s"].get<double>());
    if (st == "not installed") return "llama.cpp: not installed (pip install llama-cpp-python)";
    return fmt::format("llama.cpp: {}: {}", st, l.value("message", std::string()));
}

}  // namespace

int run_bench_run(int argc, char** argv) {
    CLI::App app{
        "Tokens/s of prompt processing and decode at several expert budgets (% of the model's experts), "
        "with hit rates and bytes loaded; beside llama.cpp on the same GGUF when llama-cpp-python is "
        "installed",
        "moe bench run"};
    std::string model_path, budgets_text = "100,50,25", llama_mode = "auto", policy = "lru", backend = "cpu";
    std::string prefetch = "none", trace_path;
    std::string script = std::string(MOE_SOURCE_DIR) + "/scripts/llamacpp_bench.py";
    int prompt_tokens = 64, gen_tokens = 32, threads = 0;
    uint64_t seed = 1;
    bool as_json = false;
    app.add_option("-m,--model", model_path, "model file (.gguf, .safetensors or a directory)")->required();
    app.add_option("--budgets", budgets_text,
                   "expert budgets in % of the model's experts (each raised to the "
                   "smallest workable one, top-k slots, when below it)")
        ->capture_default_str();
    app.add_option("--prompt-tokens", prompt_tokens, "prompt length (pseudo-random token ids)")
        ->check(CLI::Range(1, 1 << 16))
        ->capture_default_str();
    app.add_option("--gen-tokens", gen_tokens, "tokens decoded after the prompt (greedy)")
        ->check(CLI::Range(1, 1 << 16))
        ->capture_default_str();
    app.add_option("--threads", threads, "CPU threads, for moe and llama.cpp alike (0 = one per hardware thread)")
        ->check(CLI::Range(0, 4096))
        ->capture_default_str();
    app.add_option("--policy", policy, "eviction policy of the expert cache")->capture_default_str();
    app.add_option("--prefetch", prefetch, "none, spec, history or both (as moe run; depth 1, top-k guesses)")
        ->check(CLI::IsMember({"none", "spec", "history", "both"}))
        ->capture_default_str();
    app.add_option("--backend", backend, "where moe computes: cpu, cuda or auto (llama.cpp always runs on the CPU)")
        ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
        ->capture_default_str();
    app.add_option("--seed", seed, "seed of the prompt's token ids")->capture_default_str();
    app.add_option("--llama-cpp", llama_mode, "auto: also run llama.cpp (llama-cpp-python) on a GGUF; off: don't")
        ->check(CLI::IsMember({"auto", "off"}))
        ->capture_default_str();
    app.add_option("--llama-cpp-script", script, "the llama.cpp side (prints one JSON object)")->capture_default_str();
    app.add_option("--routing-trace", trace_path,
                   "benchmarks only: take each MoE layer's experts from the next row of this moe-trace v1 file "
                   "(same shape as the model) instead of the router; the output no longer follows the model");
    app.add_flag("--json", as_json, "print one JSON object instead of the table");
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::fprintf(stderr, "moe bench run: error: %s\n(see moe bench run --help)\n", e.what());
        return 2;
    }
    const std::vector<int> percents = parse_percents(budgets_text);
    if (threads == 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));

    const model_file mf = open_model_file(model_path);
    const model_desc d = describe_model(mf);
    check_forward_supported(d, model_path);
    std::optional<routing_trace> trace;
    if (!trace_path.empty()) {
        trace = read_trace(trace_path);
        (void)trace_routing_override(*trace, d, trace_path);  // refuses a trace of another shape before any run
    }
    const std::string routing = trace ? "trace " + trace_path : std::string("router");
    std::mt19937_64 rng(seed);
    std::vector<int> prompt(static_cast<size_t>(prompt_tokens));
    for (int& t : prompt) t = int(rng() % uint64_t(d.n_vocab));

    const uint64_t slot = engine::slot_bytes_for(d);
    const uint32_t n_total = uint32_t(d.layout.n_moe_layers * d.layout.n_experts);
    const uint32_t min_slots = uint32_t(d.n_experts_used);
    std::vector<budget_result> results;
    for (int p : percents) {
        const uint64_t want = uint64_t(n_total) * uint64_t(p) / 100;
        if (want < min_slots)
            std::fprintf(stderr,
                         "moe bench run: budget %d%% = %llu of %u expert slots is below the smallest workable budget: "
                         "raised to top-%u = %u slots (%s)\n",
                         p, (unsigned long long)want, n_total, min_slots, min_slots,
                         format_bytes(uint64_t(min_slots) * slot).c_str());
        else if (!as_json)
            std::fprintf(stderr, "moe bench run: budget %d%% ...\n", p);
        results.push_back(run_budget(model_path, d, p, prompt, gen_tokens, threads, parse_backend(backend), policy,
                                     parse_prefetch_mode(prefetch, "--prefetch"), trace ? &*trace : nullptr,
                                     trace_path));
    }
    const char* python_env = std::getenv("MOE_PYTHON");
    const json llama =
        run_llama_cpp(llama_mode, script, python_env ? python_env : "python3", mf, prompt, gen_tokens, threads);

    if (as_json) {
        json j;
        j["model"] = model_path;
        j["architecture"] = std::string(arch_name(d.architecture));
        j["backend"] = results.front().backend;
        j["threads"] = threads;
        j["policy"] = policy;
        j["prefetch"] = prefetch;
        j["routing"] = routing;
        j["prompt_tokens"] = prompt_tokens;
        j["gen_tokens"] = gen_tokens;
        j["n_experts_total"] = n_total;
        j["top_k"] = d.n_experts_used;
        j["expert_bytes_total"] = d.layout.total_bytes;
        j["slot_bytes"] = slot;
        j["min_budget_bytes"] = uint64_t(min_slots) * slot;
        json runs = json::array();
        for (const auto& r : results)
            runs.push_back({{"percent", r.percent},
                            {"clamped", r.clamped},
                            {"percent_effective", 100.0 * double(r.n_slots) / double(n_total)},
                            {"n_slots", r.n_slots},
                            {"budget_bytes", r.budget_bytes},
                            {"total_bytes", r.memory.total()},
                            {"memory",
                             {{"resident_bytes", r.memory.need.resident_bytes},
                              {"kv_cache_bytes", r.memory.need.kv_bytes},
                              {"workspace_bytes", r.memory.need.workspace_bytes},
                              {"expert_slot_bytes", r.memory.expert_bytes()}}},
                            {"load_s", r.load_s},
                            {"prompt_s", r.prompt_s},
                            {"prompt_tokens_per_s", rate(uint64_t(prompt_tokens), r.prompt_s)},
                            {"decode_s", r.decode_s},
                            {"decode_tokens_per_s", rate(uint64_t(gen_tokens), r.decode_s)},
                            {"hit_rate", r.total.hit_rate()},
                            {"prefetch_recall", r.total.prefetch_recall()},
                            {"decode_hit_rate", r.decode.hit_rate()},
                            {"hits", r.total.hits},
                            {"misses", r.total.misses},
                            {"evictions", r.total.evictions},
                            {"loads", r.total.loads},
                            {"bytes_loaded", r.total.bytes_loaded},
                            {"decode_bytes_loaded", r.decode.bytes_loaded},
                            {"wait_ms", double(r.total.wait_ns) / 1e6}});
        j["budgets"] = runs;
        j["llama_cpp"] = llama;
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }

    std::string s = fmt::format(
        "moe bench run: {} ({}, {} MoE layers x {} experts, top-{}), backend {}, {} threads, {} prompt + {} generated "
        "tokens, policy {}, prefetch {}, routing {}\n",
        model_path, arch_name(d.architecture), d.layout.n_moe_layers, d.layout.n_experts, d.n_experts_used,
        results.front().backend, threads, prompt_tokens, gen_tokens, policy, prefetch, routing);
    s += fmt::format("{:>8} {:>11} {:>12} {:>12} {:>14} {:>14} {:>9} {:>11} {:>12} {:>10}\n", "budget", "slots",
                     "bytes", "total", "prompt tok/s", "decode tok/s", "hit rate", "decode hit", "loaded", "wait ms");
    bool any_clamped = false;
    for (const auto& r : results) {
        any_clamped |= r.clamped;
        s += fmt::format("{:>7}% {:>11} {:>12} {:>12} {:>14.1f} {:>14.1f} {:>8.1f}% {:>10.1f}% {:>12} {:>10.1f}\n",
                         fmt::format("{}{}", r.clamped ? "*" : "", r.percent), fmt::format("{}/{}", r.n_slots, n_total),
                         format_bytes(r.budget_bytes), format_bytes(r.memory.total()),
                         rate(uint64_t(prompt_tokens), r.prompt_s), rate(uint64_t(gen_tokens), r.decode_s),
                         100.0 * r.total.hit_rate(), 100.0 * r.decode.hit_rate(), format_bytes(r.total.bytes_loaded),
                         double(r.total.wait_ns) / 1e6);
    }
    if (any_clamped)
        s += fmt::format(
            "* raised to the smallest workable budget: top-{} = {} slots = {} (one layer's experts are "
            "pinned at once)\n",
            min_slots, min_slots, format_bytes(uint64_t(min_slots) * slot));
    const footprint& m = results.front().memory;
    s += fmt::format(
        "bytes = expert slots (% of the expert bytes); total = what the engine held in compute memory: resident {} + "
        "KV cache {} + workspace {} + the slots (the --vram-budget `moe run` would need)\n",
        format_bytes(m.need.resident_bytes), format_bytes(m.need.kv_bytes), format_bytes(m.need.workspace_bytes));
    s += llama_cpp_line(llama, threads) + "\n";
    std::fputs(s.c_str(), stdout);
    return 0;
}

}  // namespace moe::cli
