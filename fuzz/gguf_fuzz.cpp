// libFuzzer target: the GGUF header parser on arbitrary bytes must either succeed or throw moe::error; any
// crash, sanitizer report, hang or huge allocation (-rss_limit_mb) is a bug.
#include <cstddef>
#include <cstdint>

#include "common/error.h"
#include "runtime/model_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        moe::model_file mf = moe::parse_gguf_buffer(data, size, "fuzz.gguf");
        // Whatever was accepted must be self-consistent: every tensor inside the image.
        for (const auto& t : mf.tensors)
            if (t.offset > size || t.bytes > size - t.offset) __builtin_trap();
        (void)mf.meta_int("general.alignment");
    } catch (const moe::error&) {
    }
    return 0;
}
