// moe_log_set: with a callback installed the library's warnings reach it (level, text, user_data), only the one
// installed last, and nothing is written to stderr; NULL restores the default, which writes them to stderr again. The
// warnings used are the reader fallbacks, forced with MOE_NO_DIRECT / MOE_NO_URING (each is given once per process, so
// each phase forces a different one).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "runtime/api/moe_runtime.h"
#include "tests/api/capi_test_util.h"

namespace {

const std::string k_model = std::string(MOE_SOURCE_DIR) + "/tests/fixtures/mixtral-tiny-f32.gguf";

struct recorded {
    std::mutex mu;
    std::vector<std::pair<moe_log_level, std::string>> lines;
};

void record(moe_log_level level, const char* text, void* user) {
    auto* r = static_cast<recorded*>(user);
    std::lock_guard<std::mutex> lock(r->mu);
    r->lines.emplace_back(level, text);
}

// Everything written to file descriptor 2 while it lives goes to a file; text() stops the capture.
class stderr_capture {
public:
    stderr_capture() : _path(moe::test::tmp_dir() + "/moe-log-test-XXXXXX") {
        const int fd = ::mkstemp(_path.data());
        EXPECT_GE(fd, 0);
        std::fflush(stderr);
        _saved = ::dup(2);
        ::dup2(fd, 2);
        ::close(fd);
    }
    ~stderr_capture() {
        stop();
        ::unlink(_path.c_str());
    }
    std::string text() {
        stop();
        std::ifstream in(_path);
        return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }

private:
    void stop() {
        if (_saved < 0) return;
        std::fflush(stderr);
        ::dup2(_saved, 2);
        ::close(_saved);
        _saved = -1;
    }
    std::string _path;
    int _saved = -1;
};

// Opens the model and a context with the AUTO reader: where a reader falls back, the library warns.
void open_context() {
    moe::test::capi_fixture f;
    ASSERT_EQ(moe_model_open(k_model.c_str(), &f.model), MOE_OK) << moe_last_error();
    moe_options o;
    ASSERT_EQ(moe_options_init(&o), MOE_OK);
    o.expert_budget_bytes = 4 * 24576;
    ASSERT_EQ(moe_context_create(f.model, &o, &f.ctx), MOE_OK) << moe_last_error();
}

bool has(const std::vector<std::pair<moe_log_level, std::string>>& lines, const std::string& what) {
    for (const auto& [level, text] : lines)
        if (level == MOE_LOG_WARN && text.find(what) != std::string::npos) return true;
    return false;
}

TEST(capi_log, callback_gets_the_warnings_and_null_restores_stderr) {
    recorded replaced, rec;
    moe_log_set(&record, &replaced);
    moe_log_set(&record, &rec);  // only the callback installed last hears anything
    ::setenv("MOE_NO_DIRECT", "1", 1);
    std::string err;
    {
        stderr_capture cap;
        open_context();
        err = cap.text();
    }
    EXPECT_EQ(err, "") << "the library wrote to stderr with a callback installed";
    EXPECT_TRUE(replaced.lines.empty());
    EXPECT_TRUE(has(rec.lines, "O_DIRECT is not available")) << rec.lines.size() << " lines";
    for (const auto& [level, text] : rec.lines) {
        EXPECT_FALSE(text.empty());
        EXPECT_NE(text.back(), '\n') << text;
    }
    const bool uring_already_warned = has(rec.lines, "io_uring is not available");

    // Back to the default: the next warning goes to stderr, not to the callback.
    moe_log_set(nullptr, nullptr);
    const size_t n_before = rec.lines.size();
    ::setenv("MOE_NO_URING", "1", 1);
    {
        stderr_capture cap;
        open_context();
        err = cap.text();
    }
    ::unsetenv("MOE_NO_URING");
    ::unsetenv("MOE_NO_DIRECT");
    EXPECT_EQ(rec.lines.size(), n_before) << "the callback was called after moe_log_set(NULL, NULL)";
    if (uring_already_warned) GTEST_SKIP() << "io_uring is unavailable here: its warning was given already";
    EXPECT_NE(err.find("warning: io_uring is not available"), std::string::npos) << err;
}

}  // namespace
