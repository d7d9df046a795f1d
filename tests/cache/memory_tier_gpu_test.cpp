// Device and pinned tiers on a real GPU: reservation within the budget, distinct slots, a byte-exact round
// trip host -> pinned slot -> device slot -> host through a stream, and a device-level expert cache stacked on a
// pinned host-level cache. Skips without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "cache/expert_cache.h"
#include "cache/memory_tier.h"
#include "cache/policies.h"
#include "common/error.h"
#include "common/gpu.h"
#include "tests/cache/fake_expert_loader.h"

using namespace moe;

TEST(memory_tier_gpu, device_slots_round_trip_through_pinned_slots) {
    if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << gpu_description();
#ifdef MOE_HAVE_CUDA
    constexpr uint64_t expert = 3 * 1024 * 1024 + 123;  // not a multiple of the alignment on purpose
    memory_tier dev(memory_tier_config{tier_kind::DEVICE, 64ull << 20, expert});
    memory_tier pinned(memory_tier_config{tier_kind::PINNED_HOST, 16ull << 20, expert});
    EXPECT_EQ(dev.slot_bytes() % 4096, 0u);
    EXPECT_EQ(dev.n_slots(), (64ull << 20) / dev.slot_bytes());
    EXPECT_LE(dev.reserved_bytes(), dev.budget_bytes());
    EXPECT_TRUE(pinned.page_locked()) << "with a GPU the pinned tier comes from cudaHostAlloc";
    EXPECT_FALSE(dev.page_locked());

    cudaPointerAttributes attr{};
    ASSERT_EQ(cudaPointerGetAttributes(&attr, dev.slot_data(0)), cudaSuccess);
    EXPECT_EQ(attr.type, cudaMemoryTypeDevice);
    ASSERT_EQ(cudaPointerGetAttributes(&attr, pinned.slot_data(0)), cudaSuccess);
    EXPECT_EQ(attr.type, cudaMemoryTypeHost);

    cudaStream_t stream;
    MOE_CUDA_CHECK(cudaStreamCreate(&stream));
    std::vector<uint8_t> back(expert);
    // Fill every device slot from a pinned slot with a slot-specific pattern, then read all of them back: a
    // slot overlapping its neighbour would show up as a wrong byte.
    std::vector<uint32_t> slots;
    while (auto s = dev.alloc_slot(expert)) slots.push_back(*s);
    ASSERT_EQ(slots.size(), dev.n_slots());
    EXPECT_EQ(dev.bytes_in_use(), expert * slots.size());
    auto p = pinned.alloc_slot(expert);
    ASSERT_TRUE(p.has_value());
    auto* src = static_cast<uint8_t*>(pinned.slot_data(*p));
    for (uint32_t s : slots) {
        for (uint64_t i = 0; i < expert; i++) src[i] = uint8_t((i * 131 + s * 7) >> 3);
        MOE_CUDA_CHECK(cudaMemcpyAsync(dev.slot_data(s), src, expert, cudaMemcpyHostToDevice, stream));
        MOE_CUDA_CHECK(cudaStreamSynchronize(stream));  // src is reused for the next slot
    }
    for (uint32_t s : slots) {
        MOE_CUDA_CHECK(cudaMemcpyAsync(back.data(), dev.slot_data(s), expert, cudaMemcpyDeviceToHost, stream));
        MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
        uint64_t bad = 0;
        for (uint64_t i = 0; i < expert; i++) bad += back[i] != uint8_t((i * 131 + s * 7) >> 3);
        ASSERT_EQ(bad, 0u) << "slot " << s;
    }
    for (uint32_t s : slots) dev.free_slot(s);
    pinned.free_slot(*p);
    EXPECT_EQ(dev.bytes_in_use(), 0u);
    EXPECT_EQ(dev.bytes_high_water(), expert * slots.size());
    MOE_CUDA_CHECK(cudaStreamDestroy(stream));
#endif
}

TEST(memory_tier_gpu, device_budget_beyond_vram_is_a_clear_error) {
    if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << gpu_description();
    // 1 PiB cannot be allocated on any GPU: an error that names the budget, not an abort.
    try {
        memory_tier t(memory_tier_config{tier_kind::DEVICE, 1ull << 50, 1 << 20});
        FAIL() << "expected moe::error";
    } catch (const moe::error& e) {
        EXPECT_NE(std::string(e.what()).find("cudaMalloc"), std::string::npos) << e.what();
    }
}

#ifdef MOE_HAVE_CUDA
namespace {
// Device-level loader: pins the expert in the host-level cache and copies it into the device slot on a copy
// stream; the load completes only once the copy has landed (no use before arrival).
class host_to_device_loader final : public moe::expert_loader {
public:
    explicit host_to_device_loader(expert_cache& host) : _host(host) { MOE_CUDA_CHECK(cudaStreamCreate(&_stream)); }
    ~host_to_device_loader() override { cudaStreamDestroy(_stream); }
    void load(const load_request& req, load_ticket ticket) override {
        expert_handle h = _host.acquire(req.key);
        h.wait();
        MOE_CUDA_CHECK(cudaMemcpyAsync(req.dst, h.data(), req.bytes, cudaMemcpyHostToDevice, _stream));
        MOE_CUDA_CHECK(cudaStreamSynchronize(_stream));
        ticket.complete();
    }

private:
    expert_cache& _host;
    cudaStream_t _stream{};
};
}  // namespace
#endif

TEST(memory_tier_gpu, device_cache_stacked_on_pinned_host_cache) {
    if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << gpu_description();
#ifdef MOE_HAVE_CUDA
    constexpr uint32_t n_layers = 2, n_experts = 8;
    constexpr uint64_t expert = 1 << 20;
    memory_tier host_tier(memory_tier_config{tier_kind::PINNED_HOST, 8 * expert, expert});
    memory_tier dev_tier(memory_tier_config{tier_kind::DEVICE, 3 * expert, expert});
    moe::test::fake_expert_loader file(moe::test::fake_expert_loader::mode::IMMEDIATE);
    expert_cache host(expert_cache_config{n_layers, n_experts, {}}, host_tier, file,
                      make_policy("lru", policy_params{n_layers, n_experts, 8, nullptr}));
    host_to_device_loader up(host);
    expert_cache dev(expert_cache_config{n_layers, n_experts, {}}, dev_tier, up,
                     make_policy("lru", policy_params{n_layers, n_experts, 3, nullptr}));
    std::vector<uint8_t> back(expert);
    for (int round = 0; round < 3; round++)
        for (uint32_t e = 0; e < 4; e++) {
            expert_key k{uint32_t(round % 2), e};
            auto h = dev.acquire(k);
            h.wait();
            MOE_CUDA_CHECK(cudaMemcpy(back.data(), h.data(), expert, cudaMemcpyDeviceToHost));
            ASSERT_TRUE(moe::test::holds_pattern(back.data(), expert, k)) << "layer " << k.layer << " expert " << e;
        }
    EXPECT_LE(dev_tier.bytes_high_water(), dev_tier.budget_bytes());
    EXPECT_EQ(dev.stats().total().misses, 12u) << "4 experts cycling through 3 device slots always miss (LRU)";
    EXPECT_EQ(file.n_loads(), 8) << "the host level holds all 8 distinct experts after their first use";
#endif
}
