// GPU: bytes read from a file reach a device slot intact through the copy engine, from pinned memory and
// from pageable memory via the staging ring; the device checksum kernel equals the CPU reference, for sizes
// that are not multiples of a word. Skips without a GPU.
#include <gtest/gtest.h>

#include <random>

#include "common/gpu.h"
#include "prefetch/checksum.h"
#include "prefetch/copy_engine.h"
#include "prefetch/expert_reader.h"
#include "prefetch/host_buffer.h"
#include "prefetch/reader_factory.h"
#include "tests/prefetch/io_test_util.h"

#ifdef MOE_HAVE_CUDA
#include "prefetch/cuda/checksum.cuh"
#endif

namespace moe {
namespace {

TEST(copy_engine_gpu, checksum_kernel_matches_cpu) {
    if (gpu_count() == 0) GTEST_SKIP() << "no GPU";
#ifdef MOE_HAVE_CUDA
    std::mt19937_64 rng(3);
    for (uint64_t n : {uint64_t(0), uint64_t(1), uint64_t(7), uint64_t(8), uint64_t(1000003), uint64_t(64) << 20}) {
        std::vector<uint8_t> h(n);
        for (auto& x : h) x = uint8_t(rng());
        void* d = nullptr;
        MOE_CUDA_CHECK(cudaMalloc(&d, std::max<uint64_t>(n, 8)));
        MOE_CUDA_CHECK(cudaMemcpy(d, h.data(), n, cudaMemcpyHostToDevice));
        EXPECT_EQ(checksum64_device(d, n, nullptr), checksum64(h.data(), n)) << n;
        MOE_CUDA_CHECK(cudaFree(d));
    }
#endif
}

TEST(copy_engine_gpu, file_to_device_round_trip) {
    if (gpu_count() == 0) GTEST_SKIP() << "no GPU";
#ifdef MOE_HAVE_CUDA
    test::temp_file f("/tmp", 24 << 20, 9);
    auto src = open_file_source(f.path);
    expert_reader reader({src.get()});
    const uint32_t n_slots = 3;
    const uint64_t expert = (7 << 20) + 96;  // three ranges, unaligned, not a multiple of the staging size
    copy_engine_config cfg;
    cfg.n_slots = n_slots;
    cfg.staging_bytes = 1 << 20;
    copy_engine eng(cfg);
    ASSERT_TRUE(eng.on_device());
    host_buffer pinned(expert);
    ASSERT_TRUE(pinned.cuda_pinned());
    std::vector<uint8_t> pageable(expert);
    std::vector<void*> dslots(n_slots);
    for (auto& d : dslots) MOE_CUDA_CHECK(cudaMalloc(&d, expert));
    for (uint32_t e = 0; e < 6; e++) {
        const uint64_t third = expert / 3;
        std::vector<byte_range> ranges{{0, 32 + e * third, third},
                                       {0, (8 << 20) + 64 + e * third, third},
                                       {0, (16 << 20) + 32 * e, expert - 2 * third}};
        const bool use_pinned = e % 2 == 0;
        uint8_t* host = use_pinned ? pinned.data() : pageable.data();
        reader.read_sync(ranges, host, expert);
        const uint64_t want = checksum64(host, expert);
        const uint32_t slot = e % n_slots;
        eng.copy(slot, dslots[slot], host, expert, use_pinned);
        eng.wait(slot);
        EXPECT_TRUE(eng.ready(slot));
        EXPECT_EQ(checksum64_device(dslots[slot], expert, nullptr), want) << "expert " << e;
    }
    for (auto& d : dslots) MOE_CUDA_CHECK(cudaFree(d));
#endif
}

}  // namespace
}  // namespace moe
