// The HTTP routes of `moe serve` (see server.h).
#include "runtime/serve/server.h"

#include <fmt/format.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <nlohmann/json.hpp>
#include <random>

#include "common/error.h"
#include "runtime/serve/api_request.h"
#include "runtime/serve/metrics.h"

namespace moe::serve {

namespace {

using json = nlohmann::ordered_json;
using namespace std::chrono_literals;

// Model output can end inside a UTF-8 character or hold invalid bytes: those become U+FFFD, never a broken reply.
std::string dump(const json& j) {
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void send_error(httplib::Response& res, const api_error& e) {
    res.status = e.status;
    res.set_content(error_body(e), "application/json");
}

int64_t unix_now() {
    return int64_t(std::time(nullptr));
}

std::atomic<uint64_t> g_next_id{1};

std::string reason_text(finish_reason r) {
    return std::string(finish_reason_name(r));
}

json usage_json(const job::update& u) {
    return json{{"prompt_tokens", u.n_prompt},
                {"completion_tokens", u.n_completion},
                {"total_tokens", u.n_prompt + u.n_completion}};
}

// What a reply needs to know about its request.
struct reply_info {
    request_kind kind = request_kind::CHAT;
    std::string id, model;
    int64_t created = 0;
    bool include_usage = false;
};

// One streamed chunk: new text, or (finish set) the end.
json chunk_json(const reply_info& ri, const std::string& text, const std::string* finish, bool first) {
    json choice = {{"index", 0}};
    if (ri.kind == request_kind::CHAT) {
        json delta = json::object();
        if (first) delta["role"] = "assistant";
        if (!finish) delta["content"] = text;
        choice["delta"] = delta;
    } else {
        choice["text"] = text;
    }
    choice["logprobs"] = nullptr;
    choice["finish_reason"] = finish ? json(*finish) : json(nullptr);
    return json{{"id", ri.id},
                {"object", ri.kind == request_kind::CHAT ? "chat.completion.chunk" : "text_completion"},
                {"created", ri.created},
                {"model", ri.model},
                {"choices", json::array({choice})}};
}

json reply_json(const reply_info& ri, const std::string& text, const job::update& u) {
    json choice = {{"index", 0}};
    if (ri.kind == request_kind::CHAT)
        choice["message"] = json{{"role", "assistant"}, {"content", text}};
    else
        choice["text"] = text;
    choice["logprobs"] = nullptr;
    choice["finish_reason"] = reason_text(u.reason);
    return json{{"id", ri.id},
                {"object", ri.kind == request_kind::CHAT ? "chat.completion" : "text_completion"},
                {"created", ri.created},
                {"model", ri.model},
                {"choices", json::array({choice})},
                {"usage", usage_json(u)}};
}

// A job that ended without an answer, as the error the client gets.
api_error job_error(const job::update& u) {
    if (u.reason == finish_reason::CANCELLED)
        return api_error(503, "unavailable", "the request was cancelled: the server is shutting down");
    return api_error(500, "server_error", fmt::format("generation failed: {}", u.error));
}

// Server-sent events: a chunk per piece of text as the scheduler releases it, the end (finish reason, usage when
// asked for) and [DONE]. A comment line every 2 s without text keeps the connection checked: a write that fails
// means the client went away, and the job is cancelled at once (so is one whose response ends any other way).
// Counts a reply in flight for as long as it lives.
struct in_flight_mark {
    explicit in_flight_mark(std::shared_ptr<std::atomic<int>> c) : count(std::move(c)) { ++*count; }
    ~in_flight_mark() { --*count; }
    in_flight_mark(const in_flight_mark&) = delete;
    in_flight_mark& operator=(const in_flight_mark&) = delete;
    std::shared_ptr<std::atomic<int>> count;
};

void stream_reply(httplib::Response& res, std::shared_ptr<job> j, const reply_info& ri,
                  std::shared_ptr<in_flight_mark> mark) {
    struct state {
        std::shared_ptr<job> j;
        reply_info ri;
        std::shared_ptr<in_flight_mark> mark;  // released with the response
        bool first = true;
        std::chrono::steady_clock::time_point last_write = std::chrono::steady_clock::now();
    };
    auto st = std::make_shared<state>(state{std::move(j), ri, std::move(mark)});
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [st](size_t, httplib::DataSink& sink) {
            const auto send = [&](const std::string& payload) {
                st->last_write = std::chrono::steady_clock::now();
                if (sink.write(payload.data(), payload.size())) return true;
                st->j->cancel();
                return false;
            };
            const auto event = [&](const json& e) { return send("data: " + dump(e) + "\n\n"); };
            if (st->first) {
                st->first = false;
                if (st->ri.kind == request_kind::CHAT) return event(chunk_json(st->ri, "", nullptr, true));
            }
            const job::update u = st->j->wait_for(250ms);
            if (!u.text.empty() && !event(chunk_json(st->ri, u.text, nullptr, false))) return false;
            if (!u.done) {
                if (u.text.empty() && std::chrono::steady_clock::now() - st->last_write > 2s)
                    return send(": keep-alive\n\n");
                return true;
            }
            if (u.reason == finish_reason::ERROR || u.reason == finish_reason::CANCELLED) {
                event(json::parse(error_body(job_error(u))));
            } else {
                const std::string fr = reason_text(u.reason);
                if (!event(chunk_json(st->ri, "", &fr, false))) return false;
                if (st->ri.include_usage) {
                    json c = chunk_json(st->ri, "", nullptr, false);
                    c["choices"] = json::array();
                    c["usage"] = usage_json(u);
                    if (!event(c)) return false;
                }
            }
            send("data: [DONE]\n\n");
            sink.done();
            return true;
        },
        [st](bool) {
            st->j->cancel();
            st->mark.reset();
        });
}

}  // namespace

server::server(scheduler& sched, const offloader& off, const tokenizer& tok, std::optional<chat_template> chat,
               const server_options& opts)
    : _sched(sched), _off(off), _tok(tok), _chat(chat), _opts(opts), _http(std::make_unique<httplib::Server>()) {
    const scheduler_config& sc = sched.config();
    const int n_threads = opts.n_http_threads > 0 ? opts.n_http_threads : sc.n_parallel + sc.max_queue + 8;
    _http->new_task_queue = [n_threads] { return new httplib::ThreadPool(size_t(n_threads)); };
    _http->set_payload_max_length(opts.max_body_bytes);
    _http->set_read_timeout(opts.io_timeout_s, 0);
    _http->set_write_timeout(opts.io_timeout_s, 0);
    routes();
}

server::~server() {
    stop();
}

int server::bind() {
    const int port = _opts.port == 0 ? _http->bind_to_any_port(_opts.host) : _opts.port;
    if (_opts.port != 0 && !_http->bind_to_port(_opts.host, _opts.port))
        fail("moe serve: cannot listen on {}:{}: the address is in use or not available", _opts.host, _opts.port);
    if (port < 0) fail("moe serve: cannot listen on {} (any port): the address is not available", _opts.host);
    _port = port;
    return port;
}

void server::listen() {
    _http->listen_after_bind();
}

void server::stop() {
    if (_http->is_running()) _http->stop();
}

void server::routes() {
    const auto authorised = [this](const httplib::Request& req) {
        if (_opts.api_key.empty()) return;
        const std::string want = "Bearer " + _opts.api_key;
        if (req.get_header_value("Authorization") != want)
            throw api_error(401, "invalid_request_error",
                            "missing or wrong API key: send the header 'Authorization: Bearer <key>'", "",
                            "invalid_api_key");
    };

    _http->Get("/health", [this](const httplib::Request&, httplib::Response& res) {
        const bool draining = _sched.draining();
        res.status = draining ? 503 : 200;
        res.set_content(dump(json{{"status", draining ? "shutting down" : "ok"}}), "application/json");
    });

    _http->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
        res.set_content(prometheus_metrics(_sched.metrics(), _off), "text/plain; version=0.0.4");
    });

    _http->Get("/v1/models", [this, authorised](const httplib::Request& req, httplib::Response& res) {
        try {
            authorised(req);
        } catch (const api_error& e) {
            return send_error(res, e);
        }
        const json model = {{"id", _opts.model_id},
                            {"object", "model"},
                            {"created", unix_now()},
                            {"owned_by", "moe-runtime"},
                            {"meta", {{"n_ctx", _sched.config().n_ctx}, {"n_parallel", _sched.config().n_parallel}}}};
        res.set_content(dump(json{{"object", "list"}, {"data", json::array({model})}}), "application/json");
    });

    const auto completion = [this, authorised](request_kind kind) {
        return [this, authorised, kind](const httplib::Request& req, httplib::Response& res) {
            auto mark = std::make_shared<in_flight_mark>(_in_flight);
            try {
                authorised(req);
                completion_request r = parse_request(req.body, kind);
                if (!r.model.empty() && r.model != _opts.model_id)
                    throw api_error(
                        404, "invalid_request_error",
                        fmt::format("the model '{}' does not exist: this server serves '{}'", r.model, _opts.model_id),
                        "model", "model_not_found");
                job_request jr;
                if (kind == request_kind::CHAT) {
                    if (!_chat)
                        throw invalid_request(
                            "this model's chat template is not one moe serve can render; use /v1/completions with "
                            "the prompt written in the model's format",
                            "messages");
                    const auto special = [&](int32_t id) { return id >= 0 ? _tok.text(id) : std::string(); };
                    const std::string text =
                        apply_chat_template(*_chat, r.messages, special(_tok.bos_id()), special(_tok.eos_id()));
                    for (int32_t t : _tok.encode(text, false, true)) jr.prompt.push_back(int(t));
                } else if (r.prompt_is_ids) {
                    jr.prompt = r.prompt_ids;
                } else {
                    for (int32_t t : _tok.encode(r.prompt_text, true, false)) jr.prompt.push_back(int(t));
                }
                jr.max_tokens = r.max_tokens.value_or(0);
                jr.sampling = r.sampling;
                if (!r.seeded) jr.sampling.seed = std::random_device{}();
                jr.stop = r.stop;
                jr.ignore_eos = r.ignore_eos;
                std::shared_ptr<job> j = _sched.submit(std::move(jr));

                reply_info ri;
                ri.kind = kind;
                ri.id = fmt::format("{}-{}", kind == request_kind::CHAT ? "chatcmpl" : "cmpl", g_next_id++);
                ri.model = _opts.model_id;
                ri.created = unix_now();
                ri.include_usage = r.include_usage;
                if (r.stream) return stream_reply(res, j, ri, std::move(mark));
                std::string text;
                job::update u;
                do {
                    u = j->wait_for(1s);
                    text += u.text;
                } while (!u.done);
                if (u.reason == finish_reason::ERROR || u.reason == finish_reason::CANCELLED)
                    return send_error(res, job_error(u));
                res.set_content(dump(reply_json(ri, text, u)), "application/json");
            } catch (const api_error& e) {
                send_error(res, e);
            } catch (const std::exception& e) {
                send_error(res, api_error(500, "server_error", e.what()));
            }
        };
    };
    _http->Post("/v1/chat/completions", completion(request_kind::CHAT));
    _http->Post("/v1/completions", completion(request_kind::COMPLETION));

    // Errors the library produces (unknown route, body too large, malformed HTTP) get an OpenAI error body too.
    _http->set_error_handler(
        httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
            if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
            std::string type = "invalid_request_error", msg;
            switch (res.status) {
                case 404:
                    type = "not_found_error";
                    msg = fmt::format("unknown route: {} {}", req.method, req.path);
                    break;
                case 413:
                    msg = "the request body is too large";
                    break;
                case 408:
                    msg = "the request took too long to arrive";
                    break;
                default:
                    msg = fmt::format("the request could not be handled (HTTP {})", res.status);
            }
            res.set_content(error_body(api_error(res.status, type, msg)), "application/json");
            return httplib::Server::HandlerResponse::Handled;
        }));
    _http->set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string msg = "internal error";
        try {
            std::rethrow_exception(ep);
        } catch (const std::exception& e) {
            msg = e.what();
        } catch (...) {
        }
        send_error(res, api_error(500, "server_error", msg));
    });
}

}  // namespace moe::serve
