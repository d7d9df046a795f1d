// Compares what our reader makes of a fixture model file with the `<file>.expected.json` written beside it by
// scripts/make_fixtures.py, which reads the files back with the Python gguf / safetensors packages (an
// independent reader). Every tensor and every scalar metadata value is compared.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/model_file.h"

namespace moe::test {

// Every *.expected.json under tests/fixtures whose "format" is `format` (new fixtures are picked up as they appear).
inline std::vector<std::string> expected_fixtures(const std::string& format) {
    namespace fs = std::filesystem;
    std::vector<std::string> out;
    fs::path root = fs::path(MOE_SOURCE_DIR) / "tests" / "fixtures";
    if (!fs::exists(root)) return out;
    for (const auto& e : fs::recursive_directory_iterator(root)) {
        std::string p = e.path().string();
        const std::string suffix = ".expected.json";
        if (!e.is_regular_file() || p.size() <= suffix.size() || p.substr(p.size() - suffix.size()) != suffix) continue;
        std::ifstream in(p);
        auto j = nlohmann::json::parse(in);
        if (j.value("format", "") == format) out.push_back(p);
    }
    std::sort(out.begin(), out.end());
    return out;
}

// open_path: open the model through this path instead (e.g. the last shard of a split set).
inline void check_fixture(const std::string& expected_path, const std::string& open_path = "") {
    namespace fs = std::filesystem;
    SCOPED_TRACE(expected_path);
    std::ifstream in(expected_path);
    auto ex = nlohmann::json::parse(in);
    std::string model_path = expected_path.substr(0, expected_path.size() - std::string(".expected.json").size());
    model_file mf = open_model_file(open_path.empty() ? model_path : open_path);

    EXPECT_EQ(ex["format"] == "gguf", mf.format == model_format::GGUF);
    ASSERT_EQ(mf.paths.size(), ex["files"].size());
    ASSERT_EQ(mf.file_sizes.size(), ex["files"].size());
    for (size_t i = 0; i < mf.paths.size(); i++) {
        EXPECT_EQ(fs::path(mf.paths[i]).filename().string(), ex["files"][i].get<std::string>());
        EXPECT_EQ(mf.file_sizes[i], fs::file_size(mf.paths[i]));
    }

    ASSERT_EQ(mf.tensors.size(), ex["tensors"].size());
    ASSERT_EQ(mf.index.size(), mf.tensors.size());
    for (const auto& et : ex["tensors"]) {
        std::string name = et["name"];
        SCOPED_TRACE(name);
        const tensor_desc* t = mf.find(name);
        ASSERT_NE(t, nullptr);
        EXPECT_EQ(std::string(type_name(t->type)), et["type"].get<std::string>());
        ASSERT_EQ(size_t(t->n_dims), et["ne"].size());
        for (int d = 0; d < 4; d++)
            EXPECT_EQ(t->ne[d], d < t->n_dims ? et["ne"][size_t(d)].get<int64_t>() : 1) << "ne[" << d << "]";
        EXPECT_EQ(t->file, et["file"].get<int>());
        EXPECT_EQ(t->offset, et["offset"].get<uint64_t>());
        EXPECT_EQ(t->bytes, et["bytes"].get<uint64_t>());
    }

    if (mf.format == model_format::SAFETENSORS) {
        EXPECT_TRUE(mf.metadata.empty());
        // config.json beside the weights is loaded whenever it exists.
        bool has_config = fs::exists(fs::path(model_path).parent_path() / "config.json");
        EXPECT_EQ(has_config, mf.config.is_object());
        return;
    }
    ASSERT_EQ(mf.metadata.size(), ex["metadata"].size());
    for (const auto& [key, v] : ex["metadata"].items()) {
        SCOPED_TRACE(key);
        const meta_value* m = mf.meta(key);
        ASSERT_NE(m, nullptr);
        if (v.is_object()) {
            ASSERT_EQ(m->gguf_type, 9u);
            auto arr = std::get<std::shared_ptr<meta_array>>(m->value);
            EXPECT_EQ(arr->size(), v["array_len"].get<size_t>());
        } else if (v.is_boolean()) {
            EXPECT_EQ(mf.meta_bool(key), v.get<bool>());
            EXPECT_EQ(m->gguf_type, 7u);
        } else if (v.is_number_integer()) {
            EXPECT_EQ(mf.meta_int(key), v.get<int64_t>());
        } else if (v.is_number_float()) {
            // Python wrote the exact double of the stored float, so equality is exact.
            EXPECT_EQ(mf.meta_float(key), v.get<double>());
        } else {
            EXPECT_EQ(mf.meta_string(key), v.get<std::string>());
        }
    }
}

}  // namespace moe::test
