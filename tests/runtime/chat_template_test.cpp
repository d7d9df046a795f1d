// Chat templates: every template in tests/fixtures/chat/templates.json (written by scripts/make_chat_fixtures.py)
// must be recognised as its format and render exactly what transformers' Jinja renderer made of it, and the
// rendered text must encode, through our tokenizer with special tokens parsed, to the ids Hugging Face
// `tokenizers` gave. Plus hand-written expected strings for each format, the fallbacks by architecture and the
// refusal of unknown templates.
#include "runtime/chat_template.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "runtime/tokenizer.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

const fs::path ROOT = fs::path(MOE_SOURCE_DIR);

nlohmann::json load_fixture() {
    std::ifstream in(ROOT / "tests/fixtures/chat/templates.json");
    EXPECT_TRUE(in.good()) << "missing tests/fixtures/chat/templates.json (scripts/make_chat_fixtures.py)";
    return nlohmann::json::parse(in);
}

TEST(chat_template, matches_transformers_rendering_and_hf_token_ids) {
    const nlohmann::json doc = load_fixture();
    ASSERT_GE(doc["cases"].size(), 9u);
    for (const auto& c : doc["cases"]) {
        const std::string name = c["name"];
        SCOPED_TRACE(name);
        const chat_template t = recognise_chat_template(c["template"].get<std::string>(), name);
        EXPECT_EQ(chat_style_name(t.style), c["style"].get<std::string>());
        const tokenizer tok = tokenizer::from_file((ROOT / c["tokenizer"].get<std::string>()).string());
        const std::string bos = c["bos_token"], eos = c["eos_token"];
        for (const auto& r : c["renders"]) {
            const std::string text = apply_chat_template(t, r["user"].get<std::string>(), bos, eos);
            EXPECT_EQ(text, r["text"].get<std::string>());
            const std::vector<int32_t> ids = tok.encode(text, false, true);
            EXPECT_EQ(ids, r["ids"].get<std::vector<int32_t>>()) << text;
        }
    }
}

TEST(chat_template, special_tokens_of_the_template_become_single_ids) {
    // The ChatML markers are CONTROL tokens of the qwen2 tokenizer fixture: each must be one id, not text.
    const tokenizer tok = tokenizer::from_file((ROOT / "tests/fixtures/tokenizer/bpe_qwen2.gguf").string());
    const std::string text = apply_chat_template(default_chat_template(arch::QWEN3MOE), "Hi", "", "");
    const std::vector<int32_t> ids = tok.encode(text, false, true);
    const int32_t start = tok.find("<|im_start|>"), end = tok.find("<|im_end|>");
    ASSERT_GE(start, 0);
    ASSERT_GE(end, 0);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), start), 2);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), end), 1);
    EXPECT_EQ(ids.front(), start);
    // Without parse_special the same text would be plain bytes: no marker id at all.
    const std::vector<int32_t> plain = tok.encode(text, false, false);
    EXPECT_EQ(std::count(plain.begin(), plain.end(), start), 0);
}

TEST(chat_template, hand_written_renderings) {
    // The formats as their model cards show them, one user turn "Hi" and the assistant prefix.
    EXPECT_EQ(apply_chat_template(default_chat_template(arch::LLAMA), "Hi", "<s>", "</s>"), "<s>[INST] Hi [/INST]");
    EXPECT_EQ(apply_chat_template(default_chat_template(arch::QWEN2MOE), "Hi", "", "<|endoftext|>"),
              "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
              "<|im_start|>assistant\n");
    EXPECT_EQ(apply_chat_template(default_chat_template(arch::QWEN3MOE), "Hi", "", ""),
              "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    EXPECT_EQ(apply_chat_template(default_chat_template(arch::OLMOE), "Hi", "", "<|endoftext|>"),
              "<|endoftext|><|user|>\nHi\n<|assistant|>\n");
    EXPECT_EQ(apply_chat_template(default_chat_template(arch::DEEPSEEK2), "Hi", "<｜begin▁of▁sentence｜>", ""),
              "<｜begin▁of▁sentence｜>User: Hi\n\nAssistant:");
    EXPECT_EQ(apply_chat_template(default_chat_template(arch::GPT_OSS), "Hi", "", ""),
              "<|start|>user<|message|>Hi<|end|><|start|>assistant");
    // A model without a BOS token gets none, whatever the template asks for.
    EXPECT_EQ(apply_chat_template(default_chat_template(arch::DEEPSEEK2), "Hi", "", ""), "User: Hi\n\nAssistant:");
}

TEST(chat_template, recognition_reads_the_variable_parts) {
    // Double quotes and message.content; escaped newlines in a default system turn.
    chat_template t = recognise_chat_template(
        R"({{ bos_token }}{% for message in messages %}{{ "[INST]" + message.content + "[/INST]" }}{% endfor %})", "x");
    EXPECT_EQ(t.style, chat_style::MISTRAL);
    EXPECT_EQ(t.lead, chat_lead::BOS);
    EXPECT_EQ(apply_chat_template(t, "Hi", "<s>", ""), "<s>[INST]Hi[/INST]");
    t = recognise_chat_template(
        R"({% for message in messages %}{% if loop.first %}{{ '<|im_start|>system\nBe brief.\tOk<|im_end|>\n' }})"
        R"({% endif %}{{ '<|im_start|>' + message['role'] }}{% endfor %})",
        "x");
    EXPECT_EQ(t.default_system, "Be brief.\tOk");
    EXPECT_EQ(t.lead, chat_lead::NONE);
    // [INST] built some other way: the v0.1 spelling.
    t = recognise_chat_template("{% set p = '[INST]' %}{{ p + ' ' + m + ' [/INST]' }}", "x");
    EXPECT_EQ(t.user_prefix, "[INST] ");
    EXPECT_EQ(t.user_suffix, " [/INST]");
    // A bos_token printed inside the loop is not a lead.
    t = recognise_chat_template("{% for message in messages %}{{ bos_token + 'User: ' + x }}Assistant:{% endfor %}",
                                "x");
    EXPECT_EQ(t.style, chat_style::DEEPSEEK);
    EXPECT_EQ(t.lead, chat_lead::NONE);
}

TEST(chat_template, unknown_template_is_refused_with_what_was_found) {
    const std::string llama3 =
        "{{- bos_token }}\n{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
        "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + "
        "'<|eot_id|>' %}{{ content }}{% endfor %}";
    try {
        recognise_chat_template(llama3, "model.gguf");
        FAIL() << "expected moe::error";
    } catch (const error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("model.gguf: unknown chat template"), std::string::npos) << msg;
        // The start of what was found, newlines shown escaped so the message stays on one line.
        EXPECT_NE(msg.find("starts with \"{{- bos_token }}\\n{% set loop_messages = messages %}"), std::string::npos)
            << msg;
        EXPECT_NE(msg.find("run without --chat"), std::string::npos) << msg;
    }
    EXPECT_THROW(recognise_chat_template("", "m"), error);
}

TEST(chat_template, file_without_template_falls_back_by_architecture) {
    model_file f;  // no metadata at all
    const chat_template t = chat_template_of(f, arch::OLMOE, "m");
    EXPECT_EQ(t.style, chat_style::TULU);
    EXPECT_NE(t.origin.find("architecture olmoe"), std::string::npos) << t.origin;
    meta_value v;
    v.gguf_type = 8;
    v.value = std::string("{{ '<|im_start|>user\\n' }}");
    f.metadata["tokenizer.chat_template"] = v;
    const chat_template u = chat_template_of(f, arch::OLMOE, "m");
    EXPECT_EQ(u.style, chat_style::CHATML);
    EXPECT_EQ(u.origin, "tokenizer.chat_template");
}

}  // namespace
}  // namespace moe
