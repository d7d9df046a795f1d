// libFuzzer target: the safetensors header parser on arbitrary bytes must either succeed or throw moe::error.
#include <cstddef>
#include <cstdint>

#include "common/error.h"
#include "runtime/model_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        moe::model_file mf = moe::parse_safetensors_buffer(data, size, "fuzz.safetensors");
        for (const auto& t : mf.tensors)
            if (t.offset > size || t.bytes > size - t.offset) __builtin_trap();
    } catch (const moe::error&) {
    }
    return 0;
}
