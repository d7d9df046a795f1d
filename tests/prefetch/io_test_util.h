// Helpers for the prefetch I/O tests: temp files of random bytes, and buffers with guard bytes so a read that
// writes outside its destination is caught.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace moe::test {

// A file of `size` random bytes in `dir`, removed when the object dies.
struct temp_file {
    std::string path;
    std::vector<uint8_t> bytes;

    temp_file(const std::string& dir, uint64_t size, uint32_t seed = 1) {
        path = dir + "/moe-io-test-XXXXXX";
        int fd = ::mkstemp(path.data());
        if (fd < 0) throw std::runtime_error("mkstemp in " + dir + ": " + std::strerror(errno));
        bytes.resize(size);
        std::mt19937_64 rng(seed);
        for (size_t i = 0; i < size; i += 8) {
            uint64_t v = rng();
            std::memcpy(bytes.data() + i, &v, std::min<size_t>(8, size - i));
        }
        size_t off = 0;
        while (off < size) {
            ssize_t w = ::write(fd, bytes.data() + off, size - off);
            if (w <= 0) throw std::runtime_error("write " + path);
            off += size_t(w);
        }
        ::close(fd);
    }
    ~temp_file() { ::unlink(path.c_str()); }
    temp_file(const temp_file&) = delete;
    temp_file& operator=(const temp_file&) = delete;
};

// A destination of `len` bytes at `misalign` bytes past a 4 KiB boundary, with 64 guard bytes each side.
struct guarded_buffer {
    static constexpr size_t guard = 64;
    static constexpr uint8_t fill = 0xA5;
    uint8_t* base = nullptr;
    size_t total = 0;
    uint8_t* dst = nullptr;
    size_t len = 0;

    guarded_buffer(size_t n, size_t misalign) : len(n) {
        total = ((guard + misalign + n + guard) + 4095) / 4096 * 4096 + 4096;
        base = static_cast<uint8_t*>(std::aligned_alloc(4096, total));
        std::memset(base, fill, total);
        dst = base + 4096 + misalign;  // 4096 >= guard, so the front guard exists
    }
    ~guarded_buffer() { std::free(base); }
    guarded_buffer(const guarded_buffer&) = delete;
    guarded_buffer& operator=(const guarded_buffer&) = delete;
    bool guards_intact() const {
        for (size_t i = 0; i < guard; i++)
            if (dst[-1 - ptrdiff_t(i)] != fill || dst[len + i] != fill) return false;
        return true;
    }
};

}  // namespace moe::test
