// The OpenAI-style request bodies `moe serve` accepts, parsed and checked into one plain struct. Everything a
// client can get wrong is found here, before a request reaches the scheduler, and reported as an api_error with
// the HTTP status and the OpenAI error type and parameter name the official clients expect.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/chat_template.h"
#include "runtime/sampler.h"

namespace moe::serve {

// An error for the client: status 400 (invalid_request_error), 401 (authentication_error), 404
// (not_found_error / model_not_found), 413, 429 (rate_limit_error), 500 (server_error), 503 (unavailable).
struct api_error : std::runtime_error {
    api_error(int status, std::string type, std::string message, std::string param = {}, std::string code = {})
        : std::runtime_error(message),
          status(status),
          type(std::move(type)),
          param(std::move(param)),
          code(std::move(code)) {}
    int status;
    std::string type;   // "invalid_request_error", ...
    std::string param;  // the offending field, or empty
    std::string code;   // "context_length_exceeded", "model_not_found", ... or empty
};

api_error invalid_request(std::string message, std::string param = {}, std::string code = {});

// The body of an error reply: {"error": {"message", "type", "param", "code"}}.
std::string error_body(const api_error& e);

enum class request_kind { CHAT, COMPLETION };

struct completion_request {
    request_kind kind = request_kind::CHAT;
    std::string model;                   // as sent (empty: not sent)
    std::vector<chat_message> messages;  // CHAT
    std::string prompt_text;             // COMPLETION with a text prompt
    std::vector<int> prompt_ids;         // COMPLETION with token ids
    bool prompt_is_ids = false;
    std::optional<int> max_tokens;  // max_tokens / max_completion_tokens
    sampler_config sampling;        // temperature, top_p, top_k, min_p, seed, repeat_penalty
    bool seeded = false;            // a seed was given (else the server draws one)
    std::vector<std::string> stop;  // up to 4 non-empty strings
    bool ignore_eos = false;        // llama-server's extension: generate max_tokens whatever the model says
    bool stream = false;
    bool include_usage = false;  // stream_options.include_usage
};

// Parses and checks a POST body of /v1/chat/completions or /v1/completions. Throws api_error (400) for malformed
// JSON, a wrong type, a missing or empty field, an out-of-range value or an unsupported option (n != 1, tools,
// logprobs, ...). Never throws anything else for any input.
completion_request parse_request(std::string_view body, request_kind kind);

}  // namespace moe::serve
