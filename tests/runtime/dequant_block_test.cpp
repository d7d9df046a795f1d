// The block decoders the CUDA kernels run (runtime/cuda/dequant_block.cuh), compiled for the host: for every type
// and every golden block, decoding item by item must write each element of the block exactly once with the bits
// gguf-py computed. This checks the kernels' item -> element mapping and arithmetic without a GPU; the GPU test
// then only has to show that the device compiles them the same way.
#include "runtime/cuda/dequant_block.cuh"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "runtime/dequant.h"
#include "tests/runtime/dequant_fixture.h"

using namespace moe;

namespace {

template <typename D>
void check_decoder(tensor_type t) {
    SCOPED_TRACE(std::string(type_name(t)));
    const auto fx = test::load_dequant_fixture(t);
    const auto& info = type_info(t);
    ASSERT_EQ(int(info.block_elems), D::block_elems);
    ASSERT_EQ(int(info.block_bytes), D::block_bytes);
    ASSERT_EQ(D::items * D::outs, D::block_elems) << "items must cover the block exactly";
    const int64_t n_blocks = fx.n_elems / D::block_elems;
    int64_t bad = 0;
    for (int64_t blk = 0; blk < n_blocks; blk++) {
        std::vector<int> written(D::block_elems, 0);
        for (int item = 0; item < D::items; item++) {
            float v[D::outs];
            int idx[D::outs];
            D::decode(fx.raw.data() + blk * D::block_bytes, item, v, idx);
            for (int k = 0; k < D::outs; k++) {
                ASSERT_GE(idx[k], 0);
                ASSERT_LT(idx[k], D::block_elems);
                written[size_t(idx[k])]++;
                const float want = fx.values[size_t(blk * D::block_elems + idx[k])];
                uint32_t wb, gb;
                std::memcpy(&wb, &want, 4);
                std::memcpy(&gb, &v[k], 4);
                if (wb != gb && bad++ < 5)
                    ADD_FAILURE() << "block " << blk << " item " << item << " element " << idx[k] << ": want " << want
                                  << " got " << v[k];
            }
        }
        for (int e = 0; e < D::block_elems; e++)
            ASSERT_EQ(written[size_t(e)], 1) << "block " << blk << " element " << e;
    }
    EXPECT_EQ(bad, 0);
}

}  // namespace

TEST(dequant_block, every_decoder_matches_gguf_py) {
    const tensor_type types[] = {tensor_type::F32,  tensor_type::F16,    tensor_type::BF16,   tensor_type::Q4_0,
                                 tensor_type::Q4_1, tensor_type::Q5_0,   tensor_type::Q5_1,   tensor_type::Q8_0,
                                 tensor_type::Q2_K, tensor_type::Q3_K,   tensor_type::Q4_K,   tensor_type::Q5_K,
                                 tensor_type::Q6_K, tensor_type::IQ4_NL, tensor_type::IQ4_XS, tensor_type::MXFP4};
    for (tensor_type t : types) {
        const bool found = dq::dispatch(t, [&](auto d) { check_decoder<decltype(d)>(t); });
        EXPECT_TRUE(found) << type_name(t);
    }
    EXPECT_FALSE(dq::dispatch(tensor_type::I32, [](auto) {}));
}

TEST(dequant_block, lookup_tables_unpack_to_the_ggml_values) {
    const int mxfp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
    const int iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    for (uint32_t i = 0; i < 16; i++) {
        EXPECT_EQ(dq::kv_mxfp4(i), mxfp4[i]) << i;
        EXPECT_EQ(dq::kv_iq4nl(i), iq4nl[i]) << i;
    }
}

TEST(dequant_block, fp16_widening_agrees_with_the_cpu_reference) {
    for (uint32_t h = 0; h < 65536; h++) {
        const float a = dq::fp16_to_f32(h), b = fp16_to_f32(uint16_t(h));
        uint32_t ab, bb;
        std::memcpy(&ab, &a, 4);
        std::memcpy(&bb, &b, 4);
        ASSERT_EQ(ab, bb) << std::hex << h;
    }
}
