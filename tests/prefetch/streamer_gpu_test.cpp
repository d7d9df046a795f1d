// GPU: the streamer filling a DEVICE tier: file -> pinned staging -> copy stream -> device slot. Every expert
// (3 unaligned ranges of a few MiB, one ending at EOF) read back from its device slot equals the file bytes,
// under evictions; a compute stream ordered with stream_wait() sees the bytes; an injected EIO reaches wait()
// and leaves the expert ABSENT. Skips without a GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "cache/expert_cache.h"
#include "cache/policies.h"
#include "common/error.h"
#include "common/gpu.h"
#include "prefetch/faulty_source.h"
#include "prefetch/reader_factory.h"
#include "prefetch/streamer.h"
#include "tests/prefetch/io_test_util.h"

namespace moe {
namespace {

#ifdef MOE_HAVE_CUDA
constexpr uint32_t k_layers = 2, k_experts = 6;

streamer_layout big_layout(uint64_t file_bytes) {
    streamer_layout l;
    l.n_layers = k_layers;
    l.n_experts = k_experts;
    l.ranges.resize(k_layers * k_experts);
    const uint64_t per = (file_bytes - 4096) / (k_layers * k_experts);
    for (uint32_t i = 0; i < k_layers * k_experts; i++) {
        const uint64_t base = 32 + i * per;
        const uint64_t part = per / 3 - 1000 - i;  // unaligned sizes
        l.ranges[i] = {{0, base, part}, {0, base + part + 96, part - 17}, {0, base + 2 * part + 200, part + 5}};
    }
    byte_range& last = l.ranges.back().back();
    last.offset = file_bytes - last.bytes;
    return l;
}

std::vector<uint8_t> expected(const test::temp_file& f, const streamer_layout& l, expert_key k) {
    std::vector<uint8_t> out;
    for (const byte_range& r : l.ranges[k.layer * l.n_experts + k.expert])
        out.insert(out.end(), f.bytes.begin() + long(r.offset), f.bytes.begin() + long(r.offset + r.bytes));
    return out;
}

struct device_rig {
    test::temp_file file;
    streamer_layout layout;
    std::unique_ptr<faulty_source> source;
    std::unique_ptr<memory_tier> tier;
    std::unique_ptr<streamer> stream;
    std::unique_ptr<expert_cache> cache;

    device_rig(uint32_t n_slots, const fault_plan& faults = {})
        : file("/tmp", 48ull << 20, 11), layout(big_layout(48ull << 20)) {
        source = std::make_unique<faulty_source>(file.path, reader_kind::AUTO, faults);
        uint64_t largest = 0;
        for (const auto& rs : layout.ranges) largest = std::max(largest, expert_reader::packed_bytes(rs));
        const uint64_t slot = (largest + 4095) / 4096 * 4096;
        tier = std::make_unique<memory_tier>(memory_tier_config{tier_kind::DEVICE, n_slots * slot, largest});
        streamer_config sc;
        sc.max_in_flight = 2;
        stream = std::make_unique<streamer>(sc, layout, std::vector<file_source*>{source.get()}, *tier);
        expert_cache_config cc{k_layers, k_experts, {}};
        const streamer* s = stream.get();
        cc.expert_bytes = [s](expert_key k) { return s->expert_bytes(k); };
        cache = std::make_unique<expert_cache>(
            cc, *tier, *stream, make_policy("lru", policy_params{k_layers, k_experts, tier->n_slots(), nullptr}));
    }
    ~device_rig() {
        cache.reset();
        stream.reset();
    }
};
#endif

TEST(streamer_gpu, device_slots_hold_the_file_bytes_under_evictions) {
    if (gpu_count() == 0) GTEST_SKIP() << "no GPU";
#ifdef MOE_HAVE_CUDA
    device_rig r(4);  // 4 slots for 12 experts: evictions; room for the demand plus prefetches still loading
    ASSERT_TRUE(r.stream->staged());
    ASSERT_TRUE(r.stream->on_device());
    cudaStream_t compute;
    MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
    std::mt19937 rng(5);
    std::vector<uint8_t> back;
    for (int i = 0; i < 40; i++) {
        expert_key k{uint32_t(rng() % k_layers), uint32_t(rng() % k_experts)};
        if (i % 3 == 0) r.cache->prefetch({uint32_t(rng() % k_layers), uint32_t(rng() % k_experts)});
        auto h = r.cache->acquire(k);
        h.wait();
        auto want = expected(r.file, r.layout, k);
        ASSERT_EQ(h.bytes(), want.size());
        back.assign(want.size(), 0);
        // The compute side orders itself on the slot's copy event, then reads the slot.
        r.stream->stream_wait(h.slot(), compute);
        MOE_CUDA_CHECK(cudaMemcpyAsync(back.data(), h.data(), want.size(), cudaMemcpyDeviceToHost, compute));
        MOE_CUDA_CHECK(cudaStreamSynchronize(compute));
        ASSERT_EQ(std::memcmp(back.data(), want.data(), want.size()), 0)
            << "layer " << k.layer << " expert " << k.expert;
    }
    MOE_CUDA_CHECK(cudaStreamDestroy(compute));
    auto s = r.stream->stats();
    EXPECT_EQ(s.n_failed, 0u);
    EXPECT_GT(r.cache->stats().total().evictions, 0u);
    EXPECT_LE(r.tier->bytes_high_water(), r.tier->budget_bytes());
    const double read_s = double(s.read_ns) * 1e-9, copy_s = double(s.copy_ns) * 1e-9;
    std::printf("streamer_gpu: %llu experts, %.1f MiB; mean read %.2f ms, mean copy %.2f ms (%s)\n",
                (unsigned long long)s.n_loaded, double(s.bytes_read) / (1 << 20),
                s.n_loaded ? 1e3 * read_s / double(s.n_loaded) : 0.0,
                s.n_loaded ? 1e3 * copy_s / double(s.n_loaded) : 0.0, gpu_description().c_str());
#endif
}

TEST(streamer_gpu, read_error_leaves_the_device_expert_absent) {
    if (gpu_count() == 0) GTEST_SKIP() << "no GPU";
#ifdef MOE_HAVE_CUDA
    const streamer_layout l = big_layout(48ull << 20);
    fault_plan faults;
    faults.eio_at_offset = int64_t(l.ranges[3][1].offset + 4097);  // inside expert (0, 3), range 1
    device_rig r(4, faults);
    std::string err;
    try {
        auto h = r.cache->acquire({0, 3});
        h.wait();
    } catch (const moe::error& e) {
        err = e.what();
    }
    EXPECT_NE(err.find("Input/output error"), std::string::npos) << err;
    EXPECT_EQ(r.cache->state({0, 3}), residency::ABSENT);
    EXPECT_EQ(r.tier->slots_in_use(), 0u);
    auto h = r.cache->acquire({1, 0});  // other experts still load
    h.wait();
    std::vector<uint8_t> back(h.bytes());
    MOE_CUDA_CHECK(cudaMemcpy(back.data(), h.data(), back.size(), cudaMemcpyDeviceToHost));
    auto want = expected(r.file, r.layout, {1, 0});
    EXPECT_EQ(std::memcmp(back.data(), want.data(), want.size()), 0);
#endif
}

}  // namespace
}  // namespace moe
