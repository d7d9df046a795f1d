// The statistics of a run (runtime/run_stats.h): the JSON object is always written, whatever bytes the generated
// text holds (a byte-level vocabulary splits characters across tokens, and a model can emit raw bytes); the token
// ids stay exact, the text gets U+FFFD for each invalid sequence. The summary and the object agree with the
// offloader's counters.
#include "runtime/run_stats.h"

#include <gtest/gtest.h>

#include <string>

#include "runtime/engine.h"

namespace moe {
namespace {

const std::string k_model = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/ref/mixtral-f32.gguf";

TEST(run_stats, invalid_utf8_text_is_written_with_replacement_characters) {
    engine_config cfg;
    cfg.n_ctx = 16;
    engine e(k_model, cfg);
    const generation g = e.get_session().generate(std::vector<int>{1, 17, 42}, 4, nullptr, {});
    run_info info;
    info.model_path = k_model;
    info.prompt_tokens = {1, 17, 42};
    // Half of a two-byte character, a stray continuation byte, an overlong encoding, then valid text.
    info.text = std::string("\xC3", 1) + "\x80\xFF" + "\xC0\xAF" + "ok \xE2\x82\xAC";
    info.prompt_text = std::string("caf\xC3", 4);
    const footprint fp = measure_footprint(e.get_model(), e.get_offloader(), e.get_session());
    const nlohmann::ordered_json j = run_stats_json(info, g, e.get_model(), e.get_offloader(), fp);
    std::string text;
    ASSERT_NO_THROW(text = dump_json(j));
    const nlohmann::json back = nlohmann::json::parse(text);
    EXPECT_EQ(back["tokens"].get<std::vector<int>>(), g.tokens);
    const std::string t = back["text"].get<std::string>();
    EXPECT_NE(t.find("\xEF\xBF\xBD"), std::string::npos) << "U+FFFD in place of the invalid bytes";
    EXPECT_NE(t.find("ok \xE2\x82\xAC"), std::string::npos) << "valid text kept as it is";
    EXPECT_EQ(back["prompt_text"].get<std::string>().substr(0, 3), "caf");
    EXPECT_EQ(back["hits"].get<uint64_t>() + back["misses"].get<uint64_t>(),
              e.get_offloader().stats().total().hits + e.get_offloader().stats().total().misses);
    EXPECT_EQ(back["memory"]["resident_bytes"].get<uint64_t>(), e.resident_bytes());
}

TEST(run_stats, summary_names_the_figures) {
    engine_config cfg;
    cfg.n_ctx = 16;
    cfg.prefetch.mode = prefetch_mode::HISTORY;
    engine e(k_model, cfg);
    const generation g = e.get_session().generate(std::vector<int>{1, 17, 42}, 4, nullptr, {});
    run_info info;
    info.model_path = k_model;
    info.prefetch = "history";
    const footprint fp = measure_footprint(e.get_model(), e.get_offloader(), e.get_session());
    const std::string s = run_summary(info, g, e.get_model(), e.get_offloader(), fp);
    for (const char* label :
         {"load ", "prompt ", "decode ", "memory ", "cache ", "hit rate ", "loaded ", "link ", "prefetch "})
        EXPECT_NE(s.find(std::string("\n") + label), std::string::npos) << label << " missing in\n" << s;
}

}  // namespace
}  // namespace moe
