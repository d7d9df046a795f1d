// The offloader's one set of rules (validate_offload_config), checked by hand against a layout of 2 MoE layers x 4
// experts of 10000 bytes (slots of 12 KiB) with top-2: each refusal has its kind (the C API's status) and names
// the figures; the lru-layer prefetch rule turns prefetch off with a warning rather than failing later.
#include "runtime/offloader.h"

#include <gtest/gtest.h>

#include <string>

#include "prefetch/tiered_loader.h"

namespace moe {
namespace {

constexpr uint64_t k_slot = 12288;

offload_layout layout() {
    offload_layout l;
    l.name = "hand";
    l.n_layers = 2;
    l.n_experts = 4;
    l.top_k = 2;
    l.paths = {std::string(MOE_SOURCE_DIR) + "/tests/fixtures/ref/mixtral-f32.gguf"};  // any file of 80000+ bytes
    for (uint32_t i = 0; i < 8; ++i) l.ranges.push_back({{0, uint64_t(i) * 10000, 10000}});
    return l;
}

config_fault fault_of(const offload_config& c, std::string* what = nullptr) {
    try {
        validate_offload_config(c, layout());
    } catch (const config_error& e) {
        if (what) *what = e.what();
        return e.fault;
    }
    ADD_FAILURE() << "accepted";
    return config_fault::INVALID;
}

TEST(offloader, minimum_slots_per_policy) {
    offload_config c;
    EXPECT_EQ(offload_slot_bytes(10000), k_slot);
    EXPECT_EQ(min_expert_slots(c, layout()), 2u);
    c.policy = "lru-layer";
    EXPECT_EQ(min_expert_slots(c, layout()), 4u);
}

TEST(offloader, refusals_have_their_kind_and_figures) {
    std::string what;
    offload_config c;
    c.expert_budget_bytes = 2 * k_slot - 1;
    EXPECT_EQ(fault_of(c, &what), config_fault::BUDGET);
    EXPECT_NE(what.find("needs at least 24576 bytes"), std::string::npos) << what;
    c.expert_budget_bytes = 3 * k_slot;
    c.policy = "lru-layer";
    EXPECT_EQ(fault_of(c, &what), config_fault::BUDGET);
    EXPECT_NE(what.find("lru-layer"), std::string::npos) << what;
    EXPECT_NE(what.find("needs at least 49152 bytes"), std::string::npos) << what;
    c = {};
    c.expert_budget_bytes = 3 * k_slot;
    c.host_budget_bytes = 3 * k_slot - 1;
    EXPECT_EQ(fault_of(c, &what), config_fault::BUDGET);
    EXPECT_NE(what.find("host tier needs at least 36864 bytes"), std::string::npos) << what;
    c = {};
    c.policy = "fifo";
    EXPECT_EQ(fault_of(c, &what), config_fault::UNKNOWN_NAME);
    c.policy = "belady";
    EXPECT_EQ(fault_of(c), config_fault::UNSUPPORTED);
    c = {};
    c.prefetch.mode = prefetch_mode::SPEC;
    c.prefetch.depth = 0;
    EXPECT_EQ(fault_of(c), config_fault::INVALID);
    c.prefetch.depth = 1;
    c.prefetch.per_layer = 5;
    EXPECT_EQ(fault_of(c), config_fault::INVALID);
    c = {};
    c.streaming.max_in_flight = 0;
    EXPECT_EQ(fault_of(c), config_fault::INVALID);
}

TEST(offloader, accepted_configs_are_completed) {
    offload_config c;
    c.prefetch.mode = prefetch_mode::HISTORY;
    const offload_config v = validate_offload_config(c, layout());
    EXPECT_EQ(v.prefetch.per_layer, 2) << "0 means top-k";
    // lru-layer with 2 slots per layer share: a prefetch beside a demand needs top-k + per_layer = 4.
    c.policy = "lru-layer";
    c.expert_budget_bytes = 4 * k_slot;
    std::vector<std::string> warnings;
    const offload_config off = validate_offload_config(c, layout(), &warnings);
    EXPECT_EQ(off.prefetch.mode, prefetch_mode::NONE);
    ASSERT_EQ(warnings.size(), 1u);
    EXPECT_NE(warnings[0].find("turned off"), std::string::npos) << warnings[0];
    c.expert_budget_bytes = 8 * k_slot;  // every expert: nothing to evict, prefetch stays
    EXPECT_EQ(validate_offload_config(c, layout()).prefetch.mode, prefetch_mode::HISTORY);
}

TEST(offloader, builds_the_stack_it_validated) {
    offload_config c;
    c.expert_budget_bytes = 3 * k_slot;
    c.host_budget_bytes = 5 * k_slot;
    c.prefetch.mode = prefetch_mode::HISTORY;
    offloader o(layout(), c);
    EXPECT_EQ(o.n_slots(), 3u);
    EXPECT_EQ(o.n_host_slots(), 5u);
    EXPECT_TRUE(o.has_host_tier());
    EXPECT_NE(o.host_loader(), nullptr);
    EXPECT_EQ(&o.loader(), static_cast<expert_loader*>(o.host_loader())) << "hints go through the host tier";
    EXPECT_NE(o.prefetch(), nullptr);
    EXPECT_EQ(o.links().size(), 2u);  // file->ram reads, host->ram copies
    EXPECT_EQ(o.tick(), 1u);
    EXPECT_EQ(o.now(), 1u);
}

}  // namespace
}  // namespace moe
