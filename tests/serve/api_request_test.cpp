// Request bodies: what the OpenAI clients send is accepted with every supported field, and every malformed or
// unsupported input is a 400 naming the offending parameter (never another exception).
#include "runtime/serve/api_request.h"

#include <gtest/gtest.h>

#include <string>

namespace moe::serve {
namespace {

api_error error_of(const std::string& body, request_kind kind = request_kind::CHAT) {
    try {
        parse_request(body, kind);
    } catch (const api_error& e) {
        return e;
    }
    ADD_FAILURE() << "accepted: " << body;
    return api_error(0, "", "");
}

TEST(api_request, a_full_chat_request_is_read) {
    const completion_request r = parse_request(
        R"({"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]},{"role":"developer","content":"x"}],
            "max_tokens":7,"temperature":0.5,"top_p":0.9,"top_k":20,"min_p":0.05,"seed":-3,"stop":["\n","END"],
            "stream":true,"stream_options":{"include_usage":true},"n":1,"user":"ignored","logprobs":false,
            "frequency_penalty":0,"presence_penalty":0.0})",
        request_kind::CHAT);
    EXPECT_EQ(r.model, "m");
    ASSERT_EQ(r.messages.size(), 3u);
    EXPECT_EQ(r.messages[1].content, "Hi there");
    EXPECT_EQ(r.messages[2].role, "system");
    EXPECT_EQ(r.max_tokens, 7);
    EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
    EXPECT_FLOAT_EQ(r.sampling.top_p, 0.9f);
    EXPECT_EQ(r.sampling.top_k, 20);
    EXPECT_FLOAT_EQ(r.sampling.min_p, 0.05f);
    EXPECT_TRUE(r.seeded);
    EXPECT_EQ(r.sampling.seed, uint64_t(int64_t(-3)));
    EXPECT_EQ(r.stop, (std::vector<std::string>{"\n", "END"}));
    EXPECT_TRUE(r.stream);
    EXPECT_TRUE(r.include_usage);
}

TEST(api_request, completion_prompts_are_text_or_token_ids) {
    completion_request r =
        parse_request(R"({"prompt":"Once","max_completion_tokens":3,"stop":"."})", request_kind::COMPLETION);
    EXPECT_EQ(r.prompt_text, "Once");
    EXPECT_FALSE(r.prompt_is_ids);
    EXPECT_EQ(r.max_tokens, 3);
    EXPECT_EQ(r.stop, std::vector<std::string>{"."});
    r = parse_request(R"({"prompt":[1,2,3]})", request_kind::COMPLETION);
    EXPECT_TRUE(r.prompt_is_ids);
    EXPECT_EQ(r.prompt_ids, (std::vector<int>{1, 2, 3}));
    r = parse_request(R"({"prompt":["only one"],"max_tokens":null})", request_kind::COMPLETION);
    EXPECT_EQ(r.prompt_text, "only one");
    EXPECT_FALSE(r.max_tokens.has_value());
}

TEST(api_request, bad_bodies_are_400_with_the_parameter) {
    struct bad {
        const char* body;
        const char* param;
        request_kind kind = request_kind::CHAT;
    };
    const bad cases[] = {
        {"{", ""},
        {"", ""},
        {"[1,2]", ""},
        {R"({"messages":"hi"})", "messages"},
        {R"({"messages":[]})", "messages"},
        {R"({})", "messages"},
        {R"({"messages":[{"role":"user"}]})", "messages[0].content"},
        {R"({"messages":[{"role":"tool","content":"x"}]})", "messages[0].role"},
        {R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})", "messages[0].content[0]"},
        {R"({"messages":[{"role":"user","content":"x"}],"model":3})", "model"},
        {R"({"messages":[{"role":"user","content":"x"}],"max_tokens":0})", "max_tokens"},
        {R"({"messages":[{"role":"user","content":"x"}],"max_tokens":"8"})", "max_tokens"},
        {R"({"messages":[{"role":"user","content":"x"}],"max_tokens":1.5})", "max_tokens"},
        {R"({"messages":[{"role":"user","content":"x"}],"temperature":3})", "temperature"},
        {R"({"messages":[{"role":"user","content":"x"}],"temperature":"hot"})", "temperature"},
        {R"({"messages":[{"role":"user","content":"x"}],"top_p":0})", "top_p"},
        {R"({"messages":[{"role":"user","content":"x"}],"top_k":-1})", "top_k"},
        {R"({"messages":[{"role":"user","content":"x"}],"min_p":1.5})", "min_p"},
        {R"({"messages":[{"role":"user","content":"x"}],"seed":1.5})", "seed"},
        {R"({"messages":[{"role":"user","content":"x"}],"seed":18446744073709551615})", "seed"},
        {R"({"messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]})", "stop"},
        {R"({"messages":[{"role":"user","content":"x"}],"stop":[""]})", "stop"},
        {R"({"messages":[{"role":"user","content":"x"}],"stop":5})", "stop"},
        {R"({"messages":[{"role":"user","content":"x"}],"n":2})", "n"},
        {R"({"messages":[{"role":"user","content":"x"}],"stream":"yes"})", "stream"},
        {R"({"messages":[{"role":"user","content":"x"}],"tools":[]})", "tools"},
        {R"({"messages":[{"role":"user","content":"x"}],"logprobs":true})", "logprobs"},
        {R"({"messages":[{"role":"user","content":"x"}],"presence_penalty":1})", "presence_penalty"},
        {R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}})", "response_format"},
        {R"({"prompt":""})", "prompt", request_kind::COMPLETION},
        {R"({"prompt":["a","b"]})", "prompt", request_kind::COMPLETION},
        {R"({"prompt":[1,-2]})", "prompt", request_kind::COMPLETION},
        {R"({"prompt":[]})", "prompt", request_kind::COMPLETION},
        {R"({"prompt":{"a":1}})", "prompt", request_kind::COMPLETION},
    };
    for (const bad& b : cases) {
        const api_error e = error_of(b.body, b.kind);
        EXPECT_EQ(e.status, 400) << b.body;
        EXPECT_EQ(e.type, "invalid_request_error") << b.body;
        EXPECT_EQ(e.param, b.param) << b.body;
        EXPECT_NE(std::string(e.what()), "") << b.body;
    }
}

TEST(api_request, deep_nesting_is_refused_before_parsing) {
    const std::string deep = std::string(100000, '[') + std::string(100000, ']');
    EXPECT_EQ(error_of(deep).status, 400);
    // Brackets inside strings do not count.
    const std::string body = R"({"messages":[{"role":"user","content":")" + std::string(1000, '[') + R"("}]})";
    EXPECT_EQ(parse_request(body, request_kind::CHAT).messages[0].content, std::string(1000, '['));
}

TEST(api_request, error_bodies_are_openai_shaped) {
    const std::string b =
        error_body(api_error(404, "invalid_request_error", "no \"such\" model", "model", "model_not_found"));
    EXPECT_EQ(
        b,
        R"({"error":{"message":"no \"such\" model","type":"invalid_request_error","param":"model","code":"model_not_found"}})");
}

}  // namespace
}  // namespace moe::serve
