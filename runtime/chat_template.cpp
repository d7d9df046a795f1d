// Recognising and rendering chat templates (see chat_template.h). Recognition looks only at string literals and
// markers of the Jinja text, never at its control flow: every supported template renders a lone user turn the
// same way whatever else it can do (tools, system turns, multi-turn checks).
#include "runtime/chat_template.h"

#include <optional>
#include <regex>
#include <string>

#include "common/error.h"

namespace moe {

namespace {

bool has(std::string_view s, std::string_view needle) {
    return s.find(needle) != std::string_view::npos;
}

// The content of a Jinja string literal: \n, \t, \\ and escaped quotes. Templates stored in JSON with "\\n"
// reach us as a backslash and an 'n', those stored with "\n" as a newline; both mean a newline once rendered.
std::string unescape(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '\\' || i + 1 == s.size()) {
            out += s[i];
            continue;
        }
        const char c = s[++i];
        out += c == 'n' ? '\n' : c == 't' ? '\t' : c;
    }
    return out;
}

// The special token a template prints before its loop over the messages: `{{ bos_token }}{% for message ...`
// (Mixtral, DeepSeek) or `{{ eos_token }}` (OLMoE).
chat_lead find_lead(const std::string& t) {
    static const std::regex loop(R"(\{%-?\s*for\s+message\s+in)");
    std::smatch m;
    const std::string head = std::regex_search(t, m, loop) ? t.substr(0, size_t(m.position(0))) : t;
    static const std::regex bos(R"(\{\{-?\s*bos_token\s*-?\}\})"), eos(R"(\{\{-?\s*eos_token\s*-?\}\})");
    if (std::regex_search(head, bos)) return chat_lead::BOS;
    if (std::regex_search(head, eos)) return chat_lead::EOS;
    return chat_lead::NONE;
}

// The literals around the user's message: '[INST] ' + message['content'] + ' [/INST]' (v0.1), ' [INST] ' ...
// (its 2024 revision), '[INST] ' + ... + '[/INST]' (v3). Quotes may be ' or ", the content message['content'],
// message["content"] or message.content.
bool find_inst_literals(const std::string& t, std::string& prefix, std::string& suffix) {
    static const std::regex re(R"re((?:'([^'\n]*\[INST\][^'\n]*)'|"([^"\n]*\[INST\][^"\n]*)"))re"
                               R"re(\s*\+\s*message(?:\[\s*['"]content['"]\s*\]|\.content)\s*\+\s*)re"
                               R"re((?:'([^'\n]*\[/INST\][^'\n]*)'|"([^"\n]*\[/INST\][^"\n]*)"))re");
    std::smatch m;
    if (!std::regex_search(t, m, re)) return false;
    prefix = unescape(m[1].matched ? m[1].str() : m[2].str());
    suffix = unescape(m[3].matched ? m[3].str() : m[4].str());
    return true;
}

// ChatML templates that add a system turn when the chat has none carry it as one literal:
// '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n'. Qwen3's '<|im_start|>system\n' + messages[0]...
// ends the literal before any text, so it has no default.
std::string find_default_system(const std::string& t) {
    static const std::regex re(R"(<\|im_start\|>system(?:\\n|\n)([^'"{}<]*)<\|im_end\|>)");
    std::smatch m;
    return std::regex_search(t, m, re) ? unescape(m[1].str()) : std::string();
}

std::string quote_start(std::string_view t) {
    std::string s;
    for (char c : t.substr(0, 80)) s += c == '\n' ? std::string("\\n") : std::string(1, c);
    return t.size() > 80 ? s + "..." : s;
}

}  // namespace

std::string_view chat_style_name(chat_style s) {
    switch (s) {
        case chat_style::MISTRAL:
            return "mistral";
        case chat_style::CHATML:
            return "chatml";
        case chat_style::TULU:
            return "tulu";
        case chat_style::DEEPSEEK:
            return "deepseek";
        case chat_style::HARMONY:
            return "harmony";
    }
    return "?";
}

chat_template recognise_chat_template(std::string_view jinja, std::string_view source) {
    const std::string t(jinja);
    chat_template ct;
    ct.origin = "tokenizer.chat_template";
    ct.lead = find_lead(t);
    if (has(t, "<|start|>") && has(t, "<|message|>")) {
        ct.style = chat_style::HARMONY;
    } else if (has(t, "<|im_start|>")) {
        ct.style = chat_style::CHATML;
        ct.default_system = find_default_system(t);
    } else if (has(t, "<|user|>") && has(t, "<|assistant|>")) {
        ct.style = chat_style::TULU;
    } else if (has(t, "[INST]")) {
        ct.style = chat_style::MISTRAL;
        if (!find_inst_literals(t, ct.user_prefix, ct.user_suffix)) {
            ct.user_prefix = "[INST] ";  // the v0.1 spelling, for templates that build the turn another way
            ct.user_suffix = " [/INST]";
        }
    } else if (has(t, "User: ") && has(t, "Assistant:")) {
        ct.style = chat_style::DEEPSEEK;
    } else {
        fail(
            "{}: unknown chat template: tokenizer.chat_template starts with \"{}\"; --chat knows the formats of "
            "Mistral/Mixtral ([INST]), ChatML (Qwen2/Qwen3, <|im_start|>), Tulu (OLMoE, <|user|>), DeepSeek-V2 "
            "(User:/Assistant:) and harmony (gpt-oss, <|start|>); run without --chat and write the prompt in the "
            "model's format yourself",
            source, quote_start(jinja));
    }
    return ct;
}

chat_template default_chat_template(arch a) {
    chat_template ct;
    ct.origin = fmt::format("the default for architecture {} (the file has no tokenizer.chat_template)", arch_name(a));
    switch (a) {
        case arch::LLAMA:  // of the supported MoE models, the llama architecture is Mixtral
            ct.style = chat_style::MISTRAL;
            ct.lead = chat_lead::BOS;
            ct.user_prefix = "[INST] ";
            ct.user_suffix = " [/INST]";
            break;
        case arch::QWEN2MOE:
            ct.style = chat_style::CHATML;
            ct.default_system = "You are a helpful assistant.";
            break;
        case arch::QWEN3MOE:
            ct.style = chat_style::CHATML;
            break;
        case arch::OLMOE:
            ct.style = chat_style::TULU;
            ct.lead = chat_lead::EOS;
            break;
        case arch::DEEPSEEK2:
            ct.style = chat_style::DEEPSEEK;
            ct.lead = chat_lead::BOS;
            break;
        case arch::GPT_OSS:
            ct.style = chat_style::HARMONY;
            break;
    }
    return ct;
}

chat_template chat_template_of(const model_file& file, arch a, std::string_view source) {
    if (std::optional<std::string> jinja = file.meta_string("tokenizer.chat_template"))
        return recognise_chat_template(*jinja, source);
    return default_chat_template(a);
}

std::string apply_chat_template(const chat_template& t, std::span<const chat_message> messages,
                                std::string_view bos_text, std::string_view eos_text) {
    if (messages.empty()) fail("chat template: the conversation has no messages");
    for (const chat_message& m : messages)
        if (m.role != "system" && m.role != "user" && m.role != "assistant")
            fail("chat template: unknown role \"{}\": expected system, user or assistant", m.role);
    std::string s(t.lead == chat_lead::BOS ? bos_text : t.lead == chat_lead::EOS ? eos_text : std::string_view());
    const std::string eos(eos_text);
    switch (t.style) {
        case chat_style::MISTRAL: {
            // No system turn in the format: system text goes before the next user message, separated by a blank
            // line (as Mistral's later templates do).
            std::string pending_system;
            for (const chat_message& m : messages) {
                if (m.role == "system") {
                    pending_system += m.content + "\n\n";
                } else if (m.role == "user") {
                    s += t.user_prefix + pending_system + m.content + t.user_suffix;
                    pending_system.clear();
                } else {
                    s += m.content + eos;
                }
            }
            if (!pending_system.empty()) s += t.user_prefix + pending_system + t.user_suffix;
            break;
        }
        case chat_style::CHATML:
            if (!t.default_system.empty() && messages.front().role != "system")
                s += "<|im_start|>system\n" + t.default_system + "<|im_end|>\n";
            for (const chat_message& m : messages) s += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
            s += "<|im_start|>assistant\n";
            break;
        case chat_style::TULU:
            for (const chat_message& m : messages)
                s += "<|" + m.role + "|>\n" + m.content + (m.role == "assistant" ? eos : std::string()) + "\n";
            s += "<|assistant|>\n";
            break;
        case chat_style::DEEPSEEK:
            for (const chat_message& m : messages) {
                if (m.role == "system")
                    s += m.content + "\n\n";
                else if (m.role == "user")
                    s += "User: " + m.content + "\n\n";
                else
                    s += "Assistant: " + m.content + eos;
            }
            s += "Assistant:";
            break;
        case chat_style::HARMONY:
            for (const chat_message& m : messages) {
                if (m.role == "system")
                    s += "<|start|>developer<|message|># Instructions\n\n" + m.content + "<|end|>";
                else if (m.role == "user")
                    s += "<|start|>user<|message|>" + m.content + "<|end|>";
                else
                    s += "<|start|>assistant<|channel|>final<|message|>" + m.content + "<|end|>";
            }
            s += "<|start|>assistant";
            break;
    }
    return s;
}

std::string apply_chat_template(const chat_template& t, std::string_view user, std::string_view bos_text,
                                std::string_view eos_text) {
    const chat_message one{"user", std::string(user)};
    return apply_chat_template(t, std::span<const chat_message>(&one, 1), bos_text, eos_text);
}

}  // namespace moe
