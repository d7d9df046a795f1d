// The HTTP side of `moe serve` (cpp-httplib): OpenAI-compatible routes over one scheduler.
//   POST /v1/chat/completions   messages rendered with the model's chat template, `stream` as server-sent events
//   POST /v1/completions        a text prompt or token ids
//   GET  /v1/models, GET /health, GET /metrics (Prometheus text)
// Every error is an OpenAI-style error object ({"error": {"message", "type", "param", "code"}}) with its status:
// 400 bad request, 401 missing or wrong API key, 404 unknown model or route, 413 body too large, 429 queue full,
// 500 a failed step (an I/O error), 503 shutting down. docs/serve.md describes the API and its limits.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "runtime/chat_template.h"
#include "runtime/offloader.h"
#include "runtime/serve/scheduler.h"
#include "runtime/tokenizer.h"

namespace httplib {
class Server;
}

namespace moe::serve {

struct server_options {
    std::string host = "127.0.0.1";
    int port = 8080;                   // 0: any free port (bound_port() says which)
    std::string api_key;               // when set, every /v1 route needs "Authorization: Bearer <key>"
    std::string model_id;              // the name /v1/models lists and requests may give as "model"
    size_t max_body_bytes = 4u << 20;  // larger bodies get 413
    int io_timeout_s = 30;             // a client slower than this to send a request or take a reply is cut off
    int n_http_threads = 0;            // 0: enough for every slot and queued request, plus a few
};

class server {
public:
    // The scheduler, offloader and tokenizer must outlive the server. Without a chat template (the file's is not
    // one we can render) /v1/chat/completions answers 400 and /v1/completions still works.
    server(scheduler& sched, const offloader& off, const tokenizer& tok, std::optional<chat_template> chat,
           const server_options& opts);
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    // Binds the listening socket; throws moe::error when the address cannot be bound. Returns the port.
    int bind();
    int bound_port() const { return _port; }
    // Serves until stop() (blocks; call from its own thread).
    void listen();
    // Stops accepting connections and returns once the handlers in flight have ended.
    void stop();
    // Completion replies being produced or sent (for a graceful shutdown: wait for 0 before stop()).
    int in_flight() const { return _in_flight->load(); }

private:
    void routes();

    scheduler& _sched;
    const offloader& _off;
    const tokenizer& _tok;
    std::optional<chat_template> _chat;
    server_options _opts;
    std::shared_ptr<std::atomic<int>> _in_flight = std::make_shared<std::atomic<int>>(0);
    std::unique_ptr<httplib::Server> _http;
    int _port = -1;
};

}  // namespace moe::serve
