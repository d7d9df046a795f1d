// Parsing and checking of OpenAI-style request bodies (see api_request.h).
#include "runtime/serve/api_request.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

namespace moe::serve {

using json = nlohmann::json;

api_error invalid_request(std::string message, std::string param, std::string code) {
    return api_error(400, "invalid_request_error", std::move(message), std::move(param), std::move(code));
}

std::string error_body(const api_error& e) {
    using ojson = nlohmann::ordered_json;
    ojson err = {{"message", e.what()},
                 {"type", e.type},
                 {"param", e.param.empty() ? ojson(nullptr) : ojson(e.param)},
                 {"code", e.code.empty() ? ojson(nullptr) : ojson(e.code)}};
    return ojson{{"error", err}}.dump(-1, ' ', false, ojson::error_handler_t::replace);
}

namespace {

// Deeper nesting than any real request has; refused before parsing so no input can exhaust the stack.
constexpr int k_max_depth = 32;

bool nesting_within(std::string_view body, int limit) {
    int depth = 0;
    bool in_string = false, escaped = false;
    for (char c : body) {
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > limit) return false;
        } else if (c == ']' || c == '}') {
            --depth;
        }
    }
    return true;
}

std::string type_name(const json& v) {
    if (v.is_number_integer()) return "integer";
    if (v.is_number()) return "number";
    return v.type_name();
}

api_error wrong_type(const std::string& field, const char* expected, const json& v) {
    return invalid_request(fmt::format("'{}' must be {}, got {}", field, expected, type_name(v)), field);
}

// Present and not null.
const json* field(const json& body, const char* name) {
    const auto it = body.find(name);
    if (it == body.end() || it->is_null()) return nullptr;
    return &*it;
}

std::optional<double> number(const json& body, const char* name, double lo, double hi) {
    const json* v = field(body, name);
    if (!v) return std::nullopt;
    if (!v->is_number()) throw wrong_type(name, "a number", *v);
    const double x = v->get<double>();
    if (!std::isfinite(x) || x < lo || x > hi)
        throw invalid_request(fmt::format("'{}' must be between {} and {}, got {}", name, lo, hi, x), name);
    return x;
}

std::optional<int64_t> integer(const json& body, const char* name, int64_t lo, int64_t hi) {
    const json* v = field(body, name);
    if (!v) return std::nullopt;
    if (!v->is_number_integer()) throw wrong_type(name, "an integer", *v);
    if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
        throw invalid_request(fmt::format("'{}' must be between {} and {}", name, lo, hi), name);
    const int64_t x = v->get<int64_t>();
    if (x < lo || x > hi)
        throw invalid_request(fmt::format("'{}' must be between {} and {}, got {}", name, lo, hi, x), name);
    return x;
}

std::optional<bool> boolean(const json& body, const char* name) {
    const json* v = field(body, name);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) throw wrong_type(name, "a boolean", *v);
    return v->get<bool>();
}

// A message's content: a string, or an array of {"type": "text", "text": "..."} parts joined.
std::string message_content(const json& v, const std::string& where) {
    if (v.is_string()) return v.get<std::string>();
    if (!v.is_array()) throw wrong_type(where, "a string or an array of text parts", v);
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) {
        const json& part = v[i];
        const std::string p = fmt::format("{}[{}]", where, i);
        if (!part.is_object()) throw wrong_type(p, "an object", part);
        const json* type = field(part, "type");
        if (!type || !type->is_string() || type->get<std::string>() != "text")
            throw invalid_request(fmt::format("'{}': only parts of type \"text\" are supported", p), p);
        const json* text = field(part, "text");
        if (!text || !text->is_string()) throw invalid_request(fmt::format("'{}.text' must be a string", p), p);
        s += text->get<std::string>();
    }
    return s;
}

void parse_messages(const json& body, completion_request& r) {
    const json* msgs = field(body, "messages");
    if (!msgs) throw invalid_request("'messages' is required", "messages");
    if (!msgs->is_array()) throw wrong_type("messages", "an array", *msgs);
    if (msgs->empty()) throw invalid_request("'messages' must hold at least one message", "messages");
    for (size_t i = 0; i < msgs->size(); ++i) {
        const json& m = (*msgs)[i];
        const std::string where = fmt::format("messages[{}]", i);
        if (!m.is_object()) throw wrong_type(where, "an object", m);
        const json* role = field(m, "role");
        if (!role || !role->is_string()) throw invalid_request(fmt::format("'{}.role' must be a string", where), where);
        std::string rs = role->get<std::string>();
        if (rs == "developer") rs = "system";
        if (rs != "system" && rs != "user" && rs != "assistant")
            throw invalid_request(
                fmt::format("'{}.role' is \"{}\": supported roles are system, developer, user and assistant (no "
                            "tool calls)",
                            where, role->get<std::string>()),
                where + ".role");
        const json* content = field(m, "content");
        if (!content)
            throw invalid_request(fmt::format("'{}.content' is required (tool calls are not supported)", where),
                                  where + ".content");
        r.messages.push_back(chat_message{rs, message_content(*content, where + ".content")});
    }
}

void parse_prompt(const json& body, completion_request& r) {
    const json* p = field(body, "prompt");
    if (!p) throw invalid_request("'prompt' is required", "prompt");
    if (p->is_string()) {
        r.prompt_text = p->get<std::string>();
        if (r.prompt_text.empty()) throw invalid_request("'prompt' is empty", "prompt");
        return;
    }
    if (!p->is_array() || p->empty()) throw wrong_type("prompt", "a non-empty string or array of token ids", *p);
    if ((*p)[0].is_string()) {
        if (p->size() != 1) throw invalid_request("only one prompt per request is supported", "prompt");
        r.prompt_text = (*p)[0].get<std::string>();
        if (r.prompt_text.empty()) throw invalid_request("'prompt' is empty", "prompt");
        return;
    }
    for (const json& t : *p) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > std::numeric_limits<int>::max())
            throw invalid_request("'prompt' as an array must hold non-negative integer token ids", "prompt");
        r.prompt_ids.push_back(int(t.get<int64_t>()));
    }
    r.prompt_is_ids = true;
}

void parse_stop(const json& body, completion_request& r) {
    const json* s = field(body, "stop");
    if (!s) return;
    const auto add = [&](const json& v) {
        if (!v.is_string()) throw wrong_type("stop", "a string or an array of strings", v);
        if (v.get<std::string>().empty()) throw invalid_request("'stop' strings must not be empty", "stop");
        r.stop.push_back(v.get<std::string>());
    };
    if (s->is_array()) {
        if (s->size() > 4) throw invalid_request("'stop' takes at most 4 strings", "stop");
        for (const json& v : *s) add(v);
    } else {
        add(*s);
    }
}

// Options we do not implement: refused rather than silently ignored.
void refuse_unsupported(const json& body) {
    for (const char* name : {"tools", "tool_choice", "functions", "function_call", "logit_bias"})
        if (field(body, name)) throw invalid_request(fmt::format("'{}' is not supported", name), name);
    if (const auto lp = field(body, "logprobs"); lp && !(lp->is_boolean() && !lp->get<bool>()))
        throw invalid_request("'logprobs' is not supported", "logprobs");
    if (const auto n = integer(body, "n", 1, 128); n && *n != 1) throw invalid_request("only n = 1 is supported", "n");
    for (const char* name : {"frequency_penalty", "presence_penalty"})
        if (const auto v = number(body, name, -2.0, 2.0); v && *v != 0.0)
            throw invalid_request(fmt::format("'{}' is not supported (use repeat_penalty)", name), name);
    if (const json* rf = field(body, "response_format")) {
        const json* t = rf->is_object() ? field(*rf, "type") : nullptr;
        if (!t || !t->is_string() || t->get<std::string>() != "text")
            throw invalid_request("only response_format {\"type\": \"text\"} is supported", "response_format");
    }
}

}  // namespace

completion_request parse_request(std::string_view body, request_kind kind) {
    if (!nesting_within(body, k_max_depth))
        throw invalid_request(fmt::format("the JSON body is nested deeper than {} levels", k_max_depth));
    const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) throw invalid_request("the body is not valid JSON");
    if (!j.is_object()) throw invalid_request("the body must be a JSON object");
    completion_request r;
    r.kind = kind;
    try {
        if (const json* m = field(j, "model")) {
            if (!m->is_string()) throw wrong_type("model", "a string", *m);
            r.model = m->get<std::string>();
        }
        if (kind == request_kind::CHAT)
            parse_messages(j, r);
        else
            parse_prompt(j, r);
        refuse_unsupported(j);
        constexpr int64_t big = std::numeric_limits<int>::max();
        r.max_tokens = integer(j, "max_tokens", 1, big);
        if (const auto m = integer(j, "max_completion_tokens", 1, big)) r.max_tokens = int(*m);
        if (const auto v = number(j, "temperature", 0.0, 2.0)) r.sampling.temperature = float(*v);
        if (const auto v = number(j, "top_p", 0.0, 1.0)) {
            if (*v <= 0.0) throw invalid_request("'top_p' must be greater than 0", "top_p");
            r.sampling.top_p = float(*v);
        }
        if (const auto v = integer(j, "top_k", 0, big)) r.sampling.top_k = int(*v);
        if (const auto v = number(j, "min_p", 0.0, 1.0)) r.sampling.min_p = float(*v);
        if (const auto v = number(j, "repeat_penalty", 0.01, 100.0)) r.sampling.repeat_penalty = float(*v);
        if (const auto v =
                integer(j, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max())) {
            r.sampling.seed = uint64_t(*v);
            r.seeded = true;
        }
        parse_stop(j, r);
        r.stream = boolean(j, "stream").value_or(false);
        r.ignore_eos = boolean(j, "ignore_eos").value_or(false);
        if (const json* so = field(j, "stream_options")) {
            if (!so->is_object()) throw wrong_type("stream_options", "an object", *so);
            r.include_usage = boolean(*so, "include_usage").value_or(false);
        }
    } catch (const json::exception& e) {  // a conversion the checks above missed: still the client's input
        throw invalid_request(fmt::format("malformed request: {}", e.what()));
    }
    return r;
}

}  // namespace moe::serve
