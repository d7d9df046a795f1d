// Memory tiers: reservation at start-up (RAM / pinned host / device) and slot accounting.
#include "cache/memory_tier.h"

#include <sys/mman.h>
#include <sys/resource.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "common/gpu.h"
#include "common/units.h"

namespace moe {

namespace {
// 4096 = the page size and the O_DIRECT alignment of NVMe: a read can land straight in any host slot.
// Device slots use it too, which also satisfies every vectorised load a kernel may issue.
constexpr uint64_t k_slot_align = 4096;
}  // namespace

std::string_view tier_kind_name(tier_kind k) {
    switch (k) {
        case tier_kind::RAM:
            return "ram";
        case tier_kind::PINNED_HOST:
            return "pinned";
        case tier_kind::DEVICE:
            return "device";
    }
    return "?";
}

tier_kind parse_tier_kind(std::string_view text, std::string_view what) {
    std::string s(text);
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (s == "ram") return tier_kind::RAM;
    if (s == "pinned" || s == "pinned_host") return tier_kind::PINNED_HOST;
    if (s == "device") return tier_kind::DEVICE;
    fail("{}: expected a memory tier kind (ram, pinned or device), got '{}'", what, text);
}

memory_tier::memory_tier(const memory_tier_config& cfg) : _kind(cfg.kind), _budget(cfg.budget_bytes) {
    if (cfg.max_expert_bytes == 0)
        fail("memory tier ({}): expected a largest-expert size > 0, got 0", tier_kind_name(_kind));
    if (cfg.max_expert_bytes > std::numeric_limits<uint64_t>::max() - k_slot_align)
        fail("memory tier ({}): largest-expert size {} is too large", tier_kind_name(_kind), cfg.max_expert_bytes);
    _slot_bytes = (cfg.max_expert_bytes + k_slot_align - 1) / k_slot_align * k_slot_align;
    uint64_t fit = _budget / _slot_bytes;
    if (fit == 0 || cfg.max_slots == 0)
        fail(
            "memory tier ({}): budget {} ({} bytes) cannot hold one expert slot of {} ({} bytes, the largest "
            "expert rounded up to {}); raise the budget",
            tier_kind_name(_kind), format_bytes(_budget), _budget, format_bytes(_slot_bytes), _slot_bytes,
            k_slot_align);
    _n_slots = static_cast<uint32_t>(std::min<uint64_t>({fit, cfg.max_slots, std::numeric_limits<uint32_t>::max()}));

    switch (_kind) {
        case tier_kind::RAM:
            allocate_host(false);
            break;
        case tier_kind::PINNED_HOST:
            allocate_host(true);
            break;
        case tier_kind::DEVICE:
            allocate_device();
            break;
    }

    _free.resize(_n_slots);
    // Pop order = slot 0 first, which keeps tests and traces easy to read.
    for (uint32_t i = 0; i < _n_slots; i++) _free[i] = _n_slots - 1 - i;
    _slot_used.assign(_n_slots, 0);
    _slot_taken.assign(_n_slots, 0);
}

void memory_tier::allocate_host(bool want_pinned) {
    uint64_t bytes = reserved_bytes();
#ifdef MOE_HAVE_CUDA
    if (want_pinned && gpu_count() > 0) {
        void* p = nullptr;
        cudaError_t e = cudaHostAlloc(&p, bytes, cudaHostAllocDefault);
        if (e != cudaSuccess) {
            cudaGetLastError();
            fail("memory tier (pinned): cudaHostAlloc of {} failed: {}; lower the host budget", format_bytes(bytes),
                 cudaGetErrorString(e));
        }
        _base = static_cast<char*>(p);
        _cuda_host = true;
        _locked = true;
        return;
    }
#endif
    _base = static_cast<char*>(std::aligned_alloc(k_slot_align, bytes));
    if (!_base) fail("memory tier ({}): cannot allocate {} of host memory", tier_kind_name(_kind), format_bytes(bytes));
    if (!want_pinned) return;

    // Without a GPU, "pinned" means locked in RAM so the expert never pages out; degrade to unlocked memory
    // (still correct, just pageable) when the memlock limit is too low.
    rlimit lim{};
    if (getrlimit(RLIMIT_MEMLOCK, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < bytes) {
        warn_once("memory_tier.memlock",
                  fmt::format("pinned host tier: RLIMIT_MEMLOCK is {} but the tier needs {}; using unlocked memory. "
                              "Fix: `ulimit -l unlimited` in the shell, or `<user> - memlock unlimited` in "
                              "/etc/security/limits.conf",
                              format_bytes(lim.rlim_cur), format_bytes(bytes)));
        return;
    }
    if (mlock(_base, bytes) != 0) {
        warn_once("memory_tier.mlock",
                  fmt::format("pinned host tier: mlock of {} failed ({}); using unlocked memory. Fix: `ulimit -l "
                              "unlimited`, or `<user> - memlock unlimited` in /etc/security/limits.conf",
                              format_bytes(bytes), std::strerror(errno)));
        return;
    }
    _mlocked = true;
    _locked = true;
}

void memory_tier::allocate_device() {
#ifdef MOE_HAVE_CUDA
    if (gpu_count() > 0) {
        void* p = nullptr;
        cudaError_t e = cudaMalloc(&p, reserved_bytes());
        if (e != cudaSuccess) {
            cudaGetLastError();  // an out-of-memory here is a budget problem, not a dead device
            fail("memory tier (device): cudaMalloc of {} ({} slots of {}) failed: {}; lower the VRAM budget",
                 format_bytes(reserved_bytes()), _n_slots, format_bytes(_slot_bytes), cudaGetErrorString(e));
        }
        _base = static_cast<char*>(p);
        return;
    }
    fail("memory tier (device): no CUDA device found ({}); use the ram or pinned tier", gpu_description());
#else
    fail(
        "memory tier (device): this build has no CUDA support (configure with -DMOE_CUDA=ON); use the ram or "
        "pinned tier");
#endif
}

memory_tier::~memory_tier() {
    if (!_base) return;
    if (_kind == tier_kind::DEVICE) {
#ifdef MOE_HAVE_CUDA
        cudaFree(_base);
#endif
        return;
    }
#ifdef MOE_HAVE_CUDA
    if (_cuda_host) {
        cudaFreeHost(_base);
        return;
    }
#endif
    if (_mlocked) munlock(_base, reserved_bytes());
    std::free(_base);
}

void* memory_tier::slot_data(uint32_t slot) const {
    MOE_CHECK(slot < _n_slots);
    return _base + uint64_t(slot) * _slot_bytes;
}

std::optional<uint32_t> memory_tier::alloc_slot(uint64_t bytes) {
    MOE_CHECK(bytes <= _slot_bytes);
    std::lock_guard<std::mutex> lock(_mu);
    if (_free.empty()) return std::nullopt;
    uint32_t s = _free.back();
    _free.pop_back();
    MOE_CHECK(!_slot_taken[s]);
    _slot_taken[s] = 1;
    _slot_used[s] = bytes;
    _in_use += bytes;
    _high_water = std::max(_high_water, _in_use);
    return s;
}

void memory_tier::free_slot(uint32_t slot) {
    std::lock_guard<std::mutex> lock(_mu);
    MOE_CHECK(slot < _n_slots && _slot_taken[slot]);
    _slot_taken[slot] = 0;
    _in_use -= _slot_used[slot];
    _slot_used[slot] = 0;
    _free.push_back(slot);
}

uint64_t memory_tier::bytes_in_use() const {
    std::lock_guard<std::mutex> lock(_mu);
    return _in_use;
}

uint64_t memory_tier::bytes_high_water() const {
    std::lock_guard<std::mutex> lock(_mu);
    return _high_water;
}

uint32_t memory_tier::slots_in_use() const {
    std::lock_guard<std::mutex> lock(_mu);
    return _n_slots - static_cast<uint32_t>(_free.size());
}

}  // namespace moe
