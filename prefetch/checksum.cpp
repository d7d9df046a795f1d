// CPU reference of the checksum (see checksum.h).
#include "prefetch/checksum.h"

#include <cstring>

namespace moe {

uint64_t checksum64(const void* data, uint64_t bytes) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    const uint64_t n_words = bytes / 8;
    uint64_t sum = 0;
    for (uint64_t i = 0; i < n_words; i++) {
        uint64_t w;
        std::memcpy(&w, p + i * 8, 8);  // little-endian host: the word as the GPU reads it
        sum += checksum_word(w, i);
    }
    if (bytes % 8) {
        uint64_t w = 0;
        std::memcpy(&w, p + n_words * 8, bytes % 8);
        sum += checksum_word(w, n_words);
    }
    return sum + bytes * checksum_len_mult;
}

}  // namespace moe
