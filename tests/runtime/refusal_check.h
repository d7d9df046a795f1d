// Bad-input tests of the model-file parsers: the message a parser throws for an in-memory image ("" when it
// parses), and a check that a refusal names the image and every expected phrase.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"

namespace moe::test {

template <typename Parse>
std::string refusal_message(Parse parse, const std::vector<uint8_t>& image, const char* name) {
    try {
        parse(image.data(), image.size(), name);
    } catch (const error& e) {
        return e.what();
    }
    return "";
}

}  // namespace moe::test

// `message` must be a refusal that names `name` and contains each of the phrases after it.
#define MOE_EXPECT_REFUSAL(message, name, ...)                                                          \
    do {                                                                                                \
        std::string msg_ = (message);                                                                   \
        ASSERT_FALSE(msg_.empty()) << "parsed without error";                                           \
        EXPECT_NE(msg_.find(name), std::string::npos) << msg_;                                          \
        for (const char* want_ : {__VA_ARGS__}) EXPECT_NE(msg_.find(want_), std::string::npos) << msg_; \
    } while (0)
