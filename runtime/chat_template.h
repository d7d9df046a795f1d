// Chat templates for `moe run --chat`: one user turn followed by the assistant prefix, in the format the model was
// trained on. GGUF files carry the template as Jinja (tokenizer.chat_template); we do not ship a Jinja engine, so
// the templates of the supported models are recognised by their markers and rendered here: Mistral/Mixtral
// [INST], ChatML (Qwen2/Qwen3 <|im_start|>), Tulu (OLMoE <|user|>/<|assistant|>), DeepSeek-V2 (User:/Assistant:)
// and harmony (gpt-oss <|start|>...<|message|>). Details that vary between releases of one format (the spaces
// around [INST], ChatML's default system turn, a leading BOS/EOS) are read from the template text. Checked
// against transformers' rendering of the templates (tests/fixtures/chat, scripts/make_chat_fixtures.py).
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "runtime/model_desc.h"
#include "runtime/model_file.h"

namespace moe {

enum class chat_style { MISTRAL, CHATML, TULU, DEEPSEEK, HARMONY };

std::string_view chat_style_name(chat_style s);  // "mistral", "chatml", "tulu", "deepseek", "harmony"

enum class chat_lead { NONE, BOS, EOS };  // special token the template writes before the first turn

struct chat_template {
    chat_style style = chat_style::CHATML;
    chat_lead lead = chat_lead::NONE;
    std::string user_prefix;     // MISTRAL: text before the user's message ("[INST] " or " [INST] ")
    std::string user_suffix;     // MISTRAL: text after it (" [/INST]" or "[/INST]")
    std::string default_system;  // CHATML: the system turn the template adds when the chat has none ("" = none)
    std::string origin;          // where it came from, for messages: "tokenizer.chat_template" or the fallback
};

// Recognises a Jinja chat template. Throws moe::error naming `source`, quoting the start of the template and
// suggesting to run without --chat when it matches none of the supported formats.
chat_template recognise_chat_template(std::string_view jinja, std::string_view source);

// The format of a supported architecture's released chat models, for files without tokenizer.chat_template.
chat_template default_chat_template(arch a);

// tokenizer.chat_template of the file when it has one, otherwise the architecture's default.
chat_template chat_template_of(const model_file& file, arch a, std::string_view source);

// One turn of a conversation. role: "system", "user" or "assistant".
struct chat_message {
    std::string role;
    std::string content;
};

// A conversation rendered in the template's format, ending with the assistant prefix (the model writes the next
// assistant turn). A system message is honoured where the format has one (ChatML, Tulu, DeepSeek's leading text,
// harmony's developer turn) and joins the first user message otherwise (Mistral). Earlier assistant turns are
// closed as the format closes them (EOS for Mistral, Tulu and DeepSeek). Throws moe::error for an unknown role or
// an empty conversation.
std::string apply_chat_template(const chat_template& t, std::span<const chat_message> messages,
                                std::string_view bos_text, std::string_view eos_text);

// The prompt: `user` as the only turn, then the assistant prefix. bos_text / eos_text are the texts of the model's
// BOS and EOS tokens (empty when it has none), written where the template writes them; encode the result with
// parse_special so they, and the format's own special tokens, become token ids.
std::string apply_chat_template(const chat_template& t, std::string_view user, std::string_view bos_text,
                                std::string_view eos_text);

}  // namespace moe
