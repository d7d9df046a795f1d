// A memory tier: one budget of bytes carved at start-up into fixed-size slots, each big enough for the
// largest expert, so the token loop never allocates (invariant 5 of docs/invariants.md) and the budget is a hard
// upper bound on what is ever reserved (invariant 1). Kinds: plain RAM, pinned host memory, device memory.
#pragma once

#include <cstdint>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moe {

enum class tier_kind {
    RAM,          // aligned_alloc, 4096-aligned slots so O_DIRECT reads can land in them
    PINNED_HOST,  // cudaHostAlloc with a GPU; else 4096-aligned memory locked with mlock (best effort)
    DEVICE,       // cudaMalloc; only in CUDA builds on a machine with a GPU
};

std::string_view tier_kind_name(tier_kind k);
// "ram", "pinned", "device" (case-insensitive); throws moe::error naming `what` otherwise.
tier_kind parse_tier_kind(std::string_view text, std::string_view what);

struct memory_tier_config {
    tier_kind kind = tier_kind::RAM;
    uint64_t budget_bytes = 0;      // hard cap on the bytes this tier reserves (n_slots * slot_bytes <= budget)
    uint64_t max_expert_bytes = 0;  // the largest expert; the slot size is this rounded up to the alignment
    // Never reserve more slots than this (e.g. the total number of experts, when the budget holds them all).
    uint32_t max_slots = std::numeric_limits<uint32_t>::max();
};

// Slot bookkeeping is internally synchronised (one small mutex), so a tier can be shared; the memory
// itself is not: whoever owns a slot (the expert cache, the loader filling it) serialises access to it.
class memory_tier {
public:
    // Reserves everything now. Throws moe::error when the budget cannot hold one slot, when the kind is not
    // available (DEVICE without a GPU) or when the allocation itself fails.
    explicit memory_tier(const memory_tier_config& cfg);
    ~memory_tier();
    memory_tier(const memory_tier&) = delete;
    memory_tier& operator=(const memory_tier&) = delete;

    tier_kind kind() const { return _kind; }
    uint64_t budget_bytes() const { return _budget; }
    uint64_t slot_bytes() const { return _slot_bytes; }
    uint32_t n_slots() const { return _n_slots; }
    uint64_t reserved_bytes() const { return _slot_bytes * _n_slots; }  // <= budget_bytes()
    // Host kinds: true when the pages are pinned (cudaHostAlloc or a successful mlock). DEVICE: false.
    bool page_locked() const { return _locked; }
    // Address of a slot (a device address for DEVICE). Valid for the tier's lifetime.
    void* slot_data(uint32_t slot) const;

    // Takes a free slot for an object of `bytes` (<= slot_bytes()); nullopt when every slot is taken.
    std::optional<uint32_t> alloc_slot(uint64_t bytes);
    void free_slot(uint32_t slot);

    // Accounting of object bytes held in slots (not slot sizes): now and the maximum ever reached.
    uint64_t bytes_in_use() const;
    uint64_t bytes_high_water() const;
    uint32_t slots_in_use() const;

private:
    void allocate_host(bool want_pinned);
    void allocate_device();

    tier_kind _kind;
    uint64_t _budget = 0;
    uint64_t _slot_bytes = 0;
    uint32_t _n_slots = 0;
    char* _base = nullptr;  // (n_slots, slot_bytes)
    bool _locked = false;
    bool _cuda_host = false;  // _base came from cudaHostAlloc
    bool _mlocked = false;    // _base was mlock()ed

    mutable std::mutex _mu;
    std::vector<uint32_t> _free;       // stack of free slot indices
    std::vector<uint64_t> _slot_used;  // (n_slots) bytes held in each slot, 0 when free
    std::vector<uint8_t> _slot_taken;  // (n_slots) 1 when allocated; catches double frees
    uint64_t _in_use = 0;
    uint64_t _high_water = 0;
};

}  // namespace moe
