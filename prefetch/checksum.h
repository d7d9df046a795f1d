// A 64-bit checksum of a byte buffer that a GPU can compute in parallel and the CPU can reproduce: the sum
// (mod 2^64) over the 8-byte little-endian words w_i (the last one zero-padded) of mix(w_i + i * golden), plus
// the length times another odd constant. A sum parallelises with atomics; mixing in the word index makes swapped
// or shifted blocks change the result, which a plain sum of words would not. Used to check that the bytes that
// reached the device are the file's (prefetch/cuda/checksum.cuh has the device version).
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define MOE_HOST_DEVICE __host__ __device__
#else
#define MOE_HOST_DEVICE
#endif

namespace moe {

constexpr uint64_t checksum_golden = 0x9E3779B97F4A7C15ull;
constexpr uint64_t checksum_len_mult = 0xD6E8FEB86659FD93ull;

// splitmix64's finaliser: every input bit affects every output bit.
MOE_HOST_DEVICE inline uint64_t checksum_mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return x;
}

MOE_HOST_DEVICE inline uint64_t checksum_word(uint64_t word, uint64_t index) {
    return checksum_mix(word + index * checksum_golden);
}

// CPU reference.
uint64_t checksum64(const void* data, uint64_t bytes);

}  // namespace moe
