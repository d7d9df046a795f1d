// Opening a model path that is not a plain readable file: the refusal keeps the system's reason (a symlink loop
// or a name too long is not "no such file"), and a FIFO or a device is refused at once instead of blocking the
// open until some writer appears (or reading a device that never ends).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <string>

#include "common/error.h"
#include "runtime/model_file.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

struct scratch {
    fs::path dir = fs::temp_directory_path() / ("moe_model_open_test_" + std::to_string(::getpid()));
    scratch() {
        fs::remove_all(dir);
        fs::create_directories(dir);
    }
    ~scratch() { fs::remove_all(dir); }
};

// The message `open` throws ("" when it does not), or a failure when it has not returned within 10 s: then
// `unblock` is run so the test can end.
std::string refusal_within_time(const std::function<void()>& open, const std::function<void()>& unblock) {
    auto f = std::async(std::launch::async, [&]() -> std::string {
        try {
            open();
        } catch (const error& e) {
            return e.what();
        }
        return "";
    });
    if (f.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
        ADD_FAILURE() << "still blocked after 10 s";
        unblock();
    }
    return f.get();
}

// Opens the FIFO for writing (non-blocking while no reader waits, so a blocked reader is released).
void release_fifo(const std::string& p) {
    std::ofstream w(p);
}

TEST(model_open, fifo_is_refused_without_blocking) {
    scratch s;
    for (const char* name : {"model.gguf", "model.safetensors", "model"}) {
        const std::string p = (s.dir / name).string();
        ASSERT_EQ(::mkfifo(p.c_str(), 0600), 0);
        const std::string m = refusal_within_time([&] { open_model_file(p); }, [&] { release_fifo(p); });
        EXPECT_NE(m.find(p + ": cannot open model: expected a regular file or a directory, found a FIFO"),
                  std::string::npos)
            << m;
    }
    // The readers themselves, as an index or a directory reaches them: refused at the open, not blocked there.
    const std::string p = (s.dir / "model.gguf").string();
    const std::string m = refusal_within_time([&] { read_gguf(p); }, [&] { release_fifo(p); });
    EXPECT_NE(m.find(p + ": cannot open: expected a regular file, found a FIFO"), std::string::npos) << m;
}

TEST(model_open, fifo_inside_a_model_directory_is_refused_without_blocking) {
    scratch s;
    const std::string p = (s.dir / "model.safetensors").string();
    ASSERT_EQ(::mkfifo(p.c_str(), 0600), 0);
    const std::string m = refusal_within_time([&] { open_model_file(s.dir.string()); }, [&] { release_fifo(p); });
    EXPECT_NE(m.find("expected a regular file, found a FIFO"), std::string::npos) << m;
}

TEST(model_open, devices_are_refused) {
    const std::string m = refusal_within_time([] { open_model_file("/dev/zero"); }, [] {});
    EXPECT_EQ(m, "/dev/zero: cannot open model: expected a regular file or a directory, found a character device");
}

TEST(model_open, the_system_reason_is_kept) {
    scratch s;
    // A symlink loop: ELOOP, not "no such file".
    const fs::path a = s.dir / "a.gguf", b = s.dir / "b.gguf";
    fs::create_symlink(b, a);
    fs::create_symlink(a, b);
    std::string m = refusal_within_time([&] { open_model_file(a.string()); }, [] {});
    EXPECT_NE(m.find("Too many levels of symbolic links"), std::string::npos) << m;
    EXPECT_EQ(m.find("no such file"), std::string::npos) << m;
    // A name longer than the file system allows: ENAMETOOLONG.
    const std::string long_name = (s.dir / (std::string(300, 'x') + ".gguf")).string();
    m = refusal_within_time([&] { open_model_file(long_name); }, [] {});
    EXPECT_NE(m.find("File name too long"), std::string::npos) << m;
    EXPECT_EQ(m.find("no such file"), std::string::npos) << m;
    // A split set opened from shard 2 whose shard 1 is a symlink loop: the reason, not "no such file".
    fs::create_symlink(s.dir / "m-00001-of-00002.gguf", s.dir / "m-00001-of-00002.gguf");
    std::ofstream(s.dir / "m-00002-of-00002.gguf") << "GGUF";  // never read: shard 1 is opened first
    m = refusal_within_time([&] { open_model_file((s.dir / "m-00002-of-00002.gguf").string()); }, [] {});
    EXPECT_NE(m.find("expected shard 1 of 2 at"), std::string::npos) << m;
    EXPECT_NE(m.find("Too many levels of symbolic links"), std::string::npos) << m;
    // A missing file is still reported as one.
    m = refusal_within_time([&] { open_model_file((s.dir / "none.gguf").string()); }, [] {});
    EXPECT_NE(m.find("cannot open model: no such file or directory"), std::string::npos) << m;
}

}  // namespace
}  // namespace moe
